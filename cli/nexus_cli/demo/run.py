"""The demo's run: every part started for real, each step printed, every outcome checked.

The steps are those of `nexus_cli.demo`; the requests are the table in
`nexus_cli.demo.scenarios`. The exit code says whether every decision was the
expected one, the bad revision was contained, and the audit trail is whole.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from nexus_audit.coverage import coverage
from nexus_audit.evidence import EvidenceError, export_archive, verify_archive
from nexus_audit.service import LeafNotFoundError
from nexus_audit.verify import verify_log
from nexus_cli.client import ApiCallError
from nexus_cli.demo.anomaly import show_anomaly
from nexus_cli.demo.burst import show_burst
from nexus_cli.demo.failover import show_failover
from nexus_cli.demo.faults import rotate_before_trust, undo_rotation
from nexus_cli.demo.polling import until
from nexus_cli.demo.ratelimits import show_rate_limit
from nexus_cli.demo.scenarios import (
    BUDGET_STEPS,
    DEMO_KEYS,
    SCENARIOS,
    Approval,
    BudgetStep,
    Scenario,
)
from nexus_cli.demo.shadowing import shadow_step
from nexus_cli.demo.stack import (
    BUNDLE_DIR,
    CONTROL_PLANE_KEYS,
    DEMO_TENANTS,
    DEMO_WIDTH,
    DEV_KEY_ID,
    REFUSAL_DEADLINE_S,
    REGION,
    SHADOW_REGION,
    USAGE_TOKENS,
    WORKDIR,
    DemoRun,
    fleet_file,
)
from nexus_cli.demo.traces import show_trace, start_jaeger
from nexus_contract.wire import (
    APPROVAL_HEADER,
    BUDGET_WARNING_HEADER,
    DECISION_ID_HEADER,
    MODEL_HEADER,
    PROMPT_VERSION_HEADER,
    RECORD_TOKEN_HEADER,
    ROUTE_MODEL_HEADER,
    TENANT_HEADER,
)
from nexus_control.access.signing_keys import init_keys
from nexus_control.authoring.bundle import BuildOptions, build_bundle
from nexus_control.authoring.credentials import throwaway_keys
from nexus_control.authoring.opa import Opa
from nexus_control.settings import ControlSettings
from nexus_control.store import outbox
from nexus_dataplane.records import RecordFacts, RecordSigner, create_dev_record_signer
from nexus_runtime.toolchain import find_opa
from nexus_runtime.tracing import TracingSettings, configure_tracing, shutdown_tracing, tracer

__all__ = ["run_demo"]


@dataclass
class Outcome:
    name: str
    tenant: str
    request: str
    expected: int
    status: int
    decision_id: str
    detail: str

    @property
    def ok(self) -> bool:
        return self.expected == self.status


@dataclass
class Demo:
    out: Console
    gateway: str
    keys: dict[str, str]
    approve: Callable[[Approval], str]
    """Asks the control plane (as an approver) for a tool approval; the token."""
    records: RecordSigner
    """The demo chat store: signs each read or delete's record facts."""
    outcomes: list[Outcome] = field(default_factory=list)
    decisions: set[str] = field(default_factory=set)

    def seen(self, response: httpx.Response) -> httpx.Response:
        """Remember the decision behind a gateway answer (every one is audited)."""
        decision_id = response.headers.get(DECISION_ID_HEADER)
        if decision_id:
            self.decisions.add(decision_id)
        return response

    def send(self, scenario: Scenario) -> httpx.Response:
        """Send one scenario's request through Envoy and record its outcome."""
        sent = {TENANT_HEADER: scenario.tenant, **scenario.headers}
        if scenario.key is not None:
            sent["authorization"] = f"Bearer {self.keys[scenario.key]}"
        if scenario.record is not None:
            data_class, days = scenario.record
            facts = RecordFacts(
                record_id=scenario.path.rsplit("/", 1)[-1],
                tenant=scenario.tenant,
                data_class=data_class,
                created_at=datetime.now(UTC) - timedelta(days=days),
            )
            sent[RECORD_TOKEN_HEADER] = self.records.token(facts)
        if scenario.approval is not None:
            sent[APPROVAL_HEADER] = self.approve(scenario.approval)
        response = httpx.request(
            scenario.method,
            self.gateway + scenario.path,
            headers=sent,
            json=dict(scenario.body) if scenario.body is not None else None,
            timeout=10,
        )
        self.seen(response)
        self.outcomes.append(
            Outcome(
                scenario.name,
                scenario.tenant,
                f"{scenario.method} {scenario.path}",
                scenario.expected,
                response.status_code,
                response.headers.get(DECISION_ID_HEADER, "")[:8],
                _detail(response),
            )
        )
        return response


def _detail(response: httpx.Response) -> str:
    if response.status_code == httpx.codes.OK:
        try:
            forwarded = response.json().get("headers", {})
        except ValueError:
            forwarded = {}
        parts = [
            f"{h.removeprefix('x-nexus-')}={forwarded[h]}"
            for h in (ROUTE_MODEL_HEADER, PROMPT_VERSION_HEADER)
            if h in forwarded
        ]
        warning = response.headers.get(BUDGET_WARNING_HEADER)
        if warning:
            parts.append(f"budget-warning: {warning}")
        if "authorization" in forwarded:
            parts.append("[red]credential leaked upstream[/red]")
        return ", ".join(parts) or "allowed"
    try:
        reasons = response.json().get("reasons", [])
    except ValueError:
        return response.text[:120]
    return "; ".join(
        f"{r['rule'].removeprefix('nexus.')}: {r['message']} [{', '.join(r['controls'])}]"
        for r in reasons
    )


def _report_usage(
    api: httpx.Client,
    tenant: str,
    cost: float,
    model: str,
    *,
    request_id: str | None = None,
    feature: str | None = None,
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "request_id": request_id or f"demo-{uuid.uuid4()}",
        "tenant": tenant,
        "model": model,
        "tokens": USAGE_TOKENS,
        "cost_usd": cost,
    }
    if feature is not None:
        report["feature"] = feature
    response = api.post("/v1/usage", json=report)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def _budget_step(demo: Demo, usage: httpx.Client, step: BudgetStep) -> str:
    """Report the step's usage, wait until enforcers act on it, send its request; a note."""

    def probe() -> httpx.Response:
        return demo.seen(
            httpx.post(
                demo.gateway + "/v1/chat/completions",
                headers={
                    "authorization": f"Bearer {demo.keys[step.key]}",
                    TENANT_HEADER: step.tenant,
                    MODEL_HEADER: step.model,
                },
                timeout=10,
            )
        )

    reports = list(step.reports_usd)
    result: dict[str, Any] = {}
    if step.repeat_first:
        repeated = f"demo-{uuid.uuid4()}"
        for _ in range(2):  # the same report twice counts once
            _report_usage(
                usage, step.tenant, reports[0], step.model, request_id=repeated, feature=None
            )
        reports = reports[1:]
    crossing = time.monotonic()
    for cost in reports:
        crossing = time.monotonic()
        result = _report_usage(usage, step.tenant, cost, step.model, feature=step.feature)
    checks: dict[str, Callable[[], bool]] = {
        "warning": lambda: BUDGET_WARNING_HEADER in probe().headers,
        "refusal": lambda: probe().status_code == httpx.codes.TOO_MANY_REQUESTS,
        "disabled": lambda: probe().status_code == httpx.codes.FORBIDDEN,
    }
    waited = until(checks[step.wait_for], REFUSAL_DEADLINE_S)
    demo.send(
        Scenario(
            step.name,
            step.key,
            step.tenant,
            "POST",
            "/v1/chat/completions",
            step.expected,
            {MODEL_HEADER: step.model},
        )
    )
    if step.wait_for == "warning":
        return (
            f"{step.tenant} soft-cap warning visible {waited:.2f} s after the usage report"
            if waited is not None
            else f"{step.tenant} soft-cap warning not seen"
        )
    if step.wait_for == "refusal":
        return (
            f"{step.tenant} crossed its hard cap; first refusal "
            f"{time.monotonic() - crossing:.2f} s after the report"
            if waited is not None
            else f"{step.tenant} was not refused in time"
        )
    return (
        f"{step.tenant}: a repeated report counted once; now at {result['ratio']:.0%}, "
        f"disabled={result['disabled']}"
    )


def _table(outcomes: list[Outcome]) -> Table:
    table = Table(title=f"Decisions through Envoy + OPA in {REGION}", show_lines=False)
    for column, kwargs in (
        ("#", {"justify": "right"}),
        ("scenario", {}),
        ("tenant", {}),
        ("request", {}),
        ("status", {"justify": "right"}),
        ("decision", {}),
        ("reasons / upstream headers", {}),
    ):
        table.add_column(column, **kwargs)  # type: ignore[arg-type]
    for n, o in enumerate(outcomes, 1):
        mark = (
            f"[green]{o.status}[/green]"
            if o.ok
            else f"[red]{o.status} (expected {o.expected})[/red]"
        )
        table.add_row(str(n), o.name, o.tenant, o.request, mark, o.decision_id, o.detail)
    return table


def _show_audit(run: DemoRun, demo: Demo, out: Console) -> bool:
    """Every decision in the Merkle log once; the log verifies; evidence verifies offline."""
    audit = run.audit
    assert audit is not None
    assert run.plane is not None

    def recorded() -> int:
        found = 0
        for decision_id in demo.decisions:
            with contextlib.suppress(LeafNotFoundError):
                audit.leaf(decision_id=decision_id)
                found += 1
        return found

    waited = until(lambda: recorded() == len(demo.decisions), 30.0)
    count = recorded()
    out.print(
        f"  {count}/{len(demo.decisions)} decisions made through Envoy are leaves of the log"
        + ("" if waited is not None else " [red](missing after 30 s)[/red]")
    )
    if waited is None:
        missing = []
        for decision_id in sorted(demo.decisions):
            try:
                audit.leaf(decision_id=decision_id)
            except LeafNotFoundError:
                missing.append(decision_id)
        out.print(f"  [red]not in the log: {', '.join(missing[:5])}[/red]")
    until(lambda: run.plane is not None and run.plane.drain_outbox(audit) == 0, 10.0)
    with run.plane.db.session() as session:
        events = len(outbox.events(session))
        pending = len(outbox.pending(session))
    out.print(
        f"  {events - pending}/{events} control-plane events "
        "(publications, approvals, rollout steps) appended"
    )

    report = verify_log(audit.db, audit.verifier, journal=audit.journal)
    out.print(
        f"  audit verify: {report.size} leaves, {report.checkpoints} signed checkpoints and "
        f"{report.journal_checkpoints} in the journal outside the database, root "
        f"{report.root_hash.hex()[:16]}… recomputed in {report.seconds:.2f} s"
    )
    witnessed = audit.witnessed_checkpoint()
    assert audit.witnesses is not None
    _, cosigners = audit.witnesses.policy.verify(witnessed.published_note)
    out.print(
        f"  checkpoint {witnessed.size} cosigned by {len(cosigners)} witnesses "
        f"({', '.join(sorted(cosigners))}; quorum {audit.witnesses.policy.describe_quorum()})"
    )
    now = datetime.now(UTC)
    soc2 = coverage(audit, "soc2", now - timedelta(days=1), now + timedelta(minutes=1))
    evidenced = [c for c in soc2.controls if c.evidenced]
    out.print(
        f"  SOC 2 coverage today: {len(evidenced)} of {len(soc2.controls)} criteria have evidence "
        f"({', '.join(c.control.id for c in evidenced[:8])}{'…' if len(evidenced) > 8 else ''})"
    )
    archive = WORKDIR / "evidence-soc2-CC6.1.tar.gz"
    summary = export_archive(
        audit,
        framework="soc2",
        control="CC6.1",
        since=now - timedelta(days=1),
        until=now + timedelta(minutes=1),
        out=archive,
        actor="carmen",
        tenant="acme",
    )
    public_key = str(audit.verifier)
    verified = verify_archive(archive, public_key, require_quorum=True)
    out.print(
        f"  evidence for SOC2:CC6.1 of acme → {archive} ({summary.records} records); "
        f"verified offline with the log key alone: {verified.records} records, inclusion "
        f"proofs, and the checkpoint cosigned by {', '.join(verified.cosigners)} "
        f"(quorum {verified.quorum}, from the archive's tlog-policy)"
    )
    if len(verified.cosigners) < 2:
        out.print("  [red]the evidence checkpoint lacks two witnesses[/red]")
        return False
    tampered = bytearray(archive.read_bytes())
    tampered[len(tampered) // 2] ^= 0x01
    try:
        verify_archive(bytes(tampered), public_key)
        out.print("  [red]a tampered archive verified[/red]")
        return False
    except EvidenceError as exc:
        out.print(f"  one flipped bit in the archive: refused ({exc})")
    return count == len(demo.decisions) and pending == 0


def _lowered_risk(tool: str) -> Path:
    """The example bundle with ``tool``'s risk lowered to low (it no longer needs an approval)."""
    target = WORKDIR / f"gateway-{tool}-low"
    shutil.copytree(BUNDLE_DIR, target)
    (target / "bundle.yaml").write_text(
        (target / "bundle.yaml").read_text().replace("../../rego", str(Path("rego").resolve()))
    )
    tools = target / "tools.yaml"
    head, tail = tools.read_text().split(f"  - id: {tool}\n", 1)
    block, rest = tail.split("  - id:", 1) if "  - id:" in tail else (tail, None)
    block = re.sub(r"risk: \w+", "risk: low", block, count=1)
    tools.write_text(
        head + f"  - id: {tool}\n" + block + ("" if rest is None else "  - id:" + rest)
    )
    return target


def _narrower(days: int) -> Path:
    """The example bundle with chat history kept ``days`` instead of 365 (a routine change)."""
    target = WORKDIR / f"gateway-{days}"
    shutil.copytree(BUNDLE_DIR, target)
    (target / "bundle.yaml").write_text(
        (target / "bundle.yaml").read_text().replace("../../rego", str(Path("rego").resolve()))
    )
    retention = target / "retention.yaml"
    retention.write_text(
        retention.read_text().replace(
            "  - dataClass: chat-history\n    days: 365",
            f"  - dataClass: chat-history\n    days: {days}",
        )
    )
    return target


def run_demo(out: Console, err: Console) -> int:
    started = time.monotonic()
    if not out.is_terminal:
        out = Console(width=DEMO_WIDTH, highlight=False, soft_wrap=False)
    if WORKDIR.exists():
        shutil.rmtree(WORKDIR)
    WORKDIR.mkdir(parents=True)
    settings = ControlSettings(
        database_url=f"sqlite:///{WORKDIR / 'control.db'}",
        fleet_file=fleet_file(WORKDIR / "fleet.yaml"),
        dist_dir=WORKDIR / "dist",
        keys_dir=CONTROL_PLANE_KEYS,
        signing_key_file=None,
        approval_key_file=None,
    )
    dev = init_keys(ControlSettings().keys_dir)
    plain = throwaway_keys(DEMO_KEYS, WORKDIR / "credentials")
    records = create_dev_record_signer(WORKDIR / "credentials", DEMO_TENANTS)
    credentials = [WORKDIR / "credentials"]
    out.print(
        f"[bold]1[/bold] the control plane's keys in {CONTROL_PLANE_KEYS} (its file key "
        f"provider); alice's dev key in {dev.signing.parent}; demo API keys generated "
        "(only their hashes go into the bundle)"
    )
    opa = Opa(find_opa(settings.opa_bin))
    jaeger = start_jaeger(WORKDIR / "jaeger")
    if jaeger is not None:
        # Before the engines and clients exist: the instrumentations patch them.
        endpoint = jaeger.tracing().http_endpoint
        configure_tracing("nexus-control-plane", TracingSettings(otlp_endpoint=endpoint))
    run = DemoRun(out, settings, opa, dev, tracing=jaeger.tracing() if jaeger else None)
    try:
        run.start()
        assert run.server is not None
        jwks = run.approval_jwks(WORKDIR / "approval.jwks.json")
        options = BuildOptions(dev.signing, DEV_KEY_ID, jwks, settings.dist_dir)
        built = build_bundle(BUNDLE_DIR, opa, options, overlays=credentials)
        out.print(
            f"[bold]2[/bold] alice builds locally: {built.tests_run} Rego tests passed, revision "
            f"{built.revision[:12]}, signed with her dev key ({DEV_KEY_ID}): no enforcer trusts it"
        )
        out.print(
            f"[bold]3[/bold] control plane on {run.server.url}; enforcers: "
            + ", ".join(
                f"{s.enforcers[0].id}{' (Envoy + OPA)' if s.options.with_envoy else ' (OPA)'}"
                for s in run.stacks
            )
        )
        out.print("[bold]4[/bold] first publication, rolled out wave by wave")
        first = run.publish(BUNDLE_DIR, credentials, expected=built.revision)
        run.follow(first["rollout"]["id"])
        gateway = run.stacks[0].enforcers[0].gateway_url
        out.print(f"[bold]5[/bold] gateway requests through Envoy {gateway} in {REGION}")
        demo = Demo(out, gateway, plain, run.issue_approval, records)
        for scenario in SCENARIOS:
            demo.send(scenario)
        traced: tuple[str, str] | None = None
        if jaeger is not None:
            # The demo's own span is the trace's root: its instrumented httpx sends the
            # request's traceparent, and Envoy, OPA and the upstream continue the trace.
            with tracer("nexus-demo").start_as_current_span("demo chat request") as span:
                chat = SCENARIOS[0]
                answered = demo.send(replace(chat, name=f"{chat.name} (traced)"))
            trace_id = f"{span.get_span_context().trace_id:032x}"
            traced = (trace_id, answered.headers.get(DECISION_ID_HEADER, ""))
        with httpx.Client(
            base_url=run.server.url,
            headers={"authorization": f"Bearer {run.tokens['gateway']}"},
            timeout=10,
        ) as usage:
            notes = [_budget_step(demo, usage, step) for step in BUDGET_STEPS]
        failed_over, failover_notes = show_failover(run, gateway, plain, demo.seen)
        notes += failover_notes
        flagged, anomaly_notes = show_anomaly(run, gateway, plain, demo.seen)
        notes += anomaly_notes
        canary = run.stacks[0].enforcers[0].spec
        limited = show_rate_limit(run, gateway, canary.refusal_log_dir or WORKDIR, plain)
        demo.decisions |= limited.decisions
        notes += limited.notes
        bounded, burst_notes = show_burst(run, gateway, plain, demo.seen)
        notes += burst_notes
        out.print(_table(demo.outcomes))
        for note in notes:
            out.print(f"  • {note}")

        out.print(
            "[bold]6[/bold] a routine change (chat history kept 300 days): no approval needed"
        )
        second = run.publish(_narrower(300), credentials)
        run.follow(second["rollout"]["id"])
        out.print(
            f"[bold]6b[/bold] a routine change (chat history 250 days) shadowed in {SHADOW_REGION}"
            " first: it enters that wave only once its shadow gate passes"
        )
        shadowed = run.publish(_narrower(250), credentials)
        next_wave = Demo(out, run.stacks[1].enforcers[0].gateway_url, plain, run.issue_approval,
                         records)  # fmt: skip
        gated = shadow_step(run, shadowed, lambda: next_wave.send(SCENARIOS[0]), out)
        run.follow(shadowed["rollout"]["id"])
        out.print(
            "[bold]7[/bold] a change its replay gate holds: payment-refund's risk lowered to low"
        )
        held = run.publish(_lowered_risk("payment-refund"), credentials)["rollout"]
        with run.api("author") as api:
            try:
                api.post(f"/v1/rollouts/{held['id']}/override", {"reason": "mine is fine"})
            except ApiCallError as refused:
                out.print(f"  alice may not override her own change's gate ({refused.status})")
            else:
                raise RuntimeError("the author overrode the gate of her own change")
        with run.api("approver") as api:
            released = api.post(
                f"/v1/rollouts/{held['id']}/override",
                {"reason": "refunds are capped upstream now (demo)"},
            )
        out.print(
            f"  bob overrides it with a recorded reason: {released['state']}; "
            "the verdict and the override are audit events (the next publication supersedes it)"
        )
        out.print(
            "[bold]8[/bold] a revision OPA refuses to activate: olivia rotates the bundle-signing "
            "key and activates the new one before any enforcer was told to trust it"
        )
        with run.api("operator") as operator:
            rotation = rotate_before_trust(operator)
        out.print(
            f"  {rotation.premature} signs from now on; the enforcers know only {rotation.previous}"
        )
        third = run.publish(_narrower(200), credentials)
        halted = run.follow(third["rollout"]["id"])
        reached = {e["region"] for e in halted["history"] if e["action"] == "wave_started"}
        out.print(
            f"  {halted['state']}: {halted['reason']}\n"
            f"  regions that ever received it: {', '.join(sorted(reached))}; "
            "all run their last good revision again"
        )
        with run.api("operator") as operator:
            undo_rotation(operator, rotation)
        out.print(
            f"  olivia re-activates {rotation.previous} (still in its rotation window) and "
            f"retires {rotation.premature}; every key change is an audit event"
        )

        out.print("[bold]9[/bold] the audit trail")
        audited = _show_audit(run, demo, out)
        followed = True
        if jaeger is not None and traced is not None:
            out.print("[bold]10[/bold] one request's trace, read back from Jaeger")
            followed = show_trace(jaeger, *traced, out)
        else:
            out.print(
                "traces: Jaeger is not built on this machine; NEXUS_BOOTSTRAP_JAEGER=1 make demo "
                "builds it once (about 6 minutes, cached) and the demo then follows one request "
                "through Envoy and OPA in it"
            )

        failed = [o for o in demo.outcomes if not o.ok]
        healthy = halted["state"] == "halted" and reached == {REGION}
        out.print(
            f"{len(demo.outcomes) - len(failed)}/{len(demo.outcomes)} decisions as expected; "
            f"bad revision {'contained in the canary' if healthy else 'NOT contained'}; "
            f"{time.monotonic() - started:.1f} s"
        )
        out.print(
            f"console: {run.server.url}/console (served during the run; sign in with a role "
            "token). To browse it afterwards: [bold]nexus-policy tokens create --role compliance "
            "--name you[/bold], then [bold]nexus-policy serve[/bold] and open "
            "http://127.0.0.1:8700/console"
        )
        if not flagged:
            out.print("[red]the injected spend anomaly was not held and released[/red]")
        if not limited.ok:
            out.print(
                "[red]vandelay's burst was not rate limited and served again as expected[/red]"
            )
        if not gated:
            out.print("[red]the shadowed revision was not promoted past its shadow gate[/red]")
        if not bounded:
            out.print("[red]the burst near stark's cap overshot its bound[/red]")
        ok = (
            healthy
            and audited
            and followed
            and gated
            and failed_over
            and flagged
            and limited.ok
            and bounded
        )
        return 1 if failed or not ok else 0
    finally:
        run.stop()
        if jaeger is not None:
            shutdown_tracing()
            jaeger.stop()
