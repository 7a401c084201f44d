"""A whole enforcement environment for end-to-end tests.

Real parts throughout: the control plane (FastAPI on a thread) over a real
database, the example bundle built and signed with the real OPA, and a
region's enforcers as real OPA + Envoy processes with a stand-in upstream.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from nexus_audit.service import AuditLog
from nexus_audit.settings import AuditSettings
from nexus_cli.client import ControlPlaneClient
from nexus_control.access.signing_keys import (
    KeyPaths,
    init_audit_keys,
    load_signing_key,
    public_pem,
)
from nexus_control.access.tokens import Role, create_token
from nexus_control.api.app import create_app, create_control_plane
from nexus_control.authoring.bundle import BuildOptions, BuiltBundle, build_bundle
from nexus_control.authoring.credentials import KeyGrant, throwaway_keys, write_key_overlay
from nexus_control.authoring.opa import Opa
from nexus_control.budgets.spend import SpendStore
from nexus_control.plane import ControlPlane
from nexus_control.settings import ControlSettings
from nexus_dataplane.enforcer import EnforcerStack, StackOptions
from nexus_dataplane.process import free_port
from nexus_runtime.server import ServerThread
from nexus_runtime.toolchain import find_envoy

REPO = Path(__file__).resolve().parents[2]
GATEWAY = REPO / "bundles" / "gateway"
KEY_ID = "e2e-bundle-key"

CREDENTIALS: tuple[KeyGrant, ...] = (
    KeyGrant("acme-chat", "acme", ("chat-user",)),
    KeyGrant("acme-agent", "acme", ("agent", "agent-privileged")),
    KeyGrant("acme-dpo", "acme", ("dpo",)),
    KeyGrant("hooli-chat", "hooli", ("chat-user",)),
    KeyGrant("umbrella-chat", "umbrella", ("chat-user",)),
    KeyGrant("globex-chat", "globex", ("chat-user",)),
    KeyGrant("stark-agent", "stark", ("agent", "chat-user", "data-steward")),
    KeyGrant("wayne-chat", "wayne", ("chat-user",)),
)


def credentials_overlay(directory: Path) -> dict[str, str]:
    """Write an RBAC overlay binding fresh API keys; return their plain text by key id."""
    return throwaway_keys(CREDENTIALS, directory)


def write_overlay(
    directory: Path, plain: dict[str, str], extra_roles: dict[str, tuple[str, ...]]
) -> None:
    """Rebind the same keys with ``extra_roles`` added (a change to publish)."""
    grants = [
        KeyGrant(g.key_id, g.tenant, g.roles + extra_roles.get(g.key_id, ())) for g in CREDENTIALS
    ]
    write_key_overlay(grants, plain, directory)


@dataclass
class Environment:
    workdir: Path
    keys: KeyPaths
    opa: Opa
    database_url: str
    plain: dict[str, str]
    spend: SpendStore | None = None
    region: str = "eu-west-1"
    enforcers: int = 1
    plane: ControlPlane | None = None
    audit: AuditLog | None = None
    audit_database_url: str | None = None
    server: ServerThread | None = None
    stack: EnforcerStack | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    decisions: set[str] = field(default_factory=set)
    """Decision ids of every answer the gateway gave through ``call``."""

    @property
    def settings(self) -> ControlSettings:
        return ControlSettings(
            database_url=self.database_url,
            signing_key_file=self.keys.signing,
            signing_key_id=KEY_ID,
            approval_key_file=self.keys.approval,
            regions=[self.region],
            state_debounce_s=0.05,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_audit(self) -> None:
        settings = AuditSettings(
            database_url=self.audit_database_url or f"sqlite:///{self.workdir / 'audit.db'}",
            log_key_file=self.workdir / "audit-log.key",
            master_key_file=self.workdir / "audit-master.key",
            checkpoint_every_s=1.0,
        )
        init_audit_keys(self.workdir, settings)
        self.audit = AuditLog.from_settings(settings)

    def start(self) -> None:
        self.plane = create_control_plane(self.settings, spend=self.spend, opa=self.opa)
        self.start_audit()
        with self.plane.db.session() as session:
            for role in (Role.AUTHOR, Role.APPROVER, Role.OPERATOR, Role.GATEWAY):
                self.tokens[role.value], _ = create_token(
                    session, name=f"e2e-{role.value}", role=role
                )
            self.tokens["enforcer"], _ = create_token(
                session, name="e2e-enforcers", role=Role.ENFORCER, region=self.region
            )
        self.start_control_plane()
        self.publish()
        self.stack = EnforcerStack(
            StackOptions(
                region=self.region,
                control_plane_url=self.url,
                token=self.tokens["enforcer"],
                key_id=KEY_ID,
                verification_key_pem=public_pem(load_signing_key(self.keys.signing)),
                workdir=self.workdir / "dataplane",
                opa_bin=self.opa.binary,
                envoy_bin=find_envoy(),
                long_poll_timeout_s=10,
                audit_url=self.url,
            ),
            count=self.enforcers,
        )
        self.stack.start(wait_for_bundles=True)

    def start_control_plane(self) -> None:
        assert self.plane is not None
        self.server = ServerThread(create_app(self.plane, self.audit), "127.0.0.1", self.port)
        self.server.start()

    def stop_control_plane(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop()
        self.stop_control_plane()
        if self.plane is not None:
            self.plane.close()
            self.plane.db.dispose()
        if self.audit is not None:
            self.audit.close()

    def build(self, overlay: Path | None = None, **files: str) -> BuiltBundle:
        """Build the gateway bundle with the credentials overlay (and replaced spec files)."""
        source = self.workdir / f"src-{uuid.uuid4().hex[:8]}"
        shutil.copytree(GATEWAY, source)
        (source / "bundle.yaml").write_text(
            (source / "bundle.yaml").read_text().replace("../../rego", str(REPO / "rego"))
        )
        for name, text in files.items():
            (source / name).write_text(text)
        creds = overlay or self.workdir / "credentials"
        return build_bundle(
            source,
            self.opa,
            BuildOptions(self.keys.signing, KEY_ID, self.keys.approval, self.workdir / "dist"),
            overlays=[creds],
        )

    def publish(self, built: BuiltBundle | None = None, *, approve: bool = True) -> str:
        """Publish (as the author) and, when the change needs it, approve (as the approver)."""
        built = built or self.build()
        with ControlPlaneClient(self.url, self.tokens["author"]) as api:
            result = api.publish(built.path.read_bytes())
        rollout = result["rollout"]
        if approve and rollout["state"] == "pending_approval":
            with ControlPlaneClient(self.url, self.tokens["approver"]) as api:
                api.post(f"/v1/rollouts/{rollout['id']}/approve", {"comment": "e2e"})
        return str(result["revision"])

    def gateway(self, n: int = 0) -> str:
        assert self.stack is not None
        return self.stack.enforcers[n].gateway_url

    def call(
        self,
        key: str | None,
        tenant: str,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        enforcer: int = 0,
    ) -> httpx.Response:
        sent = {"x-nexus-tenant": tenant, **(headers or {})}
        if key is not None:
            sent["authorization"] = f"Bearer {self.plain[key]}"
        response = httpx.request(
            method, self.gateway(enforcer) + path, headers=sent, json=body, timeout=10
        )
        if "x-nexus-decision-id" in response.headers:
            self.decisions.add(response.headers["x-nexus-decision-id"])
        return response

    def usage(
        self, tenant: str, cost: float, *, request_id: str | None = None, model: str = "gpt-4o"
    ) -> httpx.Response:
        return httpx.post(
            f"{self.url}/v1/usage",
            headers={"authorization": f"Bearer {self.tokens['gateway']}"},
            json={
                "request_id": request_id or f"e2e-{uuid.uuid4()}",
                "tenant": tenant,
                "model": model,
                "tokens": 100,
                "cost_usd": cost,
            },
            timeout=10,
        )

    def fleet(self) -> dict[str, Any]:
        with ControlPlaneClient(self.url, self.tokens["operator"]) as api:
            return api.fleet()


def eventually(
    check: Callable[[], bool], timeout_s: float = 15.0, interval_s: float = 0.1
) -> float:
    """Seconds until ``check()`` holds; AssertionError if it never does."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(interval_s)
