"""``nexus-policy demo``: the whole flow on one machine, with real OPA and Envoy.

1. Keys (kept in ``.nexus/keys``) and throwaway demo API keys (an overlay that
   binds fresh keys to the example bundle's roles; the plain keys never leave
   this process).
2. The control plane (SQLite, in-process spend counters) on a free port.
3. ``bundles/gateway`` built, tested, signed and published.
4. One region (eu-west-1) with an enforcer: Envoy + OPA, polling both bundles.
5. Scripted gateway requests through Envoy, one per concern, allow and deny.
6. Usage reported until tenants cross their soft and hard caps; the time from
   the crossing report to the first refusal is measured.
7. A table of every decision with its reasons; the exit code says whether
   every decision was the expected one.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from nexus_audit.coverage import coverage
from nexus_audit.evidence import EvidenceError, export
from nexus_audit.evidence import verify as evidence_verify
from nexus_audit.service import AuditLog, LeafNotFoundError
from nexus_audit.settings import AuditSettings
from nexus_audit.verify import verify_log
from nexus_control import outbox
from nexus_control import rollout as rollout_engine
from nexus_control.api.app import create_app, create_control_plane
from nexus_control.approval import issue_approval
from nexus_control.bundle import (
    DATA_PATH,
    BuildOptions,
    BuiltBundle,
    build_bundle,
    canonical_json,
    read_bundle_bytes,
)
from nexus_control.client import ControlPlaneClient
from nexus_control.keys import (
    KeyPaths,
    init_audit_keys,
    init_keys,
    load_approval_key,
    load_signing_key,
    public_pem,
)
from nexus_control.opa import Opa
from nexus_control.regions import fleet_yaml
from nexus_control.server import ServerThread
from nexus_control.service import ControlPlane
from nexus_control.settings import ControlSettings
from nexus_control.tables import BundleRevision
from nexus_control.tokens import Role, create_token
from nexus_control.toolchain import find_envoy, find_opa
from nexus_dataplane.process import free_port
from nexus_dataplane.stack import EnforcerStack, StackOptions

REGION = "eu-west-1"
BUNDLE_DIR = Path("bundles/gateway")
WORKDIR = Path(".nexus/demo")
KEY_ID = "nexus-bundle-signing"
REFUSAL_DEADLINE_S = 10.0
DEMO_WIDTH = 200

# (binding id, tenant, roles): demo credentials bound to the example's roles.
DEMO_KEYS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("demo-acme-chat", "acme", ("chat-user",)),
    ("demo-acme-agent", "acme", ("agent", "agent-privileged")),
    ("demo-acme-dpo", "acme", ("dpo",)),
    ("demo-globex-chat", "globex", ("chat-user",)),
    ("demo-umbrella-chat", "umbrella", ("chat-user",)),
    ("demo-hooli-chat", "hooli", ("chat-user",)),
    ("demo-stark-agent", "stark", ("agent", "chat-user", "data-steward")),
    ("demo-wayne-chat", "wayne", ("chat-user",)),
)


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
    approval_key_path: Path
    outcomes: list[Outcome] = field(default_factory=list)
    decisions: set[str] = field(default_factory=set)

    def seen(self, response: httpx.Response) -> httpx.Response:
        """Remember the decision behind a gateway answer (every one is audited)."""
        decision_id = response.headers.get("x-nexus-decision-id")
        if decision_id:
            self.decisions.add(decision_id)
        return response

    def send(
        self,
        name: str,
        *,
        key: str | None,
        tenant: str,
        method: str,
        path: str,
        expected: int,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> httpx.Response:
        sent = {"x-nexus-tenant": tenant, **(headers or {})}
        if key is not None:
            sent["authorization"] = f"Bearer {self.keys[key]}"
        response = httpx.request(method, self.gateway + path, headers=sent, json=body, timeout=10)
        self.seen(response)
        self.outcomes.append(
            Outcome(
                name,
                tenant,
                f"{method} {path}",
                expected,
                response.status_code,
                response.headers.get("x-nexus-decision-id", "")[:8],
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
            for h in ("x-nexus-route-model", "x-nexus-prompt-version")
            if h in forwarded
        ]
        warning = response.headers.get("x-nexus-budget-warning")
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


def _credentials(overlay: Path) -> dict[str, str]:
    """Fresh API keys bound to the example's roles; only their hashes are written."""
    overlay.mkdir(parents=True, exist_ok=True)
    plain: dict[str, str] = {}
    lines = ["apiVersion: policy.nexus.ai/v1", "kind: RBAC", "bindings:"]
    for key_id, tenant, roles in DEMO_KEYS:
        plain[key_id] = "nx_" + secrets.token_urlsafe(32)
        digest = hashlib.sha256(plain[key_id].encode()).hexdigest()
        for role in roles:
            lines += [
                f"  - tenant: {tenant}",
                f"    role: {role}",
                "    apiKeys:",
                f"      - id: {key_id}",
                f"        sha256: {digest}",
            ]
    (overlay / "demo-credentials.yaml").write_text("\n".join(lines) + "\n")
    return plain


def _chat(model: str, **extra: str) -> dict[str, str]:
    return {"x-nexus-model": model, **extra}


def _scenarios(demo: Demo) -> None:
    now = datetime.now(UTC)
    chat = "/v1/chat/completions"
    demo.send(
        "chat, rollout picks the model",
        key="demo-acme-chat",
        tenant="acme",
        method="POST",
        path=chat,
        expected=200,
        headers=_chat("chat-default"),
        body={"messages": [{"role": "user", "content": "hello"}]},
    )
    demo.send(
        "no credential",
        key=None,
        tenant="acme",
        method="POST",
        path=chat,
        expected=401,
        headers=_chat("gpt-4o"),
    )
    demo.send(
        "key of another tenant",
        key="demo-acme-chat",
        tenant="globex",
        method="POST",
        path=chat,
        expected=403,
        headers=_chat("gpt-4o"),
    )
    demo.send(
        "US tenant in an EU region",
        key="demo-globex-chat",
        tenant="globex",
        method="POST",
        path=chat,
        expected=403,
        headers=_chat("gpt-4o"),
    )
    demo.send(
        "suspended tenant",
        key="demo-wayne-chat",
        tenant="wayne",
        method="POST",
        path=chat,
        expected=403,
        headers=_chat("gpt-4o"),
    )
    demo.send(
        "free plan asks an enterprise model",
        key="demo-umbrella-chat",
        tenant="umbrella",
        method="POST",
        path=chat,
        expected=403,
        headers=_chat("gpt-4.1"),
    )
    demo.send(
        "override routes stark to gpt-4.1",
        key="demo-stark-agent",
        tenant="stark",
        method="POST",
        path=chat,
        expected=200,
        headers=_chat(
            "chat-default", **{"x-nexus-prompt": "support-agent", "x-nexus-subject": "customer-17"}
        ),
    )
    demo.send(
        "retired prompt version",
        key="demo-stark-agent",
        tenant="stark",
        method="POST",
        path=chat,
        expected=400,
        headers=_chat("gpt-4o", **{"x-nexus-prompt": "support-agent@1"}),
    )

    search = "/v1/tools/web-search:invoke"
    demo.send(
        "chat user may not call tools",
        key="demo-acme-chat",
        tenant="acme",
        method="POST",
        path=search,
        expected=403,
        body={"arguments": {"query": "weather"}},
    )
    demo.send(
        "agent calls a low-risk tool",
        key="demo-acme-agent",
        tenant="acme",
        method="POST",
        path=search,
        expected=200,
        body={"arguments": {"query": "weather"}},
    )
    demo.send(
        "arguments break the tool's schema",
        key="demo-acme-agent",
        tenant="acme",
        method="POST",
        path=search,
        expected=400,
        body={"arguments": {"q": 1}},
    )

    refund = "/v1/tools/payment-refund:invoke"
    arguments = {"paymentId": "pay_8812", "amountCents": 1999, "currency": "EUR"}
    demo.send(
        "critical tool without approval",
        key="demo-acme-agent",
        tenant="acme",
        method="POST",
        path=refund,
        expected=403,
        body={"arguments": arguments},
    )
    approval = issue_approval(
        load_approval_key(demo.approval_key_path),
        tenant="acme",
        tool="payment-refund",
        arguments=arguments,
        approver="carol@acme.example",
        ttl_s=120,
    )
    demo.send(
        "critical tool with a human approval",
        key="demo-acme-agent",
        tenant="acme",
        method="POST",
        path=refund,
        expected=200,
        body={"arguments": arguments},
        headers={"x-nexus-approval": approval.token},
    )
    demo.send(
        "approval replayed for other arguments",
        key="demo-acme-agent",
        tenant="acme",
        method="POST",
        path=refund,
        expected=403,
        body={"arguments": {**arguments, "amountCents": 99999}},
        headers={"x-nexus-approval": approval.token},
    )

    def created(days: int) -> dict[str, str]:
        return {
            "x-nexus-record-created": (now - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
        }

    demo.send(
        "read a 10-day-old chat",
        key="demo-acme-chat",
        tenant="acme",
        method="GET",
        path="/v1/chats/c-1001",
        expected=200,
        headers=created(10),
    )
    demo.send(
        "read past acme's 30-day retention",
        key="demo-acme-chat",
        tenant="acme",
        method="GET",
        path="/v1/chats/c-0007",
        expected=410,
        headers=created(45),
    )
    demo.send(
        "DPO erases a data subject",
        key="demo-acme-dpo",
        tenant="acme",
        method="DELETE",
        path="/v1/subjects/subj-42",
        expected=200,
    )
    demo.send(
        "chat user may not erase",
        key="demo-hooli-chat",
        tenant="hooli",
        method="DELETE",
        path="/v1/subjects/subj-42",
        expected=403,
    )
    demo.send(
        "delete under a legal hold",
        key="demo-stark-agent",
        tenant="stark",
        method="DELETE",
        path="/v1/chats/c-77",
        expected=403,
    )
    demo.send(
        "unknown route",
        key="demo-acme-chat",
        tenant="acme",
        method="GET",
        path="/v1/admin",
        expected=404,
    )


def _report_usage(
    api: httpx.Client, tenant: str, cost: float, model: str = "gpt-4o"
) -> dict[str, Any]:
    response = api.post(
        "/v1/usage",
        json={
            "request_id": f"demo-{uuid.uuid4()}",
            "tenant": tenant,
            "model": model,
            "feature": "support-chat",
            "tokens": 1_200,
            "cost_usd": cost,
        },
    )
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def _until(check: Callable[[], bool], deadline_s: float) -> float | None:
    """Seconds until ``check`` is true, polling quickly; None if it never was."""
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        if check():
            return time.monotonic() - start
        time.sleep(0.05)
    return None


def _budgets(demo: Demo, usage: httpx.Client) -> list[str]:
    notes = []
    chat = "/v1/chat/completions"

    def status(key: str, tenant: str, model: str = "gpt-4o") -> httpx.Response:
        return demo.seen(
            httpx.post(
                demo.gateway + chat,
                headers={
                    "authorization": f"Bearer {demo.keys[key]}",
                    "x-nexus-tenant": tenant,
                    "x-nexus-model": model,
                },
                timeout=10,
            )
        )

    # acme: 82 % of its $50,000 cap -> soft-cap warning, still allowed.
    _report_usage(usage, "acme", 41_000.0)
    waited = _until(
        lambda: "x-nexus-budget-warning" in status("demo-acme-chat", "acme").headers,
        REFUSAL_DEADLINE_S,
    )
    notes.append(
        f"acme soft-cap warning visible {waited:.2f} s after the usage report"
        if waited is not None
        else "acme soft-cap warning not seen"
    )
    demo.send(
        "over the soft cap: warned, allowed",
        key="demo-acme-chat",
        tenant="acme",
        method="POST",
        path=chat,
        expected=200,
        headers=_chat("gpt-4o"),
    )

    # hooli: cap $8,000, refuse at the hard cap.
    _report_usage(usage, "hooli", 7_900.0)
    crossing = time.monotonic()
    _report_usage(usage, "hooli", 150.0)
    waited = _until(
        lambda: status("demo-hooli-chat", "hooli").status_code == 429, REFUSAL_DEADLINE_S
    )
    notes.append(
        f"hooli crossed its hard cap; first refusal {time.monotonic() - crossing:.2f} s "
        "after the report"
        if waited is not None
        else "hooli was not refused in time"
    )
    demo.send(
        "over the hard cap: refused",
        key="demo-hooli-chat",
        tenant="hooli",
        method="POST",
        path=chat,
        expected=429,
        headers=_chat("gpt-4o"),
    )

    # umbrella: cap $50 with disable on the hard cap.
    repeated = f"demo-{uuid.uuid4()}"
    for _ in range(2):  # the same report twice counts once
        usage.post(
            "/v1/usage",
            json={
                "request_id": repeated,
                "tenant": "umbrella",
                "model": "gpt-4o-mini",
                "tokens": 10,
                "cost_usd": 30.0,
            },
        )
    result = _report_usage(usage, "umbrella", 25.0, model="gpt-4o-mini")
    notes.append(
        f"umbrella: a repeated report counted once; now at {result['ratio']:.0%}, "
        f"disabled={result['disabled']}"
    )
    _until(
        lambda: status("demo-umbrella-chat", "umbrella", "gpt-4o-mini").status_code == 403,
        REFUSAL_DEADLINE_S,
    )
    demo.send(
        "tenant disabled at its hard cap",
        key="demo-umbrella-chat",
        tenant="umbrella",
        method="POST",
        path=chat,
        expected=403,
        headers=_chat("gpt-4o-mini"),
    )
    return notes


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


def unactivatable_revision(good: bytes, opa: Opa, signing_key: Path) -> tuple[str, bytes]:
    """A correctly signed revision that OPA will refuse to activate.

    Its manifest also claims ``nexus_state``, the state bundle's root; OPA
    refuses overlapping roots when it activates. The control plane's publish
    check refuses such a manifest, so the demo and the tests store it directly,
    standing in for a revision that passed every check and still fails in the
    field.
    """
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "stage"
        contents = read_bundle_bytes(good)
        for name, module in contents.modules.items():
            (stage / name).parent.mkdir(parents=True, exist_ok=True)
            (stage / name).write_bytes(module)
        (stage / "nexus" / "config").mkdir(parents=True, exist_ok=True)
        (stage / DATA_PATH).write_bytes(canonical_json(contents.data["nexus"]["config"]))
        revision = hashlib.sha256(good + b"unactivatable").hexdigest()
        manifest = {
            **contents.manifest,
            "revision": revision,
            "roots": [*contents.manifest["roots"], "nexus_state"],
        }
        (stage / ".manifest").write_bytes(canonical_json(manifest))
        out = Path(tmp) / "bad.tar.gz"
        opa.build_signed(stage, out, signing_key=signing_key, key_id=KEY_ID)
        return revision, out.read_bytes()


DEMO_REGIONS = (("eu-west-1", "eu", 0), ("eu-central-1", "eu", 1), ("us-east-1", "us", 2))
DEMO_SOAK_S = 1


def _fleet_file(path: Path) -> Path:
    path.write_text(
        fleet_yaml(
            [
                (region, jurisdiction, wave, [f"{region}-1"])
                for region, jurisdiction, wave in DEMO_REGIONS
            ],
            soak_s=DEMO_SOAK_S,
            activation_deadline_s=30,
            stale_after_s=20,
        )
    )
    return path


@dataclass
class DemoRun:
    """The demo's moving parts, started in order and stopped in reverse."""

    out: Console
    settings: ControlSettings
    opa: Opa
    keys: KeyPaths
    server: ServerThread | None = None
    plane: ControlPlane | None = None
    audit: AuditLog | None = None
    stacks: list[EnforcerStack] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)

    def api(self, role: str) -> ControlPlaneClient:
        assert self.server is not None
        return ControlPlaneClient(self.server.url, self.tokens[role])

    def start(self) -> None:
        self.plane = create_control_plane(self.settings, opa=self.opa)
        self.audit = AuditLog.from_settings(_audit_settings(self.settings))
        with self.plane.db.session() as session:
            for role, name in (
                (Role.AUTHOR, "alice"),
                (Role.APPROVER, "bob"),
                (Role.OPERATOR, "olivia"),
                (Role.GATEWAY, "gateway"),
            ):
                self.tokens[role.value], _ = create_token(session, name=name, role=role)
            self.tokens["compliance"], _ = create_token(
                session, name="carmen", role=Role.COMPLIANCE
            )
            for region, _, _ in DEMO_REGIONS:
                self.tokens[region], _ = create_token(
                    session, name=f"{region}-enforcers", role=Role.ENFORCER, region=region
                )
        self.server = ServerThread(create_app(self.plane, self.audit), "127.0.0.1", free_port())
        self.server.start()
        pem = public_pem(load_signing_key(self.keys.signing))
        for region, _, wave in DEMO_REGIONS:
            stack = EnforcerStack(
                StackOptions(
                    region=region,
                    control_plane_url=self.server.url,
                    token=self.tokens[region],
                    key_id=KEY_ID,
                    verification_key_pem=pem,
                    workdir=WORKDIR / "dataplane",
                    opa_bin=self.opa.binary,
                    envoy_bin=find_envoy(),
                    with_envoy=wave == 0,
                    long_poll_timeout_s=10,
                    audit_url=self.server.url,
                ),
                count=1,
            )
            stack.start(wait_for_bundles=False)
            self.stacks.append(stack)

    def stop(self) -> None:
        for stack in self.stacks:
            stack.stop()
        if self.server is not None:
            self.server.stop()
        if self.plane is not None:
            self.plane.close()
        if self.audit is not None:
            self.audit.close()

    def publish(self, built: BuiltBundle) -> dict[str, Any]:
        with self.api("author") as api:
            published: dict[str, Any] = api.publish(built.path.read_bytes())
        rollout = published["rollout"]
        widening = [c for c in published["diff"]["changes"] if c["effect"] == "widens"]
        self.out.print(
            f"  alice published {published['revision'][:12]}: "
            f"{len(published['diff']['changes'])} change(s), {len(widening)} widening access"
        )
        if rollout["state"] == "pending_approval":
            with self.api("approver") as api:
                api.post(f"/v1/rollouts/{rollout['id']}/approve", {"comment": "reviewed"})
            self.out.print("  it widens access, so it waited for a second person: bob approved it")
        return published

    def follow(self, rollout_id: int, timeout_s: float = 60) -> dict[str, Any]:
        """Print the rollout's status each time it moves, until it ends."""
        from nexus_control.cli_rollout import status_view

        seen: tuple[str, int] | None = None
        deadline = time.monotonic() + timeout_s
        with self.api("operator") as api:
            while time.monotonic() < deadline:
                status = api.get("/v1/rollouts/status")
                current = status["rollout"]
                key = (current["state"], current["wave"])
                if key != seen:
                    self.out.print(status_view(status))
                    seen = key
                if current["id"] == rollout_id and current["state"] in (
                    "completed",
                    "halted",
                    "rolled_back",
                ):
                    result: dict[str, Any] = api.get(f"/v1/rollouts/{rollout_id}")
                    return result
                time.sleep(0.2)
        raise RuntimeError(f"rollout {rollout_id} did not finish in {timeout_s:.0f} s")

    def inject_unactivatable(self, good_revision: str) -> int:
        assert self.plane is not None
        with self.plane.db.session() as session:
            row = session.get(BundleRevision, good_revision)
            assert row is not None
            revision, archive = unactivatable_revision(row.archive, self.opa, self.keys.signing)
            session.add(
                BundleRevision(
                    revision=revision,
                    bundle="gateway",
                    archive=archive,
                    sha256=hashlib.sha256(archive).hexdigest(),
                    size=len(archive),
                    manifest={"revision": revision},
                    config=row.config,
                    git_commit=None,
                    author="alice",
                    published_at=datetime.now(UTC),
                )
            )
            session.flush()
            opened, changed = rollout_engine.start(
                session,
                self.plane.fleet,
                revision,
                author="alice",
                diff={},
                needs_approval=False,
            )
            rollout_id = opened.id
        self.plane.notifier.notify(f"{region}/nexus" for region in changed)
        return rollout_id


def _audit_settings(settings: ControlSettings) -> AuditSettings:
    audit = AuditSettings(
        database_url=f"sqlite:///{WORKDIR / 'audit.db'}",
        log_key_file=settings.keys_dir / "audit-log.key",
        master_key_file=settings.keys_dir / "audit-master.key",
        checkpoint_every_s=2.0,
    )
    init_audit_keys(settings.keys_dir, audit)
    return audit


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

    waited = _until(lambda: recorded() == len(demo.decisions), 30.0)
    count = recorded()
    out.print(
        f"  {count}/{len(demo.decisions)} decisions made through Envoy are leaves of the log"
        + ("" if waited is not None else " [red](missing after 30 s)[/red]")
    )
    _until(lambda: run.plane is not None and run.plane.drain_outbox(audit) == 0, 10.0)
    with run.plane.db.session() as session:
        events = len(outbox.events(session))
        pending = len(outbox.pending(session))
    out.print(
        f"  {events - pending}/{events} control-plane events "
        "(publications, approvals, rollout steps) appended"
    )

    report = verify_log(audit.db, audit.verifier)
    out.print(
        f"  audit verify: {report.size} leaves, {report.checkpoints} signed checkpoints, "
        f"root {report.root_hash.hex()[:16]}… recomputed in {report.seconds:.2f} s"
    )
    now = datetime.now(UTC)
    soc2 = coverage(audit, "soc2", now - timedelta(days=1), now + timedelta(minutes=1))
    evidenced = [c for c in soc2.controls if c.evidenced]
    out.print(
        f"  SOC 2 coverage today: {len(evidenced)} of {len(soc2.controls)} criteria have evidence "
        f"({', '.join(c.control.id for c in evidenced[:8])}{'…' if len(evidenced) > 8 else ''})"
    )
    archive = WORKDIR / "evidence-soc2-CC6.1.tar.gz"
    summary = export(
        audit,
        framework="soc2",
        control="CC6.1",
        since=now - timedelta(days=1),
        until=now + timedelta(minutes=1),
        out=archive,
        actor="carmen",
    )
    public_key = str(audit.verifier)
    verified = evidence_verify(archive, public_key)
    out.print(
        f"  evidence for SOC2:CC6.1 → {archive} ({summary.records} records); "
        f"verified offline with the log key alone: {verified.records} records, "
        "inclusion proofs and the signed checkpoint"
    )
    tampered = bytearray(archive.read_bytes())
    tampered[len(tampered) // 2] ^= 0x01
    try:
        evidence_verify(bytes(tampered), public_key)
        out.print("  [red]a tampered archive verified[/red]")
        return False
    except EvidenceError as exc:
        out.print(f"  one flipped bit in the archive: refused ({exc})")
    return count == len(demo.decisions) and pending == 0


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
        fleet_file=_fleet_file(WORKDIR / "fleet.yaml"),
        dist_dir=WORKDIR / "dist",
    )
    keys = init_keys(settings.keys_dir)
    plain = _credentials(WORKDIR / "credentials")
    out.print(
        f"[bold]1[/bold] keys in {settings.keys_dir}; "
        "demo API keys generated (only their hashes go into the bundle)"
    )
    opa = Opa(find_opa(settings))
    options = BuildOptions(keys.signing, KEY_ID, keys.approval, settings.dist_dir)
    built = build_bundle(BUNDLE_DIR, opa, options, overlays=[WORKDIR / "credentials"])
    out.print(
        f"[bold]2[/bold] built {built.path.name}: {built.tests_run} Rego tests passed, "
        f"signed ({KEY_ID})"
    )
    run = DemoRun(out, settings, opa, keys)
    try:
        run.start()
        assert run.server is not None
        out.print(
            f"[bold]3[/bold] control plane on {run.server.url}; enforcers: "
            + ", ".join(
                f"{s.enforcers[0].id}{' (Envoy + OPA)' if s.options.with_envoy else ' (OPA)'}"
                for s in run.stacks
            )
        )
        out.print("[bold]4[/bold] first publication, rolled out wave by wave")
        first = run.publish(built)
        run.follow(first["rollout"]["id"])
        gateway = run.stacks[0].enforcers[0].gateway_url
        out.print(f"[bold]5[/bold] gateway requests through Envoy {gateway} in {REGION}")
        demo = Demo(out, gateway, plain, keys.approval)
        _scenarios(demo)
        with httpx.Client(
            base_url=run.server.url,
            headers={"authorization": f"Bearer {run.tokens['gateway']}"},
            timeout=10,
        ) as usage:
            notes = _budgets(demo, usage)
        out.print(_table(demo.outcomes))
        for note in notes:
            out.print(f"  • {note}")

        out.print(
            "[bold]6[/bold] a routine change (chat history kept 300 days): no approval needed"
        )
        routine = build_bundle(_narrower(300), opa, options, overlays=[WORKDIR / "credentials"])
        second = run.publish(routine)
        run.follow(second["rollout"]["id"])
        out.print(
            "[bold]7[/bold] a revision OPA refuses to activate "
            "(simulated: its manifest claims the state bundle's root)"
        )
        bad = run.inject_unactivatable(second["revision"])
        halted = run.follow(bad)
        reached = {e["region"] for e in halted["history"] if e["action"] == "wave_started"}
        out.print(
            f"  {halted['state']}: {halted['reason']}\n"
            f"  regions that ever received it: {', '.join(sorted(reached))}; "
            "all run their last good revision again"
        )

        out.print("[bold]8[/bold] the audit trail")
        audited = _show_audit(run, demo, out)

        failed = [o for o in demo.outcomes if not o.ok]
        healthy = halted["state"] == "halted" and reached == {REGION}
        out.print(
            f"{len(demo.outcomes) - len(failed)}/{len(demo.outcomes)} decisions as expected; "
            f"bad revision {'contained in the canary' if healthy else 'NOT contained'}; "
            f"{time.monotonic() - started:.1f} s"
        )
        return 1 if failed or not healthy or not audited else 0
    finally:
        run.stop()
