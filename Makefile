# The two commands of the README, plus the benchmarks. Each installs what it
# needs first (scripts/bootstrap is idempotent and caches outside the clone).

.PHONY: demo test bench bootstrap

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
