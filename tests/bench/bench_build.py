"""Build benchmark: compile + check + test + build + sign for 1k, 10k and 100k tenants,
and ``opa bench`` of the main decision on the 10k-tenant bundle.

End to end is the product's own ``build_bundle`` (load, cross-check, compile,
``opa check --strict``, ``opa test``, ``opa build --signing-key``), timed
with ``perf_counter`` around the call, median of several runs. The phases are
the same functions called one by one on the same sources (one more pass);
their sum differs from the end-to-end figure by what lies between them
(git, staging) and by noise.

The decision benchmark is ``opa bench --e2e``: OPA starts its server with a
config file whose ``labels.region`` is an EU region, as an enforcer's config
has (the in-process ``opa bench`` gives the policy no runtime config, so
residency would refuse every jurisdiction-bound tenant), loads the signed
10k archive (``opa bench`` has no verification flags and does not verify
signatures; loading speed is not measured here) and a state bundle with a
spend entry for every tenant, then evaluates the decision over and over with
one realistic input. The percentiles are OPA's own per-evaluation timer
(``timer_rego_query_eval_ns``, kept in a uniform 1028-sample reservoir over
all evaluations); the query is the one the ext_authz plugin evaluates.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from nexus_contract.canonical import canonical_json
from nexus_contract.wire import POLICY_ROOTS
from nexus_control.access.signing_keys import approval_jwks, load_approval_key, load_signing_key
from nexus_control.authoring.archive import write_archive
from nexus_control.authoring.bundle import (
    DATA_PATH,
    _run_tests,
    build_bundle,
    policy_modules,
    revision_of,
)
from nexus_control.authoring.capabilities import capabilities_file
from nexus_control.authoring.compiler import compile_data
from nexus_control.authoring.loader import load_bundle
from nexus_control.authoring.policyset import resolve
from nexus_control.authoring.signatures import sign_bundle_files
from nexus_dataplane.opa import OPA_GOGC
from nexus_dataplane.request import GatewayRequest
from tests.bench.common import (
    Context,
    Deadline,
    Figure,
    figure,
    judged,
    median,
    report,
    timed,
)
from tests.bench.generate import Credential, GeneratedBundle

NAME = "build"
TITLE = "Bundle build (compile + check + test + build + sign) and decision cost"

FULL_SIZES = (1_000, 10_000, 100_000)
QUICK_SIZES = (200, 1_000, 2_000)
REPEATS = {200: 1, 1_000: 3, 2_000: 1, 10_000: 3, 100_000: 1}
TIME_BUDGET_S = 900.0
"""Sizes left when the budget is spent are skipped (reported as such)."""
TARGET_10K_S = 10.0
LINEAR_TOLERANCE = 1.2
"""Growth counts as linear when time grows by at most 1.2x the tenant ratio."""
DECISION_P99_TARGET_MS = 0.3
BENCH_COUNT_FULL = 3
BENCH_COUNT_QUICK = 1
DECISION = "data.nexus.envoy.authz.decision"
DECISION_ALLOCS_TARGET = 500
# A constant read of the bundle: what opa bench --e2e costs with no policy
# evaluated (HTTP, the JSON input and its conversion, the result).
FLOOR_QUERY = "data.nexus.config.bundle"
REGION = "eu-west-1"
OPA_BENCH_TIMEOUT_S = 300.0


def run(ctx: Context) -> list[Figure]:
    figures: list[Figure] = []
    deadline = Deadline(TIME_BUDGET_S)
    sizes = QUICK_SIZES if ctx.quick else FULL_SIZES
    end_to_end: dict[int, float] = {}
    for size in sizes:
        if deadline.expired:
            figures.append(
                figure(NAME, f"{size:,} tenants", None, "s", note="skipped: time budget")
            )
            continue
        seconds, size_figures = _measure_size(ctx, size, 1 if ctx.quick else REPEATS.get(size, 1))
        end_to_end[size] = seconds
        figures += size_figures
    figures += _growth(end_to_end, sizes)
    main = ctx.main_tenants
    figures += decision_figures(ctx, ctx.generated(main), ctx.built(main).path)
    report(ctx.console, TITLE, figures)
    return figures


def _measure_size(ctx: Context, size: int, repeats: int) -> tuple[float, list[Figure]]:
    label = f"{size:,} tenants"
    with timed() as gen_time:
        source = ctx.generated(size)
    runs: list[float] = []
    built = None
    for _ in range(repeats):
        with timed() as t:
            built = build_bundle(source.path, ctx.opa, ctx.build_options())
        runs.append(t.elapsed)
    assert built is not None
    ctx.remember_built(size, 0, built)
    seconds = median(runs)
    phases = _phases(ctx, source)
    spread = f"runs: {', '.join(f'{r:.2f}' for r in runs)} s" if len(runs) > 1 else "1 run"
    figures: list[Figure] = [
        figure(
            NAME,
            f"{label}: sources",
            source.bytes / 1e6,
            "MB",
            note=(
                f"{source.files} files, {source.roles:,} roles, {source.bindings:,} bindings, "
                f"{source.api_keys:,} API keys; generated in {gen_time.elapsed:.1f} s"
            ),
        ),
        figure(
            NAME,
            f"{label}: end to end",
            seconds,
            "s",
            target=("<", TARGET_10K_S) if size == 10_000 else None,
            note=f"build_bundle(), median; {spread}; archive {built.size / 1e6:.1f} MB, "
            f"{built.tests_run} Rego tests",
        ),
        figure(NAME, f"{label}: per 1k tenants", seconds / (size / 1000), "s/1k tenants"),
    ]
    total = sum(phases.values())
    for phase, elapsed in phases.items():
        figures.append(
            figure(
                NAME,
                f"{label}: {phase}",
                elapsed,
                "s",
                note=f"{elapsed / total:.0%} of the phases" if total else "",
            )
        )
    return seconds, figures


def _phases(ctx: Context, source: GeneratedBundle) -> dict[str, float]:
    """Each step of build_bundle, timed on its own (the product's functions, in its order)."""
    phases: dict[str, float] = {}
    with timed() as t:
        sources = load_bundle(source.path)
    phases["load (YAML + schema)"] = t.elapsed
    with timed() as t:
        policy = resolve(sources)
    phases["cross-check (resolve)"] = t.elapsed
    with timed() as t:
        jwks = approval_jwks([load_approval_key(ctx.keys.approval).public_key()])
        data = compile_data(policy, jwks)
        files = policy_modules(policy.policy_dir)
        data_bytes = canonical_json(data)
        files[DATA_PATH] = data_bytes
        revision = revision_of(files)
    phases["compile + serialise"] = t.elapsed
    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        stage = Path(tmp) / "bundle"
        for rel, content in files.items():
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            (stage / rel).write_bytes(content)
        manifest = {"revision": revision, "roots": list(POLICY_ROOTS), "rego_version": 1}
        (stage / ".manifest").write_bytes(canonical_json(manifest))
        with timed() as t:
            ctx.opa.check(
                [stage], strict=True, bundle=True, capabilities=capabilities_file(ctx.opa)
            )
        phases["opa check --strict"] = t.elapsed
        with timed() as t:
            _run_tests(ctx.opa, policy, sources.root, data_bytes, Path(tmp))
        phases["opa test"] = t.elapsed
        with timed() as t:
            files[".manifest"] = canonical_json(manifest)
            files[".signatures.json"] = sign_bundle_files(
                files, load_signing_key(ctx.keys.signing), "bench"
            )
            write_archive(files)
        phases["sign (.signatures.json) + archive"] = t.elapsed
    return phases


def _growth(end_to_end: dict[int, float], sizes: tuple[int, ...]) -> list[Figure]:
    measured = [s for s in sizes if s in end_to_end]
    if len(measured) < 2:
        return []
    small, large = measured[-2], measured[-1]
    factor = large / small
    ratio = end_to_end[large] / end_to_end[small]
    bound = factor * LINEAR_TOLERANCE
    return [
        judged(
            NAME,
            f"growth {large // 1000:,}k / {small // 1000:,}k tenants"
            if small >= 1000
            else f"growth {large:,} / {small:,} tenants",
            ratio,
            "x",
            f"<= {bound:.1f}x (linear: {factor:.0f}x)",
            ratio <= bound,
            note="end-to-end time ratio; fixed costs (opa test, process starts) "
            "make small sizes look sub-linear",
        )
    ]


# -- the decision ----------------------------------------------------------------


@dataclass(frozen=True)
class DecisionCase:
    name: str
    request: GatewayRequest
    allowed: bool


def decision_cases(bundle: GeneratedBundle) -> list[DecisionCase]:
    """A realistic allowed chat request (API key of an EU tenant in the bundle) and a refusal."""
    allowed = _pick_allowed(bundle)
    other = next(c for c in bundle.credentials if c.tenant != allowed.tenant)
    body = {"messages": [{"role": "user", "content": "Summarise the Q3 support tickets."}]}
    model = "chat-default" if allowed.plan == "enterprise" else "gpt-4o"
    return [
        DecisionCase(
            "allowed chat (API key, rollout alias)",
            GatewayRequest(
                "POST",
                "/v1/chat/completions",
                {
                    "authorization": f"Bearer {allowed.plain}",
                    "x-nexus-tenant": allowed.tenant,
                    "x-nexus-model": model,
                    "x-nexus-feature": "support-chat",
                    "x-nexus-prompt": "support-agent",
                },
                body,
            ),
            True,
        ),
        DecisionCase(
            "denied chat (key of another tenant)",
            GatewayRequest(
                "POST",
                "/v1/chat/completions",
                {
                    "authorization": f"Bearer {allowed.plain}",
                    "x-nexus-tenant": other.tenant,
                    "x-nexus-model": "gpt-4o",
                },
                body,
            ),
            False,
        ),
    ]


def _pick_allowed(bundle: GeneratedBundle) -> Credential:
    for plans, jurisdictions in (
        (("enterprise",), ("eu",)),
        (("team", "enterprise"), ("eu",)),
        (("team", "enterprise"), ("eu", None)),
    ):
        found = bundle.pick(plans=plans, jurisdictions=jurisdictions, on_hard_cap=("refuse",))
        if found:
            return found[len(found) // 2]
    raise RuntimeError("the generated bundle has no EU team or enterprise tenant")


def write_state_bundle(directory: Path, bundle: GeneratedBundle) -> Path:
    """A state bundle (root nexus_state) with a spend entry for every tenant, below soft caps."""
    data_dir = directory / "nexus_state"
    data_dir.mkdir(parents=True, exist_ok=True)
    spend = {
        f"t{n:06d}": {"ratio": round((n % 60) / 100, 2), "models": {}, "features": {}}
        for n in range(1, bundle.tenants + 1)
    }
    document = {"period": "2026-11", "spend": spend, "disabled": {}, "approvals": {"used": {}}}
    (data_dir / "data.json").write_bytes(orjson.dumps(document))
    (directory / ".manifest").write_bytes(
        orjson.dumps({"revision": "bench-state", "roots": ["nexus_state"]})
    )
    return directory


def decision_figures(ctx: Context, bundle: GeneratedBundle, archive: Path) -> list[Figure]:
    figures: list[Figure] = []
    work = ctx.workdir / "opa-bench"
    work.mkdir(parents=True, exist_ok=True)
    state = write_state_bundle(work / "state", bundle)
    config = work / "config.yaml"
    config.write_text(f"labels:\n  region: {REGION}\n  enforcer: bench\n")
    count = BENCH_COUNT_QUICK if ctx.quick else BENCH_COUNT_FULL
    label = f"{bundle.tenants // 1000}k" if bundle.tenants >= 1000 else str(bundle.tenants)
    for case in decision_cases(bundle):
        input_path = work / f"input-{'allow' if case.allowed else 'deny'}.json"
        input_path.write_bytes(orjson.dumps(case.request.to_opa_input()))
        decided = _decide_once(ctx, archive, state, input_path)
        if decided != case.allowed:
            figures.append(
                judged(
                    NAME,
                    f"decision {case.name}",
                    None,
                    "ms",
                    "as expected",
                    False,
                    note=f"OPA said allowed={decided}; expected {case.allowed}",
                )
            )
            continue
        runs = _opa_bench(ctx, archive, state, config, input_path, count)
        p50 = median([r["median"] for r in runs])
        p90 = median([r["90%"] for r in runs])
        p99s = [r["99%"] for r in runs]
        p99 = median(p99s)
        p999 = median([r["99.9%"] for r in runs])
        handler_p99 = median([r["handler_99%"] for r in runs])
        evaluations = sum(int(r["count"]) for r in runs)
        allocs = median([r["allocs_per_op"] for r in runs])
        figures += [
            figure(
                NAME,
                f"{label} decision, {case.name}: p50",
                p50 / 1e6,
                "ms",
                note=f"opa bench --e2e, {evaluations:,} evaluations in {len(runs)} runs "
                f"(median of runs); p90 {p90 / 1e6:.3f} ms",
            ),
            figure(
                NAME,
                f"{label} decision, {case.name}: p99",
                p99 / 1e6,
                "ms",
                target=("<", DECISION_P99_TARGET_MS),
                note=f"eval timer; runs: {', '.join(f'{v / 1e6:.3f}' for v in p99s)} ms; "
                f"p99.9 {p999 / 1e6:.3f} ms; {allocs:,.0f} allocs/op",
            ),
            figure(
                NAME,
                f"{label} decision, {case.name}: allocations per evaluation",
                round(allocs),
                "allocs",
                target=("<", DECISION_ALLOCS_TARGET),
                note=_allocs_note(ctx, archive, state, config, input_path) if case.allowed else "",
            ),
            figure(
                NAME,
                f"{label} decision, {case.name}: p99 incl. REST handler",
                handler_p99 / 1e6,
                "ms",
                note="OPA's server handler timer: HTTP + JSON input + eval",
            ),
        ]
    return figures


def _allocs_note(ctx: Context, archive: Path, state: Path, config: Path, input_path: Path) -> str:
    """The share of the policy: its evaluation alone, and the --e2e floor of a constant query."""
    alone = _opa_bench(ctx, archive, state, config, input_path, 1, e2e=False)[0]
    floor = _opa_bench(ctx, archive, state, config, input_path, 1, query=FLOOR_QUERY)[0]
    return (
        f"opa bench --e2e; the evaluation alone (no --e2e) {alone['allocs_per_op']:,.0f}, "
        f"the --e2e floor ({FLOOR_QUERY}, same input) {floor['allocs_per_op']:,.0f}"
    )


def _decide_once(ctx: Context, archive: Path, state: Path, input_path: Path) -> bool:
    """The decision's ``allowed`` for ``input_path``, from ``opa eval`` (region mocked)."""
    query = f'{DECISION} with opa.runtime as {{"config": {{"labels": {{"region": "{REGION}"}}}}}}'
    out = ctx.opa.run(
        "eval",
        "--format",
        "json",
        "-b",
        str(archive),
        "-b",
        str(state),
        "-i",
        str(input_path),
        query,
    )
    if out.returncode != 0:
        raise RuntimeError(f"opa eval failed: {out.stderr or out.stdout}")
    value = json.loads(out.stdout)["result"][0]["expressions"][0]["value"]
    return bool(value["allowed"])


def _opa_bench(
    ctx: Context,
    archive: Path,
    state: Path,
    config: Path,
    input_path: Path,
    count: int,
    *,
    e2e: bool = True,
    query: str = DECISION,
) -> list[dict[str, float]]:
    argv = [
        str(ctx.opa.binary),
        "bench",
        *(["--e2e"] if e2e else []),
        "--config-file",
        str(config),
        "--bundle",
        str(archive),
        "--bundle",
        str(state),
        "--input",
        str(input_path),
        "--format",
        "json",
        "--count",
        str(count),
        query,
    ]
    # The GC target enforcers run with (nexus_dataplane.envoy.OPA_GOGC).
    env = {**os.environ, "GOGC": OPA_GOGC}
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=OPA_BENCH_TIMEOUT_S, check=False, env=env
    )
    docs = _json_documents(out.stdout)
    if out.returncode != 0 or not docs or any("errors" in d for d in docs):
        raise RuntimeError(f"opa bench failed: {(out.stdout + out.stderr)[-1000:]}")
    results = []
    for doc in docs:
        extra = doc["Extra"]
        prefix = "histogram_timer_rego_query_eval_ns_"
        handler = "histogram_timer_server_handler_ns_"
        results.append(
            {
                "median": float(extra[prefix + "median"]),
                "90%": float(extra[prefix + "90%"]),
                "99%": float(extra[prefix + "99%"]),
                "99.9%": float(extra[prefix + "99.9%"]),
                "count": float(extra[prefix + "count"]),
                "handler_99%": float(extra.get(handler + "99%", float("nan"))),
                "allocs_per_op": doc["MemAllocs"] / max(1, doc["N"]),
            }
        )
    return results


def _json_documents(text: str) -> list[dict[str, Any]]:
    """``opa bench --count N --format json`` prints N JSON documents one after another."""
    decoder = json.JSONDecoder()
    docs: list[dict[str, Any]] = []
    index = 0
    while True:
        rest = text[index:]
        stripped = rest.lstrip()
        if not stripped:
            return docs
        doc, end = decoder.raw_decode(stripped)
        docs.append(doc)
        index += len(rest) - len(stripped) + end
