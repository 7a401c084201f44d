"""No decision lost while OPA dies and the intake is down (issue 10, "Measure").

The set-up of `bench_audit_ratio` (control plane and co-located audit log on a thread, one
enforcer of real OPA and Envoy as the data plane renders them, the Go open-loop generator),
at 500 requests/s for 60 s (20 s in quick mode). While the load runs, on a schedule counted
from its start:

- OPA is killed with SIGKILL and started again at once, as the enforcer's supervisor would
  (same config, same durable decision-log directory), twice;
- between the kills the intake is down for a third of the window: every decision-log upload
  is answered 503 (``SignerUnavailableError``, the error a replica that cannot sign gives),
  so OPA's durable log keeps its segments and retries.

Then the log is watched until it stops growing, and compared with what Envoy returned:
decisions made are the decision ids in Envoy's access log; every one must be a leaf, exactly
once. Leaves of requests no client received (Envoy had given up, or OPA was killed before
it answered) are classified by their shed mark, as in `bench_audit_ratio`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nexus_audit.intake import Uploader
from nexus_audit.service import AppendResult, AuditLog
from nexus_audit.signer import SignerUnavailableError
from nexus_contract.wire import SHED_UNANSWERED
from tests.bench.bench_audit_ratio import (
    ALLOWED_CLIENTS,
    DENIED_CLIENTS,
    OPA_START_TIMEOUT_S,
    PATH,
    QUIET_S,
    REQUEST_BODY,
    Enforcer,
    _access_lines,
    _by_reason,
    _decision_ids,
    _quiet,
    _recorded,
    measured_stack,
)
from tests.bench.common import Context, Figure, figure, judged, report
from tests.bench.loadgen import constant_rate

NAME = "audit_chaos"
TITLE = "No decision lost: two kill -9 of OPA and the intake down, under load"
RATE = 500
DURATION_S, QUICK_DURATION_S = 60.0, 20.0
KILLS_AT = (1 / 6, 3 / 4)
"""When OPA is killed, as fractions of the window (10 s and 45 s of 60)."""
INTAKE_DOWN = (1 / 3, 2 / 3)
"""When the intake is down, as fractions of the window (20 s to 40 s of 60)."""
DRAIN_TIMEOUT_S = 300.0


class IntakeSwitch:
    """Wraps `AuditLog.ingest_upload` (what the decision-log route calls): while ``down`` is
    set every upload is answered 503, as a replica that cannot sign answers; counted."""

    def __init__(self, audit: AuditLog) -> None:
        self.down = threading.Event()
        self.refused = 0
        self.accepted = 0
        self.duplicates = 0
        self._lock = threading.Lock()
        original = audit.ingest_upload

        def ingest_upload(
            body: bytes, content_encoding: str | None, uploader: Uploader | None = None
        ) -> AppendResult:
            if self.down.is_set():
                with self._lock:
                    self.refused += 1
                raise SignerUnavailableError("the intake is down (benchmark)")
            result = original(body, content_encoding, uploader)
            with self._lock:
                self.accepted += result.accepted
                self.duplicates += result.duplicates
            return result

        audit.ingest_upload = ingest_upload  # type: ignore[method-assign]


@dataclass
class Chaos:
    """What the schedule did, and when (seconds from the load's start)."""

    events: list[str] = field(default_factory=list)
    restarts_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def run(ctx: Context) -> list[Figure]:
    with measured_stack(ctx, NAME) as stack:
        audit, enforcer = stack.audit, stack.enforcer
        switch = IntakeSwitch(audit)
        duration = QUICK_DURATION_S if ctx.quick else DURATION_S
        _quiet(audit.size, QUIET_S, 30.0)
        _access_lines(enforcer.access_log, 0, stack.probes)
        base_size = audit.size()
        offset = enforcer.access_log.stat().st_size
        chaos = Chaos()
        stop = threading.Event()
        schedule = threading.Thread(
            target=_run_schedule,
            args=(enforcer, switch, duration, time.monotonic(), chaos, stop),
            name="chaos",
            daemon=True,
        )
        schedule.start()
        result = constant_rate(
            enforcer.url + PATH,
            stack.clients,
            rate=RATE,
            window_s=duration,
            warmup_s=0.0,
            workdir=stack.workdir / "load",
            body=REQUEST_BODY,
        )
        stop.set()
        schedule.join(timeout=OPA_START_TIMEOUT_S)
        switch.down.clear()
        drained = _quiet(audit.size, QUIET_S * 2, DRAIN_TIMEOUT_S)
        lines = _access_lines(enforcer.access_log, offset, result.expected)
        made, no_id = _decision_ids(lines)
        recorded_ids, shed, duplicates, _ = _recorded(stack.plane, base_size)
    generated, clients = stack.generated, stack.clients
    missing = made - recorded_ids
    extra = recorded_ids - made
    by_reason = _by_reason(extra, shed)
    made_unanswered = len({i for i in made if shed.get(i) in SHED_UNANSWERED})
    ctx.console.print(f"  chaos: {'; '.join(chaos.events)}")
    ctx.console.print(
        f"  {result.describe()}; decisions made {len(made):,} ({no_id:,} answers without a "
        f"decision id); recorded {len(made & recorded_ids):,}; missing {len(missing):,}; "
        f"duplicate leaves {duplicates}; leaves not returned {len(extra):,} {by_reason}"
    )
    setup = (
        f"{generated.tenants:,}-tenant bundle; {RATE} rps for {duration:.0f} s from "
        f"{len(clients)} generator processes ({ALLOWED_CLIENTS} allowed tenants, "
        f"{DENIED_CLIENTS} wrong key); audit on {'PostgreSQL' if ctx.postgres else 'SQLite'}; "
        f"{'; '.join(chaos.events)}"
    )
    exact = bool(made) and not missing and duplicates == 0 and drained is not None
    figures = [
        judged(
            NAME,
            "decisions made that are not leaves",
            float(len(missing)),
            "count",
            "0, no duplicate",
            exact and not chaos.errors,
            note=f"made: {len(made):,} decision ids Envoy returned; recorded "
            f"{len(made & recorded_ids):,}; duplicate leaves {duplicates}; "
            f"{'errors: ' + '; '.join(chaos.errors) + '; ' if chaos.errors else ''}{setup}",
        ),
        figure(
            NAME,
            "leaves of requests no client received",
            float(len(extra)),
            "count",
            note=f"by shed mark: {by_reason or 'none'}; decision ids a client got whose leaf "
            f"is marked unanswered: {made_unanswered:,}",
        ),
        figure(
            NAME,
            "uploads refused while the intake was down",
            float(switch.refused),
            "count",
            note=f"events accepted {switch.accepted:,}, duplicates skipped {switch.duplicates:,} "
            "(redelivered after a kill: a segment shipped but not yet acknowledged)",
        ),
        figure(
            NAME,
            "OPA restart to ready, max",
            max(chaos.restarts_s) if chaos.restarts_s else None,
            "s",
            note=f"each: {', '.join(f'{s:.1f} s' for s in chaos.restarts_s)} (bundles activated)",
        ),
        figure(
            NAME,
            "log settled after the load",
            drained,
            "s",
            note="from the end of the load (the intake up again) to the last leaf appended",
        ),
    ]
    report(ctx.console, TITLE, figures)
    return figures


def _run_schedule(
    enforcer: Enforcer,
    switch: IntakeSwitch,
    duration: float,
    start: float,
    chaos: Chaos,
    stop: threading.Event,
) -> None:
    steps: list[tuple[float, str, Callable[[], None]]] = [
        (KILLS_AT[0] * duration, "kill -9 OPA", lambda: _kill_and_restart(enforcer, chaos, start)),
        (INTAKE_DOWN[0] * duration, "intake down", switch.down.set),
        (INTAKE_DOWN[1] * duration, "intake up", switch.down.clear),
        (KILLS_AT[1] * duration, "kill -9 OPA", lambda: _kill_and_restart(enforcer, chaos, start)),
    ]
    for at, what, action in sorted(steps, key=lambda step: step[0]):
        if stop.wait(max(0.0, start + at - time.monotonic())):
            chaos.errors.append(f"the load ended before {what} at {at:.0f} s")
            return
        chaos.events.append(f"{what} at {time.monotonic() - start:.1f} s")
        try:
            action()
        except Exception as exc:  # reported as the figure's failure
            chaos.errors.append(f"{what}: {exc}")


def _kill_and_restart(enforcer: Enforcer, chaos: Chaos, start: float) -> None:
    enforcer.opa.kill()
    began = time.monotonic()
    enforcer.opa.start_and_wait(bundles=True, timeout_s=OPA_START_TIMEOUT_S)
    chaos.restarts_s.append(time.monotonic() - began)
    chaos.events.append(f"OPA ready again at {time.monotonic() - start:.1f} s")
