"""Decisions recorded / decisions made, through Envoy at constant offered rates (issue 10).

Set-up: the control plane on a thread with the co-located audit service (as
in the e2e harness: ``create_app(plane, audit)``; the audit log on SQLite, or
on PostgreSQL with ``--postgres``) publishes the 10k-tenant bundle (1k in
quick mode). One enforcer, rendered by the data plane's ``enforcer_spec`` /
``opa_config`` / ``envoy_config`` with ``audit_url`` set to the control
plane, as the harness does when audit is on: OPA's ``decision_logs`` go to
the co-located intake with the reporting delays, event buffer and upload
limit the product renders. Two additions, for measuring only: OPA's status
plugin gets ``prometheus: true`` (without it OPA's ``/metrics`` has no
decision-log counters at all), and Envoy writes an access log line per
request with its status and the decision id it returned.

Traffic: ``POST /v1/chat/completions`` open loop at each of `RATES` in turn (60 s each)
(the Go generator of ``loadgen``), from five generator processes: four
tenants whose requests are allowed and one sending a wrong API key (denied
by OPA: a decision too).

Decisions made: the decision ids Envoy returned (``x-nexus-decision-id``
response header, or the ext_authz decision id for denials Envoy answers
itself), from its access log; cross-checked with the generator's count of
answers that came from a decision. Decisions recorded: the leaves appended
to the audit log since the start whose ``decision_id`` is among them. After
the load the log is watched until it stops growing (bounded), then the ratio
is taken; missing and unexpected ids are counted. Also reported: OPA's
decision-log counters from its ``/metrics`` (dropped events by cause,
chunks uploaded and failed) and what is left in its buffer, uploads OPA
logged as failed (a refusal by the intake shows there with its HTTP status),
the intake's own view (``AuditLog.ingest_upload`` is wrapped to count
accepted and duplicate events and each refusal with its reason, then return
or raise what it did), the intake throughput seen (tree growth per second),
the time to drain after the load, and CPU per request of every process.

Leaves no client received: past capacity the enforcer sheds Checks, and a Check Envoy gave
up on (its ext_authz timeout) is still logged, as is its duty; such a leaf must carry the
shed reason that says no answer reached the client (``SHED_UNANSWERED``), so the log never
counts it as a decision made. A decision the plugin answered in time by its own clock that
still missed Envoy's timeout gets a delivery receipt leaf instead (marked ``receipt``).
Every leaf whose id no client got is classified by that mark.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import select

from nexus_audit.intake import IntakeError, Uploader
from nexus_audit.service import AppendResult, AuditLog
from nexus_audit.tables import Leaf
from nexus_contract.wire import DECISION_ID_HEADER, SHED_UNANSWERED
from nexus_control.authoring.bundle import BuiltBundle
from nexus_dataplane.enforcer import enforcer_spec
from nexus_dataplane.envoy import EnvoyProxy
from nexus_dataplane.envoy import envoy_config as render_envoy_config
from nexus_dataplane.opa import OpaServer, opa_config
from nexus_dataplane.process import ManagedProcess
from nexus_dataplane.upstream import Upstream
from nexus_runtime.toolchain import find_envoy
from tests.bench.common import (
    Context,
    Deadline,
    Figure,
    children_cpu_seconds,
    cpu_seconds,
    figure,
    judged,
    own_cpu_seconds,
    report,
)
from tests.bench.generate import GeneratedBundle
from tests.bench.loadgen import LoadResult, constant_rate
from tests.bench.plane import BenchPlane, bench_database, bench_upstream
from tests.bench.upstream import FastUpstream

RECEIPT_MARK = "receipt"
"""The mark of a decision whose delivery receipt says the client did not get it."""
CORRECTED_MARK = "corrected"
"""The mark of a shed decision whose receipt says Envoy applied the refusal after all."""
UNANSWERED_MARKS = SHED_UNANSWERED | {RECEIPT_MARK}
NAME = "audit_ratio"
TITLE = "Decisions recorded / decisions made, through Envoy at a constant rate"
DURABLE_BUFFERED = "nexus_decision_log_buffered_events"
"""The durable decision log's events on the enforcer's disk, not yet acknowledged."""

PATH = "/v1/chat/completions"
REQUEST_BODY = b'{"messages":[{"role":"user","content":"Summarise the Q3 support tickets."}]}'
RATES, QUICK_RATES = (300, 1_000, 3_000), (1_000,)
"""Offered rates, one measurement each on the same enforcer: below, at about 3x and at about
10x what one enforcer answers on the 2-CPU test machine (~300/s with the 10k-tenant bundle)."""
DURATION_S, QUICK_DURATION_S = 60.0, 10.0
ALLOWED_CLIENTS = 4
DENIED_CLIENTS = 1
QUIET_S = 6.0
"""The log counts as complete when it has not grown for this long (3x OPA's max delay)."""
DRAIN_TIMEOUT_S = 180.0
BASELINE_TIMEOUT_S = 30.0
ACCESS_LOG_TIMEOUT_S = 20.0
ACCESS_LOG_FLUSH_MS = 500
SAMPLE_S = 1.0
OPA_START_TIMEOUT_S = 180.0
ACCESS_LOG_FORMAT = (
    "%RESPONSE_CODE% %RESP(X-NEXUS-DECISION-ID)% "
    "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:decision_id)%\n"
)
FILE_ACCESS_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
UPLOAD_FAILED = re.compile(r"log upload failed[^\"]*", re.IGNORECASE)
EVENT_PREFIX = re.compile(r"event \d+ \(decision [^)]*\): ")


@dataclass
class Enforcer:
    opa: OpaServer
    envoy: EnvoyProxy
    url: str
    access_log: Path
    processes: dict[str, ManagedProcess]


@dataclass
class Growth:
    """The audit tree size and OPA's buffer, sampled while the load runs."""

    sizes: list[tuple[float, int]] = field(default_factory=list)
    buffer_max: float = 0.0


@dataclass
class Stack:
    """The measured set-up: the plane with its audit log, one enforcer, the load's clients."""

    plane: BenchPlane
    audit: AuditLog
    enforcer: Enforcer
    clients: list[dict[str, str]]
    probes: int
    generated: GeneratedBundle
    workdir: Path


@contextlib.contextmanager
def measured_stack(ctx: Context, name: str) -> Iterator[Stack]:
    """The plane, its upstream and one enforcer, started for benchmark ``name``; stopped after."""
    generated = ctx.generated(ctx.main_tenants)
    workdir = ctx.workdir / name
    started: list[ManagedProcess] = []
    with _plane(ctx, workdir, ctx.built(ctx.main_tenants)) as plane:
        try:
            upstream = bench_upstream(ctx, plane, workdir, started)
            enforcer = _start_enforcer(plane, workdir, upstream, started)
            assert plane.audit is not None
            clients, probes = _clients(generated, enforcer.url)
            yield Stack(plane, plane.audit, enforcer, clients, probes, generated, workdir)
        finally:
            for proc in reversed(started):
                proc.stop()


def run(ctx: Context) -> list[Figure]:
    figures: list[Figure] = []
    with measured_stack(ctx, NAME) as stack:
        tally = IntakeTally(stack.audit)
        for rate in QUICK_RATES if ctx.quick else RATES:
            ctx.console.print(f"offered {rate:,} rps")
            figures += _measure(
                ctx, stack.plane, stack.enforcer, stack.clients, stack.probes, tally,
                stack.workdir, stack.generated, rate,
            )  # fmt: skip
    report(ctx.console, TITLE, figures)
    return figures


@contextlib.contextmanager
def _plane(ctx: Context, workdir: Path, first: BuiltBundle) -> Iterator[BenchPlane]:
    """The control plane with its co-located audit log (both on PostgreSQL with --postgres)."""
    workdir.mkdir(parents=True, exist_ok=True)
    with bench_database(ctx, workdir) as postgres_url:
        plane = BenchPlane(
            workdir=workdir,
            keys=ctx.keys,
            opa=ctx.opa,
            database_url=postgres_url or f"sqlite:///{workdir / 'control.db'}",
            plain={},
            enforcers=0,
            audit_database_url=postgres_url,
            first=first,
        )
        try:
            plane.start()
            yield plane
        finally:
            plane.stop()


def _start_enforcer(
    plane: BenchPlane, workdir: Path, upstream: Upstream, started: list[ManagedProcess]
) -> Enforcer:
    """OPA + Envoy as the data plane renders them, decision logs to the co-located intake."""
    options = dataclasses.replace(
        plane.stack_options(workdir, with_envoy=True), audit_url=plane.url
    )
    spec = enforcer_spec(options, f"{plane.region}-audit", upstream.port)
    config = opa_config(spec)
    if "decision_logs" not in config:
        raise RuntimeError("the rendered OPA config has no decision_logs section")
    # Measuring only: export the decision-log counters on OPA's /metrics.
    config["status"] = {**config["status"], "prometheus": True}
    opa = OpaServer(options.opa_bin, workdir / spec.enforcer_id, config=config, port=spec.opa_port)
    started.append(opa)
    opa.start_and_wait(bundles=True, timeout_s=OPA_START_TIMEOUT_S)
    access_log = (workdir / spec.enforcer_id / "access.log").resolve()
    bootstrap = render_envoy_config(spec)
    _add_access_log(bootstrap, access_log)
    envoy = EnvoyProxy(
        find_envoy(), workdir / spec.enforcer_id, bootstrap, admin_port=spec.envoy_admin_port
    )
    envoy.argv += ["--file-flush-interval-msec", str(ACCESS_LOG_FLUSH_MS)]
    started.append(envoy)
    envoy.start_and_wait()
    processes: dict[str, ManagedProcess] = {"opa": opa, "envoy": envoy}
    if isinstance(upstream, FastUpstream):
        processes["upstream"] = upstream
    return Enforcer(opa, envoy, f"http://127.0.0.1:{spec.envoy_port}", access_log, processes)


def _add_access_log(bootstrap: dict[str, Any], path: Path) -> None:
    for listener in bootstrap["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for flt in chain["filters"]:
                # Beside the data plane's own loggers (the delivery log to OPA among them).
                flt["typed_config"].setdefault("access_log", []).append(
                    {
                        "name": "envoy.access_loggers.file",
                        "typed_config": {
                            "@type": FILE_ACCESS_LOG,
                            "path": str(path),
                            "log_format": {
                                "text_format_source": {"inline_string": ACCESS_LOG_FORMAT}
                            },
                        },
                    }
                )


def _headers(tenant: str, key: str, plan: str) -> dict[str, str]:
    return {
        "authorization": f"Bearer {key}",
        "x-nexus-tenant": tenant,
        "x-nexus-model": "chat-default" if plan == "enterprise" else "gpt-4o",
        "content-type": "application/json",
    }


def _clients(generated: GeneratedBundle, url: str) -> tuple[list[dict[str, str]], int]:
    """Header sets (tenants whose requests are allowed, one with a wrong key) and probes sent."""
    allowed: list[dict[str, str]] = []
    denied: list[dict[str, str]] = []
    probes = 0
    for cred in generated.pick(jurisdictions=("eu", None), on_hard_cap=("refuse",)):
        if len(allowed) < ALLOWED_CLIENTS:
            headers = _headers(cred.tenant, cred.plain, cred.plan)
            response = httpx.post(url + PATH, headers=headers, content=REQUEST_BODY, timeout=10)
            probes += 1
            if response.status_code == httpx.codes.OK and DECISION_ID_HEADER in response.headers:
                allowed.append(headers)
        elif len(denied) < DENIED_CLIENTS:
            headers = _headers(cred.tenant, "nx_" + "0" * 40, cred.plan)
            response = httpx.post(url + PATH, headers=headers, content=REQUEST_BODY, timeout=10)
            probes += 1
            if 400 <= response.status_code < 500:
                denied.append(headers)
        else:
            return allowed + denied, probes
    raise RuntimeError(f"found {len(allowed)} allowed and {len(denied)} denied clients only")


class IntakeTally:
    """What the intake did with OPA's uploads, seen from the server side.

    ``AuditLog.ingest_upload`` (what the decision-log route calls) is wrapped:
    the wrapper counts accepted and duplicate events, and every refusal with
    its reason, then returns or raises exactly what the original did.
    """

    def __init__(self, audit: AuditLog) -> None:
        self.lock = threading.Lock()
        self.uploads = 0
        self.accepted = 0
        self.duplicates = 0
        self.refused: dict[str, int] = {}
        original = audit.ingest_upload

        def ingest_upload(
            body: bytes, content_encoding: str | None, uploader: Uploader | None = None
        ) -> AppendResult:
            try:
                result = original(body, content_encoding, uploader)
            except IntakeError as exc:
                reason = f"{exc.code}: {EVENT_PREFIX.sub('', exc.message)}"[:120]
                with self.lock:
                    self.refused[reason] = self.refused.get(reason, 0) + 1
                raise
            with self.lock:
                self.uploads += 1
                self.accepted += result.accepted
                self.duplicates += result.duplicates
            return result

        audit.ingest_upload = ingest_upload  # type: ignore[method-assign]

    def snapshot(self) -> tuple[int, int, int, dict[str, int]]:
        with self.lock:
            return self.uploads, self.accepted, self.duplicates, dict(self.refused)


def _measure(
    ctx: Context,
    plane: BenchPlane,
    enforcer: Enforcer,
    clients: list[dict[str, str]],
    probes: int,
    tally: IntakeTally,
    workdir: Path,
    generated: GeneratedBundle,
    rate: int,
) -> list[Figure]:
    audit = plane.audit
    assert audit is not None
    duration = QUICK_DURATION_S if ctx.quick else DURATION_S
    # The probes' decisions are uploaded within OPA's max delay, and Envoy writes their
    # access-log lines within its flush interval: wait for both before the baseline.
    _quiet(audit.size, QUIET_S, BASELINE_TIMEOUT_S)
    _access_lines(enforcer.access_log, 0, probes)
    base_size = audit.size()
    access_offset = enforcer.access_log.stat().st_size
    opa_log_offset = enforcer.opa.log_path.stat().st_size
    metrics_before = _opa_metrics(enforcer.opa.url)
    intake_before = tally.snapshot()
    cpu_before = {name: cpu_seconds(p.pid) for name, p in enforcer.processes.items()}
    generator_before = children_cpu_seconds()
    self_before = own_cpu_seconds() - generator_before

    growth = Growth()
    stop = threading.Event()
    load_start = time.monotonic()
    sampler = threading.Thread(
        target=_sample,
        args=(audit.size, enforcer.opa.url, growth, stop, load_start),
        name="audit-growth",
        daemon=True,
    )
    sampler.start()
    result = constant_rate(
        enforcer.url + PATH,
        clients,
        rate=rate,
        window_s=duration,
        warmup_s=0.0,
        workdir=workdir / f"load-{rate}",
        body=REQUEST_BODY,
    )
    load_s = time.monotonic() - load_start
    cpu = {name: cpu_seconds(p.pid) - cpu_before[name] for name, p in enforcer.processes.items()}
    cpu["generator"] = children_cpu_seconds() - generator_before
    cpu["this process (control plane, audit)"] = (
        own_cpu_seconds() - children_cpu_seconds() - self_before
    )
    drained_after = _quiet(audit.size, QUIET_S, DRAIN_TIMEOUT_S)
    stop.set()
    sampler.join(timeout=10)

    answered = sum(n for status, n in result.statuses.items() if 200 <= status < 500)
    lines = _access_lines(enforcer.access_log, access_offset, result.expected)
    made, no_id = _decision_ids(lines)
    recorded_ids, shed, duplicates, why = _recorded(plane, base_size)
    metrics_after = _opa_metrics(enforcer.opa.url)
    counters = {
        k: metrics_after.get(k, 0.0) - metrics_before.get(k, 0.0)
        for k in metrics_after
        if k.endswith("_total")
    }
    uploads, accepted, skipped, refused = tally.snapshot()
    intake = Intake(
        uploads=uploads - intake_before[0],
        accepted=accepted - intake_before[1],
        duplicates=skipped - intake_before[2],
        refused={
            k: v - intake_before[3].get(k, 0)
            for k, v in refused.items()
            if v > intake_before[3].get(k, 0)
        },
        opa_failures=_upload_failures(enforcer.opa.log_path, opa_log_offset),
        opa_uploads=_count(enforcer.opa.log_path, opa_log_offset, "Logs uploaded successfully"),
        buffer_left=metrics_after.get(
            DURABLE_BUFFERED, metrics_after.get("decision_logs_buffer_size_events", float("nan"))
        ),
    )
    outcome = Outcome(
        made=made,
        recorded=made & recorded_ids,
        missing=made - recorded_ids,
        extra=recorded_ids - made,
        extra_shed=_by_reason(recorded_ids - made, shed),
        made_unanswered=len({i for i in made if shed.get(i) in UNANSWERED_MARKS}),
        made_unanswered_by=_by_reason(
            {i for i in made if shed.get(i) in UNANSWERED_MARKS},
            {i: f"{m} ({why[i]})" if i in why else m for i, m in shed.items()},
        ),
        corrected=sum(1 for mark in shed.values() if mark == CORRECTED_MARK),
        duplicate_leaves=duplicates,
        answered=answered,
        no_id=no_id,
        access_lines=len(lines),
    )
    ctx.console.print(
        f"  {result.describe()}; answered {answered:,}; access log lines {len(lines):,} "
        f"({no_id:,} without a decision id)"
    )
    ctx.console.print(
        f"  decisions made {len(made):,}; recorded {len(outcome.recorded):,}; missing "
        f"{len(outcome.missing):,}; in the log, not returned {len(outcome.extra):,} "
        f"(by shed mark: {outcome.extra_shed or 'none'}); duplicate "
        f"leaves {duplicates}; log settled {_s(drained_after)} after the load"
    )
    ctx.console.print(
        f"  intake: {intake.uploads} uploads accepted ({intake.accepted:,} events, "
        f"{intake.duplicates:,} duplicates skipped), refused {intake.refused or 'none'}; OPA: "
        f"{intake.opa_uploads} uploads logged ok, failed {intake.opa_failures or 'none'}; "
        f"buffer left {intake.buffer_left:,.0f}; counters "
        + (", ".join(f"{k} {v:,.0f}" for k, v in sorted(counters.items())) or "none exported")
    )
    if outcome.missing:
        ctx.console.print(f"  e.g. missing: {', '.join(sorted(outcome.missing)[:3])}")
    setup = (
        f"{generated.tenants:,}-tenant bundle; {rate:,} rps for {duration:.0f} s from "
        f"{len(clients)} generator processes ({ALLOWED_CLIENTS} allowed tenants, "
        f"{DENIED_CLIENTS} wrong key); audit on {'PostgreSQL' if ctx.postgres else 'SQLite'}"
    )
    return _figures(
        outcome,
        intake,
        result=result,
        counters=counters,
        rates=_rates(growth.sizes),
        load_s=load_s,
        drained_after=drained_after,
        buffer_max=growth.buffer_max,
        cpu=cpu,
        setup=setup,
        rate=rate,
    )


@dataclass(frozen=True)
class Outcome:
    made: set[str]
    recorded: set[str]
    missing: set[str]
    extra: set[str]
    extra_shed: dict[str, int]
    """The leaves no client got a decision id from, by the shed reason they carry ("none")."""
    made_unanswered: int
    """Decision ids a client got whose leaf says no answer reached it (should be 0)."""
    made_unanswered_by: dict[str, int]
    """Those by their mark (a receipt with its reason), to tell which rule misjudged."""
    corrected: int
    """Shed leaves presumed unanswered whose receipt says Envoy applied the refusal."""
    duplicate_leaves: int
    answered: int
    no_id: int
    access_lines: int


@dataclass(frozen=True)
class Intake:
    uploads: int
    accepted: int
    duplicates: int
    refused: dict[str, int]
    opa_failures: dict[str, int]
    opa_uploads: int
    buffer_left: float


def _s(value: float | None) -> str:
    return f"{value:.1f} s" if value is not None else "never (timed out)"


def _quiet(size: Any, quiet_s: float, timeout_s: float) -> float | None:
    """Wait until ``size()`` stops growing for ``quiet_s``; seconds until its last growth."""
    deadline = Deadline(timeout_s)
    start = time.monotonic()
    last, last_change = size(), time.monotonic()
    for _ in range(int(timeout_s / 0.25) + 1):
        time.sleep(0.25)
        now = size()
        if now != last:
            last, last_change = now, time.monotonic()
        elif time.monotonic() - last_change >= quiet_s:
            return last_change - start
        if deadline.expired:
            break
    return None


def _sample(size: Any, opa_url: str, growth: Growth, stop: threading.Event, t0: float) -> None:
    with httpx.Client(timeout=2) as client:
        for _ in range(int(3600 / SAMPLE_S)):
            if stop.is_set():
                return
            growth.sizes.append((time.monotonic() - t0, int(size())))
            with contextlib.suppress(httpx.HTTPError):
                text = client.get(f"{opa_url}/metrics").text
                value = _metric(text, DURABLE_BUFFERED)
                if value is None:
                    value = _metric(text, "decision_logs_buffer_size_events")
                if value is not None:
                    growth.buffer_max = max(growth.buffer_max, value)
            stop.wait(SAMPLE_S)


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def _opa_metrics(opa_url: str) -> dict[str, float]:
    """OPA's decision-log metrics from /metrics (counters end in _total)."""
    try:
        text = httpx.get(f"{opa_url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not any(
            part in line for part in ("decision_logs", "enc_log", "nexus_decision_log")
        ):
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[name] = float(value)
    return out


def _access_lines(path: Path, offset: int, expected: int) -> list[str]:
    """Envoy's access-log lines after ``offset``, once ``expected`` are there (bounded wait)."""
    deadline = Deadline(ACCESS_LOG_TIMEOUT_S)
    lines: list[str] = []
    for _ in range(int(ACCESS_LOG_TIMEOUT_S / 0.25) + 1):
        if path.exists():
            with path.open("rb") as log:
                log.seek(offset)
                lines = log.read().decode(errors="replace").splitlines()
        if len(lines) >= expected or deadline.expired:
            break
        time.sleep(0.25)
    return lines


def _decision_ids(lines: list[str]) -> tuple[set[str], int]:
    """The decision id of each line (response header, else ext_authz metadata); lines without."""
    made: set[str] = set()
    no_id = 0
    for line in lines:
        ids = [p.strip('"') for p in line.split()[1:] if p.strip('"') not in ("-", "")]
        if ids:
            made.add(ids[0])
        else:
            no_id += 1
    return made, no_id


def _recorded(
    plane: BenchPlane, base_size: int
) -> tuple[set[str], dict[str, str], int, dict[str, str]]:
    """Decision ids of the leaves appended since ``base_size``, the shed reason of those that
    carry one, how many ids repeat, and each receipt's reason by decision id."""
    assert plane.audit is not None
    with plane.audit.db.session() as session:
        rows = list(
            session.execute(
                select(Leaf.decision_id, Leaf.entry).where(
                    Leaf.leaf_index >= base_size, Leaf.kind == "decision"
                )
            )
        )
        receipts = list(
            session.scalars(
                select(Leaf.entry).where(Leaf.leaf_index >= base_size, Leaf.kind == "receipt")
            )
        )
    found = {i for i, _ in rows if i is not None}
    shed: dict[str, str] = {}
    for decision_id, entry in rows:
        reason = orjson.loads(entry).get("outcome", {}).get("shed")
        if decision_id is not None and reason is not None:
            shed[decision_id] = str(reason)
    why: dict[str, str] = {}
    for entry in receipts:
        receipt = orjson.loads(entry)
        # A delivered receipt corrects a shed leaf presumed unanswered: Envoy applied it.
        mark = CORRECTED_MARK if receipt.get("delivered") else RECEIPT_MARK
        shed[str(receipt["decision_id"])] = mark
        why[str(receipt["decision_id"])] = str(receipt.get("reason", "?"))
    return found, shed, len(rows) - len(found), why


def _by_reason(ids: set[str], shed: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for decision_id in ids:
        reason = shed.get(decision_id, "none")
        counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items()))


def _upload_failures(path: Path, offset: int) -> dict[str, int]:
    """Decision-log uploads OPA logged as failed since ``offset``, by message."""
    out: dict[str, int] = {}
    with path.open("rb") as log:
        log.seek(offset)
        for line in log.read().decode(errors="replace").splitlines():
            if '"plugin":"decision_logs"' not in line:
                continue
            match = UPLOAD_FAILED.search(line)
            if match:
                key = match.group(0)[:80]
                out[key] = out.get(key, 0) + 1
    return out


def _count(path: Path, offset: int, needle: str) -> int:
    with path.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace").count(needle)


def _rates(sizes: list[tuple[float, int]]) -> tuple[float, float]:
    """Mean leaves appended per second (from the last sample before growth to the first at the
    final size) and the peak over one sampling interval."""
    if len(sizes) < 2:
        return float("nan"), float("nan")
    per_interval = [
        (b[1] - a[1]) / (b[0] - a[0]) for a, b in itertools.pairwise(sizes) if b[0] > a[0]
    ]
    first, last = sizes[0][1], sizes[-1][1]
    began = max(t for t, size in sizes if size == first)
    ended = min(t for t, size in sizes if size == last)
    mean = (last - first) / (ended - began) if ended > began else float("nan")
    return mean, max(per_interval, default=float("nan"))


def _figures(
    outcome: Outcome,
    intake: Intake,
    *,
    result: LoadResult,
    counters: dict[str, float],
    rates: tuple[float, float],
    load_s: float,
    drained_after: float | None,
    buffer_max: float,
    cpu: dict[str, float],
    setup: str,
    rate: int,
) -> list[Figure]:
    made = outcome.made
    unmarked = sum(n for reason, n in outcome.extra_shed.items() if reason not in UNANSWERED_MARKS)
    ratio = 100.0 * len(outcome.recorded) / len(made) if made else None
    complete = bool(made) and not outcome.missing and drained_after is not None
    dropped = sum(v for k, v in counters.items() if "dropped" in k)
    chunks_failed = counters.get("decision_logs_chunks_upload_failed_total", 0.0)
    failed = sum(intake.opa_failures.values())
    requests = result.expected or 1
    per_request = ", ".join(f"{k} {v * 1000 / requests:.3f}" for k, v in cpu.items())
    no_decision = sum(n for status, n in result.statuses.items() if status >= 500) + result.failed
    return [
        judged(
            NAME,
            f"@ {rate:,} rps: decisions recorded / decisions made",
            ratio,
            "%",
            "100 %",
            complete,
            note=f"made: {len(made):,} decision ids Envoy returned ({outcome.answered:,} "
            f"answers from a decision by the generator's count; {no_decision:,} requests got "
            f"none, 5xx or error); recorded: {len(outcome.recorded):,}; missing "
            f"{len(outcome.missing):,}; in the log but never returned {len(outcome.extra):,}; "
            f"duplicate leaves {outcome.duplicate_leaves}; {setup}",
        ),
        judged(
            NAME,
            f"@ {rate:,} rps: leaves no client received, not marked unanswered",
            float(unmarked),
            "count",
            "0",
            unmarked == 0 and outcome.made_unanswered == 0,
            note=f"{len(outcome.extra):,} leaves whose decision id no client got, by the shed "
            f"reason they carry: {outcome.extra_shed or 'none'} (unanswered: "
            f"{', '.join(sorted(UNANSWERED_MARKS))}); decision ids a client got whose leaf is "
            f"marked unanswered: {outcome.made_unanswered:,}"
            + (f" {outcome.made_unanswered_by}" if outcome.made_unanswered_by else "")
            + f"; shed leaves a receipt corrected to answered: {outcome.corrected:,}",
        ),
        judged(
            NAME,
            f"@ {rate:,} rps: OPA decision-log events dropped",
            dropped,
            "count",
            "0",
            dropped == 0 and bool(counters),
            note=(
                ", ".join(f"{k} {v:,.0f}" for k, v in sorted(counters.items()))
                or "OPA exported no decision-log counters"
            )
            + f"; left in OPA's buffer after the wait: {intake.buffer_left:,.0f} (events or "
            f"requeued chunks); max seen during the load {buffer_max:,.0f}",
        ),
        figure(
            NAME,
            f"@ {rate:,} rps: decision-log uploads refused by the intake",
            float(sum(intake.refused.values())),
            "count",
            note=f"server side: {intake.refused or 'none'}; OPA's log: {failed} failed "
            f"({intake.opa_failures or 'none'}), {intake.opa_uploads} ok; chunks upload failed "
            f"(OPA counter) {chunks_failed:,.0f}; accepted uploads {intake.uploads} "
            f"({intake.accepted:,} events, {intake.duplicates:,} duplicates skipped)",
        ),
        figure(
            NAME,
            f"@ {rate:,} rps: intake throughput seen",
            rates[0],
            "decisions/s",
            note=f"tree growth from the last sample before the first new leaf to the first at "
            f"the final size; peak over {SAMPLE_S:.0f} s intervals {rates[1]:,.0f}/s",
        ),
        figure(
            NAME,
            f"@ {rate:,} rps: log settled after the load",
            drained_after,
            "s",
            note=f"from the end of the load to the last leaf appended (then {QUIET_S:.0f} s "
            f"without growth); the load took {load_s:.1f} s",
        ),
        figure(
            NAME,
            f"@ {rate:,} rps: requests answered by a decision",
            outcome.answered / result.window_s if result.window_s else None,
            "rps",
            note=f"of {rate:,} rps sent; generator: {result.describe()} (its rate counts 2xx "
            f"only; 'lost' counts denials too); 2xx service p50/p90/p99/max "
            f"{result.service_ms.text()}; CPU ms/request: {per_request}",
        ),
    ]
