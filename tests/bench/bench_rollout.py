"""Rollout across 3 regions x 10 enforcers: publish -> fully rolled out, and bad -> rolled back.

Set-up: the control plane on a thread (as in the e2e harness: ``create_app``
with the co-located audit log, over SQLite, or PostgreSQL with
``--postgres``), a fleet file of three regions in three waves (eu-west-1 the
canary, then eu-central-1, then us-east-1) with ``soakSeconds: 0`` and the
deadlines of ``deploy/fleet.yaml``, and 10 enforcers per region, each a real
OPA process (no Envoy: ``StackOptions(with_envoy=False)``) long-polling its
region's bundle with the product's default settings (30 s long polls) and
reporting status. The 30 OPAs are started one after the other, each waited
for, so their start-up does not pile up on this 2-CPU machine; their idle
CPU is measured before the runs.

Bundles: the example bundle (``bundles/gateway``) with the e2e credentials
overlay, a small bundle. Two builds that differ only in one rollout flag's
canary share (a *neutral* change: no second approver either way) are
published in turn, so every publication is a change and needs no approval.
In full mode a second series does the same with the generated 10k-tenant
bundle (``tests/bench/generate.py``), time allowing.

(a) publish -> completed: ``perf_counter`` from just before the author's
``POST /v1/bundles`` until ``GET /v1/rollouts/{id}`` (polled every 50 ms)
says ``completed``: the engine completes a rollout only when every enforcer
of every wave reported the revision active and error-free (OPA status
reports). After each run the status view is checked too. The engine's own
history gives the breakdown per wave (started -> converged) and the
hand-over between waves.

(b) bad revision -> rolled back: a correctly signed revision that OPA
refuses to activate (``nexus_cli.demo.run.unactivatable_revision``, stored
directly as the e2e test does since publishing refuses it) is opened as a
rollout and the canary's pollers woken, exactly as ``publish`` does. Timed
from just before that until (1) the rollout is ``halted`` (its rollback to
the last good revision is in the same transaction), and (2) the status view
shows every canary enforcer with the good revision active and no error.
Between runs the whole fleet settles (all 30 active and error-free). The
other regions must never receive the bad revision (checked from the history
and by asking the OPAs).

There are no targets for these figures in issue 4: they are information.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from nexus_cli.client import ControlPlaneClient
from nexus_cli.demo.faults import PrematureRotation, rotate_before_trust, undo_rotation
from nexus_contract.wire import POLICY_BUNDLE
from nexus_control.access.signing_keys import load_signing_key, public_pem
from nexus_control.access.tokens import Role, create_token
from nexus_control.api.app import create_control_plane
from nexus_control.authoring.bundle import BuildOptions, BuiltBundle, build_bundle
from nexus_control.rollout import engine
from nexus_control.rollout.fleet import fleet_yaml
from nexus_control.serving.notifier import bundle_key
from nexus_control.settings import ControlSettings
from nexus_dataplane.enforcer import EnforcerStack, StackOptions
from nexus_dataplane.upstream import Upstream
from nexus_runtime.toolchain import find_envoy
from tests.bench.common import (
    Context,
    Deadline,
    Figure,
    cpu_seconds,
    figure,
    own_cpu_seconds,
    percentile,
    report,
)
from tests.bench.plane import bench_database
from tests.fixtures.environment import (
    GATEWAY,
    KEY_ID,
    Environment,
    Sources,
    credentials_overlay,
    remember_sources,
    sources_for,
)

NAME = "rollout"
TITLE = "Rollout over 3 regions in 3 waves (soak 0): publish -> completed, bad -> rolled back"

REGIONS = (("eu-west-1", "eu", 0), ("eu-central-1", "eu", 1), ("us-east-1", "us", 2))
CANARY = REGIONS[0][0]
PER_REGION, QUICK_PER_REGION = 10, 2
RUNS, QUICK_RUNS = 12, 3
BIG_RUNS = 10
SOAK_S = 0
ACTIVATION_DEADLINE_S = 180
STALE_AFTER_S = 75
"""As in deploy/fleet.yaml: longer than the enforcers' 30 s long polls."""
ROLLOUT_POLL_S = 0.05
STATUS_POLL_S = 0.1
"""The rollout view is cheap (one row and its history); the status view reads every
enforcer's row of every region, so it is polled less often: both take CPU the OPAs need."""
RUN_TIMEOUT_S = 120.0
BIG_RUN_TIMEOUT_S = 300.0
START_TIMEOUT_S = 120.0
FIRST_ROLLOUT_TIMEOUT_S = 300.0
SETTLE_TIMEOUT_S = 120.0
SETTLE_S = 1.0
IDLE_SAMPLE_S = 5.0
TIME_BUDGET_S = 1800.0
BIG_MIN_BUDGET_S = 420.0
"""The 10k series starts only if this much of the time budget is left."""
CANARY_LINE = "canaryPercent: 20"
CANARY_CHANGED = "canaryPercent: 25"
UNTRUSTED_CANARY = "canaryPercent: 30"
TERMINAL = ("completed", "halted", "rolled_back", "superseded")


def fleet_file(path: Path, per_region: int) -> Path:
    rows = [
        (region, jurisdiction, wave, [f"{region}-{n}" for n in range(1, per_region + 1)])
        for region, jurisdiction, wave in REGIONS
    ]
    path.write_text(
        fleet_yaml(
            rows,
            soak_s=SOAK_S,
            activation_deadline_s=ACTIVATION_DEADLINE_S,
            stale_after_s=STALE_AFTER_S,
        )
    )
    return path


@dataclass
class FleetPlane(Environment):
    """The harness's environment with a fleet of three regions of OPA-only enforcers."""

    per_region: int = PER_REGION
    stacks: dict[str, EnforcerStack] = field(default_factory=dict)
    _operator: ControlPlaneClient | None = field(default=None, repr=False)

    @property
    def settings(self) -> ControlSettings:
        return super().settings.model_copy(
            update={
                "fleet_file": self.workdir / "fleet.yaml",
                "regions": [region for region, _, _ in REGIONS],
            }
        )

    def start(self) -> None:
        """Control plane (with the co-located audit log) and tokens; no enforcers yet."""
        fleet_file(self.workdir / "fleet.yaml", self.per_region)
        self.plane = create_control_plane(self.settings, opa=self.opa)
        self.start_audit()
        with self.plane.db.session() as session:
            for role in (Role.AUTHOR, Role.APPROVER, Role.OPERATOR):
                self.tokens[role.value], _ = create_token(
                    session, name=f"bench-{role.value}", role=role
                )
        self.start_control_plane()
        self._operator = ControlPlaneClient(self.url, self.tokens["operator"])

    def start_enforcers(self, timeout_s: float) -> None:
        """Every region's OPAs, one at a time (each waited for), the canary's first."""
        # OPA-only enforcers never reach the upstream; the stack needs one to render
        # configs, so it is given one that is never started.
        unused = Upstream(self.workdir / "unused-upstream")
        key_pem = public_pem(load_signing_key(self.keys.signing))
        for region, _, _ in REGIONS:
            stack = EnforcerStack(
                StackOptions(
                    region=region,
                    control_plane_url=self.url,
                    token="",
                    credentials=functools.partial(self.enrol, region=region),
                    key_id=KEY_ID,
                    verification_key_pem=key_pem,
                    workdir=self.workdir / "dataplane",
                    opa_bin=self.opa.binary,
                    envoy_bin=find_envoy(),
                    with_envoy=False,
                ),
                count=self.per_region,
                upstream=unused,
            )
            self.stacks[region] = stack
            stack.start(wait_for_bundles=False, timeout_s=timeout_s)

    def stop(self) -> None:
        for stack in self.stacks.values():
            stack.stop()
        if self._operator is not None:
            self._operator.close()
            self._operator = None
        super().stop()

    # -- reading the control plane ---------------------------------------------------

    @property
    def operator(self) -> ControlPlaneClient:
        if self._operator is None:
            raise RuntimeError("the control plane is not started")
        return self._operator

    def rollout(self, rollout_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self.operator.get(f"/v1/rollouts/{rollout_id}")
        return result

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.operator.get("/v1/rollouts/status")
        return result

    def opa_pids(self) -> list[int | None]:
        return [e.opa.pid for s in self.stacks.values() for e in s.enforcers]

    def opa_cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.opa_pids())

    def opa_rss_mb(self) -> float:
        return sum(_rss_mb(pid) for pid in self.opa_pids())

    @property
    def enforcer_count(self) -> int:
        return sum(len(s.enforcers) for s in self.stacks.values())

    # -- changing it -----------------------------------------------------------------

    def publish_rollout(self, built: BuiltBundle | Sources) -> dict[str, Any]:
        """Publish as the author; approve as the approver when the change needs it."""
        with ControlPlaneClient(self.url, self.tokens["author"]) as api:
            result: dict[str, Any] = api.publish(sources_for(built).pack())
        if result["rollout"]["state"] == "pending_approval":
            with ControlPlaneClient(self.url, self.tokens["approver"]) as api:
                api.post(f"/v1/rollouts/{result['rollout']['id']}/approve", {"comment": "bench"})
        return result

    def untrusted_revision(self, candidate: BuiltBundle | Sources) -> tuple[str, PrematureRotation]:
        """``candidate`` published while a key the canary does not trust signs (the demo's fault).

        Its rollout is halted at once and kept aside; the bad runs re-open it.
        """
        with ControlPlaneClient(self.url, self.tokens["operator"]) as operator:
            rotation = rotate_before_trust(operator)
        result = self.publish_rollout(candidate)
        with ControlPlaneClient(self.url, self.tokens["operator"]) as operator:
            operator.post(f"/v1/rollouts/{result['rollout']['id']}/rollback", {"reason": "aside"})
        return str(result["revision"]), rotation

    def restore_key(self, rotation: PrematureRotation) -> None:
        with ControlPlaneClient(self.url, self.tokens["operator"]) as operator:
            undo_rotation(operator, rotation)

    def inject(self, revision: str) -> int:
        """Open a rollout of the stored ``revision`` and wake the canary's pollers."""
        assert self.plane is not None
        with self.plane.db.session() as session:
            opened, changed = engine.start(
                session,
                self.plane.fleet,
                revision,
                author="bench-author",
                diff={},
                needs_approval=False,
            )
            rollout_id = opened.id
        self.plane.notifier.notify(bundle_key(region, POLICY_BUNDLE) for region in changed)
        return rollout_id


def _rss_mb(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return 0.0
    return 0.0


# -- measurements ------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    label: str
    short: str
    good: tuple[BuiltBundle, BuiltBundle]
    runs: int
    timeout_s: float


@dataclass(frozen=True)
class GoodSample:
    call_s: float
    completed_s: float | None
    state: str
    waves_s: tuple[float, ...]
    """Per wave, in the engine's clock: wave_started -> wave_converged."""
    handoffs_s: tuple[float, ...]
    """wave_converged -> the next wave_started (the engine's tick, soak 0)."""
    all_active: bool
    opa_cpu_s: float
    plane_cpu_s: float


@dataclass(frozen=True)
class BadSample:
    halted_s: float | None
    clean_s: float | None
    touched: frozenset[str]
    reason: str
    opa_clean: bool
    opa_cpu_s: float
    plane_cpu_s: float


@dataclass
class SeriesResult:
    series: Series
    good: list[GoodSample] = field(default_factory=list)
    bad: list[BadSample] = field(default_factory=list)


def run(ctx: Context) -> list[Figure]:
    per_region = QUICK_PER_REGION if ctx.quick else PER_REGION
    budget = Deadline(TIME_BUDGET_S)
    workdir = ctx.workdir / NAME
    workdir.mkdir(parents=True, exist_ok=True)
    results: list[SeriesResult] = []
    figures: list[Figure] = []
    with _fleet(ctx, workdir, per_region) as fleet:
        example = Series(
            "example bundle + credentials overlay",
            "example",
            _example_pair(fleet),
            QUICK_RUNS if ctx.quick else RUNS,
            RUN_TIMEOUT_S,
        )
        load = os.getloadavg()[0]
        fleet.publish_rollout(example.good[0])
        first = _latest_rollout_id(fleet)
        t0 = time.monotonic()
        fleet.start_enforcers(START_TIMEOUT_S)
        started_s = time.monotonic() - t0
        _wait_state(fleet, first, FIRST_ROLLOUT_TIMEOUT_S, "completed")
        ready_s = time.monotonic() - t0
        ctx.console.print(
            f"  {fleet.enforcer_count} OPA enforcers started in {started_s:.0f} s; the first "
            f"rollout completed {ready_s:.0f} s after the first start (load average {load:.2f})"
        )
        idle = _idle(fleet)
        small_rss = fleet.opa_rss_mb()
        ctx.console.print(
            f"  idle: OPAs {idle[0]:.2f} CPU-s/s, this process {idle[1]:.2f} CPU-s/s; "
            f"OPA RSS {small_rss:.0f} MB in all"
        )
        results.append(_series(ctx, fleet, example, budget))
        if not ctx.quick:
            if budget.left() > BIG_MIN_BUDGET_S:
                big = Series(
                    f"{ctx.main_tenants:,}-tenant generated bundle",
                    f"{ctx.main_tenants // 1000}k",
                    _generated_pair(ctx, workdir),
                    BIG_RUNS,
                    BIG_RUN_TIMEOUT_S,
                )
                results.append(_series(ctx, fleet, big, budget))
            else:
                ctx.console.print("  time budget spent: the 10k-tenant series is left out")
        figures += _setup_figures(fleet, started_s, ready_s, idle, load, small_rss)
        for result in results:
            figures += _figures(result, fleet.enforcer_count)
    report(ctx.console, TITLE, figures)
    return figures


@contextlib.contextmanager
def _fleet(ctx: Context, workdir: Path, per_region: int) -> Iterator[FleetPlane]:
    with bench_database(ctx, workdir) as postgres_url:
        fleet = FleetPlane(
            workdir=workdir,
            keys=ctx.keys,
            opa=ctx.opa,
            database_url=postgres_url or f"sqlite:///{workdir / 'control.db'}",
            plain=credentials_overlay(workdir / "credentials"),
            audit_database_url=postgres_url,
            per_region=per_region,
        )
        try:
            fleet.start()
            yield fleet
        finally:
            fleet.stop()


def _example_pair(fleet: FleetPlane) -> tuple[BuiltBundle, BuiltBundle]:
    text = (GATEWAY / "rollouts.yaml").read_text()
    if CANARY_LINE not in text:
        raise RuntimeError(f"bundles/gateway/rollouts.yaml no longer has {CANARY_LINE!r}")
    changed = text.replace(CANARY_LINE, CANARY_CHANGED, 1)
    files: dict[str, Any] = {"rollouts.yaml": changed}
    return _built(fleet, fleet.build()), _built(fleet, fleet.build(None, **files))


def _built(fleet: FleetPlane, sources: Sources) -> BuiltBundle:
    """Build ``sources`` here too (with the control plane's approval JWKS): its revision and
    size, which the control plane will compute alike when they are published."""
    built = build_bundle(
        sources.bundle_dir,
        fleet.opa,
        BuildOptions(fleet.keys.signing, KEY_ID, fleet.keys.approval_jwks, fleet.workdir / "dist"),
        overlays=sources.overlays,
    )
    remember_sources(built, sources.bundle_dir, sources.overlays)
    return built


def _generated_pair(ctx: Context, workdir: Path) -> tuple[BuiltBundle, BuiltBundle]:
    """The shared 10k-tenant build, and a copy whose one flag has another canary share."""
    first = ctx.built(ctx.main_tenants)
    source = workdir / "sources" / f"tenants-{ctx.main_tenants}-canary"
    if source.exists():
        shutil.rmtree(source)
    shutil.copytree(ctx.generated(ctx.main_tenants).path, source)
    rollouts = source / "rollouts.yaml"
    text = rollouts.read_text()
    if CANARY_LINE not in text:
        raise RuntimeError(f"the generated rollouts.yaml has no {CANARY_LINE!r}")
    rollouts.write_text(text.replace(CANARY_LINE, CANARY_CHANGED, 1))
    second = build_bundle(source, ctx.opa, ctx.build_options())
    remember_sources(second, source)
    return first, second


def _latest_rollout_id(fleet: FleetPlane) -> int:
    rollouts: list[dict[str, Any]] = fleet.operator.get("/v1/rollouts")["rollouts"]
    return int(rollouts[0]["id"])


def _wait_state(
    fleet: FleetPlane, rollout_id: int, timeout_s: float, *states: str
) -> dict[str, Any]:
    deadline = Deadline(timeout_s)
    for _ in range(int(timeout_s / ROLLOUT_POLL_S) + 1):
        view = fleet.rollout(rollout_id)
        if view["state"] in states:
            return view
        if deadline.expired:
            break
        time.sleep(ROLLOUT_POLL_S)
    raise RuntimeError(
        f"rollout {rollout_id} did not reach {'/'.join(states)} within {timeout_s:.0f} s: "
        f"{view['state']} (wave {view['wave']}) {view.get('reason') or ''}"
    )


def _idle(fleet: FleetPlane) -> tuple[float, float]:
    """CPU-s per second the idle fleet costs: its OPAs, and this process (control plane)."""
    opa, plane = fleet.opa_cpu(), own_cpu_seconds()
    time.sleep(IDLE_SAMPLE_S)
    return (fleet.opa_cpu() - opa) / IDLE_SAMPLE_S, (own_cpu_seconds() - plane) / IDLE_SAMPLE_S


def _enforcers_on(status: dict[str, Any], revision: str, regions: set[str] | None = None) -> bool:
    """Every enforcer of ``regions`` (all: None) active on ``revision``, no error."""
    for region in status["regions"]:
        if regions is not None and region["region"] not in regions:
            continue
        if region["desired"] != revision or not region["enforcers"]:
            return False
        for enforcer in region["enforcers"]:
            if (
                enforcer["state"] != "active"
                or enforcer["active_revision"] != revision
                or enforcer["error"]
            ):
                return False
    return True


def _settle(fleet: FleetPlane, revision: str) -> None:
    """Wait (bounded) until all enforcers of all regions are active on ``revision``, no error."""
    deadline = Deadline(SETTLE_TIMEOUT_S)
    for _ in range(int(SETTLE_TIMEOUT_S / STATUS_POLL_S) + 1):
        if _enforcers_on(fleet.status(), revision):
            time.sleep(SETTLE_S)
            return
        if deadline.expired:
            break
        time.sleep(STATUS_POLL_S)
    raise RuntimeError(f"the fleet did not settle on {revision[:12]} in {SETTLE_TIMEOUT_S:.0f} s")


def _series(ctx: Context, fleet: FleetPlane, series: Series, budget: Deadline) -> SeriesResult:
    result = SeriesResult(series)
    first = series.good[0]
    size = f"{first.size / 1e6:.2f} MB" if first.size >= 1e5 else f"{first.size / 1e3:.0f} kB"
    ctx.console.print(f"  [bold]{series.label}[/bold] ({size} archive)")
    current = fleet.status()["regions"][0]["desired"]
    if current != first.revision:
        # Entering the series: its first build is rolled out once, untimed.
        published = fleet.publish_rollout(first)
        _wait_state(fleet, int(published["rollout"]["id"]), series.timeout_s * 2, "completed")
    _settle(fleet, first.revision)
    good = first
    for n in range(series.runs):
        if budget.expired:
            ctx.console.print("  time budget spent: series cut short")
            break
        built = series.good[(n + 1) % 2]
        sample = _good_run(fleet, built, series.timeout_s)
        result.good.append(sample)
        if sample.state == "completed":
            good = built
        waves = ", ".join(f"{w:.2f}" for w in sample.waves_s)
        ctx.console.print(
            f"    publish {n + 1:>2}: call {sample.call_s:.2f} s; completed "
            f"{_s(sample.completed_s)} ({sample.state}); waves {waves} s; all active "
            f"{'yes' if sample.all_active else 'NO'}; CPU: OPAs {sample.opa_cpu_s:.1f} s, "
            f"control plane {sample.plane_cpu_s:.1f} s"
        )
        _settle(fleet, good.revision)
    bad, rotation = fleet.untrusted_revision(_untrusted_candidate(fleet, good))
    try:
        _bad_series(ctx, fleet, series, result, budget, bad, good)
    finally:
        fleet.restore_key(rotation)
        _settle(fleet, good.revision)
    return result


def _untrusted_candidate(fleet: FleetPlane, good: BuiltBundle) -> Sources:
    """A third revision (another canary share) to publish under the untrusted key."""
    sources = sources_for(good)
    target = fleet.workdir / f"untrusted-{uuid.uuid4().hex[:8]}"
    shutil.copytree(sources.bundle_dir, target)
    rollouts = target / "rollouts.yaml"
    text = rollouts.read_text()
    for line in (CANARY_LINE, CANARY_CHANGED):
        text = text.replace(line, UNTRUSTED_CANARY, 1)
    rollouts.write_text(text)
    return Sources(target, sources.overlays)


def _bad_series(
    ctx: Context,
    fleet: FleetPlane,
    series: Series,
    result: SeriesResult,
    budget: Deadline,
    bad: str,
    good: BuiltBundle,
) -> None:
    for n in range(series.runs):
        if budget.expired:
            ctx.console.print("  time budget spent: series cut short")
            break
        bad_sample = _bad_run(fleet, bad, good.revision, series.timeout_s)
        result.bad.append(bad_sample)
        ctx.console.print(
            f"    bad {n + 1:>2}: halted {_s(bad_sample.halted_s)}; canary clean "
            f"{_s(bad_sample.clean_s)}; reached {', '.join(sorted(bad_sample.touched))}; "
            f"canary OPAs on the good revision {'yes' if bad_sample.opa_clean else 'NO'}; "
            f"CPU: OPAs {bad_sample.opa_cpu_s:.1f} s, control plane "
            f"{bad_sample.plane_cpu_s:.1f} s"
        )
        _settle(fleet, good.revision)


def _s(value: float | None) -> str:
    return f"{value:.2f} s" if value is not None else "timed out"


def _good_run(fleet: FleetPlane, built: BuiltBundle, timeout_s: float) -> GoodSample:
    opa_cpu, plane_cpu = fleet.opa_cpu(), own_cpu_seconds()
    start = time.perf_counter()
    published = fleet.publish_rollout(built)
    call_s = time.perf_counter() - start
    if published["revision"] != built.revision:
        raise RuntimeError(f"published {published['revision'][:12]}, not {built.revision[:12]}")
    rollout_id = int(published["rollout"]["id"])
    completed_s: float | None = None
    view: dict[str, Any] = {"state": "?"}
    for _ in range(int(timeout_s / ROLLOUT_POLL_S) + 1):
        view = fleet.rollout(rollout_id)
        now = time.perf_counter() - start
        if view["state"] in TERMINAL:
            completed_s = now if view["state"] == "completed" else None
            break
        if now > timeout_s:
            break
        time.sleep(ROLLOUT_POLL_S)
    opa_used, plane_used = fleet.opa_cpu() - opa_cpu, own_cpu_seconds() - plane_cpu
    view = fleet.rollout(rollout_id)
    waves, handoffs = _breakdown(view.get("history", []))
    return GoodSample(
        call_s=call_s,
        completed_s=completed_s,
        state=str(view["state"]),
        waves_s=waves,
        handoffs_s=handoffs,
        all_active=_enforcers_on(fleet.status(), built.revision),
        opa_cpu_s=opa_used,
        plane_cpu_s=plane_used,
    )


def _breakdown(history: list[dict[str, Any]]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per wave started -> converged, and converged -> next wave started, from the history."""
    started: list[datetime] = []
    converged: list[datetime] = []
    for event in history:
        at = datetime.fromisoformat(event["at"])
        if event["action"] == "wave_started" and (not started or at != started[-1]):
            started.append(at)
        elif event["action"] == "wave_converged":
            converged.append(at)
    waves = tuple(
        (c - s).total_seconds() for s, c in zip(started, converged, strict=False) if c >= s
    )
    handoffs = tuple(
        (s - c).total_seconds() for c, s in zip(converged, started[1:], strict=False) if s >= c
    )
    return waves, handoffs


def _bad_run(fleet: FleetPlane, bad: str, good: str, timeout_s: float) -> BadSample:
    opa_cpu, plane_cpu = fleet.opa_cpu(), own_cpu_seconds()
    start = time.perf_counter()
    rollout_id = fleet.inject(bad)
    halted_s: float | None = None
    clean_s: float | None = None
    view: dict[str, Any] = {"state": "?"}
    for _ in range(int(timeout_s / ROLLOUT_POLL_S) + 1):
        view = fleet.rollout(rollout_id)
        now = time.perf_counter() - start
        if view["state"] in TERMINAL:
            halted_s = now if view["state"] == "halted" else None
            break
        if now > timeout_s:
            break
        time.sleep(ROLLOUT_POLL_S)
    if halted_s is not None:
        for _ in range(int(timeout_s / STATUS_POLL_S) + 1):
            status = fleet.status()
            now = time.perf_counter() - start
            if _enforcers_on(status, good, {CANARY}):
                clean_s = now
                break
            if now > timeout_s:
                break
            time.sleep(STATUS_POLL_S)
    opa_used, plane_used = fleet.opa_cpu() - opa_cpu, own_cpu_seconds() - plane_cpu
    view = fleet.rollout(rollout_id)
    touched = frozenset(
        str(e["region"]) for e in view.get("history", []) if e["action"] == "wave_started"
    )
    return BadSample(
        halted_s=halted_s,
        clean_s=clean_s,
        touched=touched,
        reason=str(view.get("reason") or ""),
        opa_clean=_opas_hold(fleet, good, bad),
        opa_cpu_s=opa_used,
        plane_cpu_s=plane_used,
    )


def _opas_hold(fleet: FleetPlane, good: str, bad: str) -> bool:
    """Asking the OPAs themselves: the canary's run ``good``; no OPA anywhere holds ``bad``."""
    with httpx.Client(timeout=5) as client:
        for region, stack in fleet.stacks.items():
            for enforcer in stack.enforcers:
                try:
                    held = client.get(
                        f"{enforcer.opa_url}/v1/data/system/bundles", headers=enforcer.opa_headers
                    ).text
                    revision = client.get(
                        f"{enforcer.opa_url}/v1/data/system/bundles/nexus/manifest/revision",
                        headers=enforcer.opa_headers,
                    ).json()
                except (httpx.HTTPError, ValueError):
                    return False
                if bad in held:
                    return False
                if region == CANARY and revision.get("result") != good:
                    return False
    return True


# -- figures -------------------------------------------------------------------------------


def _setup_figures(
    fleet: FleetPlane,
    started_s: float,
    ready_s: float,
    idle: tuple[float, float],
    load: float,
    small_rss: float,
) -> list[Figure]:
    per_region = {region: len(stack.enforcers) for region, stack in fleet.stacks.items()}
    return [
        figure(
            NAME,
            "enforcers (OPA processes, no Envoy)",
            float(fleet.enforcer_count),
            "count",
            note=", ".join(f"{r}: {n}" for r, n in per_region.items())
            + f"; 3 waves, soak {SOAK_S} s; started one by one in {started_s:.0f} s, first "
            f"rollout complete after {ready_s:.0f} s; idle CPU: OPAs {idle[0]:.2f}, control "
            f"plane {idle[1]:.2f} CPU-s/s; OPA RSS in all {small_rss:.0f} MB with the example "
            f"bundle, {fleet.opa_rss_mb():.0f} MB at the end; "
            f"load average {load:.2f} on {os.cpu_count()} CPUs at the start",
        )
    ]


def _figures(result: SeriesResult, enforcers: int) -> list[Figure]:
    series = result.series
    label = series.short
    good = result.good
    done = [s.completed_s for s in good if s.completed_s is not None]
    failed = len(good) - len(done)
    not_active = sum(not s.all_active for s in good)
    calls = [s.call_s for s in good]
    per_wave = [
        percentile([s.waves_s[w] for s in good if len(s.waves_s) > w], 50)
        for w in range(len(REGIONS))
    ]
    handoffs = [h for s in good for h in s.handoffs_s]
    setup = (
        f"{len(good)} publishes alternating two builds ({series.label}, "
        f"{series.good[0].size / 1e3:,.0f} kB; a neutral change, no approval), {enforcers} "
        "enforcers; no target in issue 4"
    )
    figures = [
        figure(
            NAME,
            f"{label}: publish -> completed: p50",
            percentile(done, 50),
            "s",
            note=setup,
        ),
        figure(
            NAME,
            f"{label}: publish -> completed: p99",
            percentile(done, 99) if done and not failed else float("inf"),
            "s",
            note=f"nearest rank over {len(done)} runs (fewer than 100: the max); "
            f"max {max(done, default=float('nan')):.2f} s; not completed {failed}; status view "
            f"not all active after completion: {not_active}",
        ),
        figure(
            NAME,
            f"{label}: per wave started -> converged: p50",
            sum(per_wave) / len(per_wave) if per_wave else None,
            "s",
            note="mean of the waves' medians (engine history); waves "
            + ", ".join(f"{w}: {v:.2f} s" for w, v in enumerate(per_wave))
            + f"; converged -> next wave started p50 {percentile(handoffs, 50):.2f} s, max "
            f"{max(handoffs, default=float('nan')):.2f} s; publish call p50 "
            f"{percentile(calls, 50):.2f} s, max {max(calls, default=float('nan')):.2f} s",
        ),
        figure(
            NAME,
            f"{label}: CPU per rollout, all OPAs",
            percentile([s.opa_cpu_s for s in good], 50),
            "s",
            note=f"median; this process (control plane, audit, polling): "
            f"{percentile([s.plane_cpu_s for s in good], 50):.2f} s",
        ),
    ]
    bad = result.bad
    halted = [s.halted_s for s in bad if s.halted_s is not None]
    clean = [s.clean_s for s in bad if s.clean_s is not None]
    leaked = sum(s.touched != {CANARY} for s in bad)
    unclean = sum(not s.opa_clean for s in bad)
    reasons = {s.reason.split(":")[0] for s in bad if s.reason}
    if bad:
        figures += [
            figure(
                NAME,
                f"{label}: bad revision -> halted (canary desired back on good): p50",
                percentile(halted, 50),
                "s",
                note=f"{len(bad)} injections of a revision OPA refuses (overlapping roots); "
                f"p99 {_p99(halted, len(bad))}, max {max(halted, default=float('nan')):.2f} s; "
                f"reasons: {', '.join(sorted(reasons)) or '-'}; no target in issue 4",
            ),
            figure(
                NAME,
                f"{label}: bad revision -> canary all good, no error: p50",
                percentile(clean, 50),
                "s",
                note=f"every canary enforcer reports the last good revision active and no error "
                f"(status view); p99 {_p99(clean, len(bad))}, max "
                f"{max(clean, default=float('nan')):.2f} s; not reached {len(bad) - len(clean)}; "
                f"runs where another region got the bad revision: {leaked}; where an OPA "
                f"disagreed when asked: {unclean}",
            ),
            figure(
                NAME,
                f"{label}: bad revision -> canary all good, no error: p99",
                percentile(clean, 99) if len(clean) == len(bad) else float("inf"),
                "s",
                note=f"nearest rank over {len(clean)} runs (the max); CPU per run: OPAs "
                f"{percentile([s.opa_cpu_s for s in bad], 50):.1f} s, this process "
                f"{percentile([s.plane_cpu_s for s in bad], 50):.1f} s (medians)",
            ),
        ]
    return figures


def _p99(values: list[float], runs: int) -> str:
    if not values or len(values) < runs:
        return "inf (some runs timed out)"
    return f"{percentile(values, 99):.2f} s"
