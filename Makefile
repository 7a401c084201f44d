# The two commands of the README, plus the benchmarks. Each installs what it
# needs first (scripts/bootstrap is idempotent and caches outside the clone).

.PHONY: demo test bench bootstrap sbom

demo:
	@scripts/bootstrap
	@.venv/bin/nexus-policy demo

test:
	@scripts/test

# make bench BENCH_ARGS="--quick" (or --only NAME, --json FILE, --postgres)
bench:
	@NEXUS_BOOTSTRAP_BENCH=1 scripts/bootstrap
	@.venv/bin/python -m tests.bench $(BENCH_ARGS)

bootstrap:
	@scripts/bootstrap

# CycloneDX SBOMs of the Python distribution and the OPA build (make sbom SBOM_DIR=...)
sbom:
	@scripts/bootstrap
	@scripts/supply-chain sbom $(SBOM_DIR)
