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

import hashlib
import secrets
import shutil
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

from nexus_control.api.app import create_app, create_control_plane
from nexus_control.approval import issue_approval
from nexus_control.bundle import BuildOptions, build_bundle
from nexus_control.client import ControlPlaneClient
from nexus_control.keys import init_keys, load_approval_key, load_signing_key, public_pem
from nexus_control.opa import Opa
from nexus_control.server import ServerThread
from nexus_control.settings import ControlSettings
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
        return httpx.post(
            demo.gateway + chat,
            headers={
                "authorization": f"Bearer {demo.keys[key]}",
                "x-nexus-tenant": tenant,
                "x-nexus-model": model,
            },
            timeout=10,
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


def run_demo(out: Console, err: Console) -> int:
    started = time.monotonic()
    if not out.is_terminal:
        out = Console(width=DEMO_WIDTH, highlight=False, soft_wrap=False)
    if WORKDIR.exists():
        shutil.rmtree(WORKDIR)
    WORKDIR.mkdir(parents=True)
    settings = ControlSettings(
        database_url=f"sqlite:///{WORKDIR / 'control.db'}",
        regions=[REGION],
        dist_dir=WORKDIR / "dist",
    )
    keys = init_keys(settings.keys_dir)
    out.print(
        f"[bold]1[/bold] keys in {settings.keys_dir}; "
        "demo API keys generated (hashes only in the bundle)"
    )
    plain = _credentials(WORKDIR / "credentials")

    opa = Opa(find_opa(settings))
    built = build_bundle(
        BUNDLE_DIR,
        opa,
        BuildOptions(keys.signing, KEY_ID, keys.approval, settings.dist_dir),
        overlays=[WORKDIR / "credentials"],
    )
    out.print(
        f"[bold]2[/bold] built {built.path.name}: {built.tests_run} Rego tests passed, "
        f"signed ({KEY_ID})"
    )

    plane = create_control_plane(settings)
    with plane.db.session() as session:
        author, _ = create_token(session, name="demo-author", role=Role.AUTHOR)
        approver, _ = create_token(session, name="demo-approver", role=Role.APPROVER)
        enforcer_token, _ = create_token(
            session, name=f"{REGION}-enforcers", role=Role.ENFORCER, region=REGION
        )
        gateway_token, _ = create_token(session, name="demo-gateway", role=Role.GATEWAY)
    server = ServerThread(create_app(plane), "127.0.0.1", free_port())
    server.start()
    stack: EnforcerStack | None = None
    try:
        with ControlPlaneClient(server.url, author) as api:
            published = api.publish(built.path.read_bytes())
        if published["rollout"]["state"] == "pending_approval":
            with ControlPlaneClient(server.url, approver) as api:
                api.post(
                    f"/v1/rollouts/{published['rollout']['id']}/approve",
                    {"comment": "first publication: everything is new"},
                )
            out.print("  the change widens access: a second person (demo-approver) approved it")
        out.print(
            f"[bold]3[/bold] control plane on {server.url}; "
            f"published revision {published['revision'][:12]}"
        )

        stack = EnforcerStack(
            StackOptions(
                region=REGION,
                control_plane_url=server.url,
                token=enforcer_token,
                key_id=KEY_ID,
                verification_key_pem=public_pem(load_signing_key(keys.signing)),
                workdir=WORKDIR / "dataplane",
                opa_bin=opa.binary,
                envoy_bin=find_envoy(),
            ),
            count=1,
        )
        stack.start(wait_for_bundles=True)
        enforcer = stack.enforcers[0]
        out.print(
            f"[bold]4[/bold] enforcer {enforcer.id}: Envoy {enforcer.gateway_url} → "
            "OPA (ext_authz gRPC), both bundles active"
        )

        demo = Demo(out, enforcer.gateway_url, plain, keys.approval)
        _scenarios(demo)
        with httpx.Client(
            base_url=server.url, headers={"authorization": f"Bearer {gateway_token}"}, timeout=10
        ) as usage:
            notes = _budgets(demo, usage)
        out.print(_table(demo.outcomes))
        for note in notes:
            out.print(f"  • {note}")
        failed = [o for o in demo.outcomes if not o.ok]
        out.print(
            f"{len(demo.outcomes) - len(failed)}/{len(demo.outcomes)} decisions as expected "
            f"in {time.monotonic() - started:.1f} s"
        )
        return 1 if failed else 0
    finally:
        if stack is not None:
            stack.stop()
        server.stop()
        plane.close()
