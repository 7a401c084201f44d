"""Replay throughput: decisions replayed per second, both sides evaluated by the real OPA.

``python -m tests.bench.bench_replay [N]`` (default 100,000). The gateway
bundle is built and signed with throwaway keys; two OPA servers load it with
signature verification (baseline and candidate, as a replay against a
recorded revision runs them), and N recorded-looking inputs (API-key
credentials by the plugin's hash, fingerprinted tokens, a mix of chat calls
allowed and refused, tool calls, anonymous calls, each with its recorded
clock and region) go through `OpaEvaluator.evaluate` on both sides and
`build_report`. Reading the records from the audit log (decrypting payloads)
is not in this figure. Target: >= 5,000 decisions/s on 2 cores.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nexus_control.access.signing_keys import init_keys, load_signing_key, public_pem
from nexus_control.authoring.bundle import BuildOptions, build_bundle
from nexus_control.authoring.opa import Opa
from nexus_control.replay.evaluator import OpaEvaluator
from nexus_control.replay.records import ReplayRecord
from nexus_control.replay.report import ReplayOutcome, ReplayScope, build_report, compare
from nexus_dataplane.request import GatewayRequest
from nexus_runtime.toolchain import find_opa

REPO = Path(__file__).resolve().parents[2]
TARGET_PER_S = 5_000
KEYS = {
    "acme": "489b67a93da14f8282aa1b9c3f17a75347b9d3482480eb341350ddbd3deee173",
    "globex": "320f9df7c79bda5156c5e2d152ccc67d62cdd5ca1b9f032a70b7a60913946e7d",
}


def _input(n: int) -> dict[str, Any]:
    tenant = ("acme", "globex")[n % 2]
    kind = n % 5
    headers = {"x-nexus-tenant": tenant, "x-nexus-model": ("gpt-4o", "chat-fast")[n % 3 == 0]}
    if kind != 4:
        headers["authorization"] = f"Bearer sha256:{KEYS[tenant][:16]}"
    if kind == 3:
        request = GatewayRequest("POST", "/v1/tools/web-search:invoke", headers,
                                 {"arguments": {"query": f"q{n}"}})  # fmt: skip
    else:
        request = GatewayRequest("POST", "/v1/chat/completions", headers, None)
    document = request.to_opa_input()
    if kind != 4:
        document["nexus"] = {"credential_sha256": KEYS[tenant]}
    return document


def main(argv: list[str]) -> int:
    count = int(argv[1]) if len(argv) > 1 else 100_000
    opa = Opa(find_opa(None))
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as scratch:
        work = Path(scratch)
        keys = init_keys(work / "keys")
        source = work / "gateway"
        shutil.copytree(REPO / "bundles" / "gateway", source)
        manifest = source / "bundle.yaml"
        manifest.write_text(manifest.read_text().replace("../../rego", str(REPO / "rego")))
        built = build_bundle(source, opa, BuildOptions(keys.signing, "bench-key",
                             keys.approval_jwks, work / "dist", run_tests=False))  # fmt: skip
        archive = built.path.read_bytes()
        pem = public_pem(load_signing_key(keys.signing))
        now = datetime.now(UTC)
        items = [(_input(n), 1_700_000_000_000_000_000 + n, "eu-west-1") for n in range(count)]
        sides = [OpaEvaluator(opa.binary, archive, public_pem=pem, kid="bench-key",
                              algorithm="RS256") for _ in range(2)]  # fmt: skip
        for side in sides:
            side.start()
        try:
            started = time.perf_counter()
            with ThreadPoolExecutor(2) as pool:
                before_f = pool.submit(sides[0].evaluate, items)
                after_f = pool.submit(sides[1].evaluate, items)
                before, after = before_f.result(), after_f.result()
            outcomes = []
            for n, (b, a) in enumerate(zip(before, after, strict=True)):
                record = ReplayRecord(n, f"d-{n}", now, "acme", "eu-west-1", "/v1/chat/completions",
                                      None, "r", True, 200, None, None, 0, None)  # fmt: skip
                change = compare(b.result or {}, a.result or {})
                outcomes.append(ReplayOutcome(record, change, b.result, a.result,
                                              before_ns=b.eval_ns, after_ns=a.eval_ns))  # fmt: skip
            report = build_report(ReplayScope("c", None, "s", "u"), outcomes, wall_s=1.0)
            wall = time.perf_counter() - started
        finally:
            for side in sides:
                side.stop()
    rate = count / wall
    allowed = sum(1 for e in before if e.result and e.result.get("allowed"))
    errors = sum(1 for e in before + after if e.result is None)
    print(f"replayed {count} decisions (both sides) in {wall:.2f} s: {rate:,.0f} decisions/s "
          f"(target >= {TARGET_PER_S:,}); {allowed} allowed, {errors} errors; "
          f"eval per decision p50 {report.timing.baseline_p50_ns} ns, "
          f"p99 {report.timing.baseline_p99_ns} ns")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
