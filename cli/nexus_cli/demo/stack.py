"""The demo's moving parts: a control plane with its audit log and two witnesses, and three
regions of enforcers, started for real and stopped in reverse (`DemoRun`), with the
demo's constants.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from nexus_audit.cosignature import Cosigner
from nexus_audit.keyfiles import load_log_key
from nexus_audit.service import AuditLog
from nexus_audit.settings import AuditSettings
from nexus_cli.client import ControlPlaneClient
from nexus_cli.demo.scenarios import (
    Approval,
)
from nexus_cli.rollout import status_view
from nexus_control.access.keyring import KeyPurpose
from nexus_control.access.signing_keys import KeyPaths, init_audit_keys
from nexus_control.access.tokens import Role, create_token
from nexus_control.api.app import create_app, create_control_plane
from nexus_control.authoring.loader import load_bundle
from nexus_control.authoring.opa import Opa
from nexus_control.authoring.policyset import resolve
from nexus_control.authoring.ratelimits import compile_rate_limits
from nexus_control.authoring.sources import pack_sources
from nexus_control.plane import ControlPlane
from nexus_control.rollout.fleet import fleet_yaml
from nexus_control.rollout.states import RolloutState
from nexus_control.serving.enrolment import enrol_enforcer
from nexus_control.settings import ControlSettings
from nexus_dataplane.enforcer import EnforcerStack, StackOptions
from nexus_dataplane.process import ManagedProcess, free_port, wait_for_port
from nexus_dataplane.ratelimit import RateLimitBackend, RateLimitPlan
from nexus_dataplane.spec import TracingSpec
from nexus_runtime.secretfile import write_secret
from nexus_runtime.server import ServerThread, instrument_app
from nexus_runtime.toolchain import find_envoy, find_ratelimit, find_redis_server

__all__ = [
    "BUNDLE_DIR",
    "CONTROL_PLANE_KEYS",
    "DEMO_TENANTS",
    "DEMO_WIDTH",
    "DEV_KEY_ID",
    "REFUSAL_DEADLINE_S",
    "REGION",
    "SHADOW_MIN_SAMPLE",
    "SHADOW_REGION",
    "USAGE_TOKENS",
    "WORKDIR",
    "DemoRun",
    "fleet_file",
]

REGION = "eu-west-1"
BUNDLE_DIR = Path("bundles/gateway")
WORKDIR = Path(".nexus/demo")
WITNESSES = ("eu-witness/nexus.example", "us-witness/nexus.example")
"""The demo's two witnesses (key names); both must cosign the evidence checkpoint."""
CONTROL_PLANE_KEYS = WORKDIR / "control-plane-keys"
"""The control plane's own keys (its file key provider): no author ever reads them."""
KEY_ID = "nexus-bundle-signing"
DEV_KEY_ID = "nexus-dev-signing"
REFUSAL_DEADLINE_S = 10.0
DEMO_WIDTH = 200
USAGE_TOKENS = 1_200
DEMO_TENANTS = (
    "acme", "globex", "hooli", "initech", "stark", "umbrella", "vandelay", "wayne",
)  # fmt: skip
"""The example bundle's tenants: the demo gateway token reports for these alone."""
DEMO_REGIONS = (("eu-west-1", "eu", 0), ("eu-central-1", "eu", 1), ("us-east-1", "us", 2))
DEMO_SOAK_S = 1
SHADOW_REGION = "eu-central-1"
"""The demo's second wave: its enforcer runs Envoy and evaluates every Check in shadow."""
SHADOW_MIN_SAMPLE = 3
DEMO_GATES = f"""replayGates:
  windowHours: 1
  denyToAllowMax: 0
  denyToAllowMinRisk: high
shadowGates:
  denyToAllowMax: 0
  denyToAllowMinRisk: high
  minSample: {SHADOW_MIN_SAMPLE}
"""
"""The demo fleet's gates: no refusal of a high-risk tool call may become an allow, in replay
or in the next wave's shadow (of at least SHADOW_MIN_SAMPLE outcomes)."""
FINISHED = (RolloutState.COMPLETED, RolloutState.HALTED, RolloutState.ROLLED_BACK)


def fleet_file(path: Path) -> Path:
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
        + DEMO_GATES
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
    witnesses: list[ManagedProcess] = field(default_factory=list)
    stacks: list[EnforcerStack] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)
    tracing: TracingSpec | None = None
    """Where Envoy and OPA send spans (a Jaeger of the run), or None: no tracing."""
    rate_limits: RateLimitPlan | None = None
    """The example bundle's RateLimits, rendered into every Envoy when the run starts."""
    limiter: RateLimitBackend | None = None
    """Redis and envoyproxy/ratelimit, counting the shared limits for every Envoy."""

    def api(self, role: str) -> ControlPlaneClient:
        assert self.server is not None
        return ControlPlaneClient(self.server.url, self.tokens[role])

    def start(self) -> None:
        self.plane = create_control_plane(self.settings, opa=self.opa)
        audit_settings = _audit_settings(self.settings)
        audit_settings.witness_policy_file = self._start_witnesses(audit_settings)
        self.audit = AuditLog.from_settings(audit_settings)
        self.audit.start()
        with self.plane.db.session() as session:
            for role, name in (
                (Role.AUTHOR, "alice"),
                (Role.APPROVER, "bob"),
                (Role.OPERATOR, "olivia"),
                (Role.GATEWAY, "gateway"),
            ):
                self.tokens[role.value], _ = create_token(
                    session,
                    name=name,
                    role=role,
                    tenants=DEMO_TENANTS if role is Role.GATEWAY else (),
                )
            self.tokens["compliance"], _ = create_token(
                session, name="carmen", role=Role.COMPLIANCE
            )
        app = create_app(self.plane, self.audit)
        instrument_app(app)
        self.server = ServerThread(app, "127.0.0.1", free_port())
        self.server.start()
        # Enforcers trust the control plane's bundle key: its public half, from the key ring.
        (trusted,) = self.plane.keyring.trusted(KeyPurpose.BUNDLE)
        self._start_limiter()
        limiter_port = self.limiter.grpc_port if self.limiter is not None else None
        for region, _, wave in DEMO_REGIONS:
            stack = EnforcerStack(
                StackOptions(
                    region=region,
                    control_plane_url=self.server.url,
                    token="",
                    credentials=self._enrol(region),
                    key_id=trusted.kid,
                    key_algorithm=trusted.algorithm.value,
                    verification_key_pem=trusted.public_pem,
                    workdir=WORKDIR / "dataplane",
                    opa_bin=self.opa.binary,
                    envoy_bin=find_envoy(),
                    with_envoy=wave == 0 or region == SHADOW_REGION,
                    shadow_sample_percent=100.0 if region == SHADOW_REGION else 0.0,
                    long_poll_timeout_s=10,
                    audit_url=self.server.url,
                    tracing=self.tracing,
                    rate_limits=self.rate_limits,
                    ratelimit_port=limiter_port,
                ),
                count=1,
            )
            stack.start(wait_for_bundles=False)
            self.stacks.append(stack)

    def _start_limiter(self) -> None:
        """Envoy's config is static: the limits are read from the bundle's sources now, and
        with a shared one its counters (a real redis-server) and service start first."""
        policy = resolve(load_bundle(BUNDLE_DIR))
        if not policy.rate_limits:
            return
        self.rate_limits = RateLimitPlan.from_config(compile_rate_limits(policy.rate_limits))
        if not self.rate_limits.shared:
            return
        self.limiter = RateLimitBackend(
            self.rate_limits,
            WORKDIR / "ratelimit",
            ratelimit_bin=find_ratelimit(),
            redis_bin=find_redis_server(),
            redis_url=None,
        )
        self.limiter.start()

    def _enrol(self, region: str) -> Callable[[str], str]:
        """Each enforcer is registered in its region and gets its own token as it starts."""
        assert self.plane is not None
        plane = self.plane

        def token_of(enforcer_id: str) -> str:
            with plane.db.session() as session:
                token = enrol_enforcer(
                    session, plane.fleet.declared, enforcer_id, region, "demo operator"
                )
            self.tokens[enforcer_id] = token
            return token

        return token_of

    def _start_witnesses(self, settings: AuditSettings) -> Path:
        """Two witnesses, each its own process with its own key and storage (as if in
        other regions, run by other operators); the log's tlog-policy needs both."""
        log_key = load_log_key(settings.log_key_file).verifier
        lines = [f"log {log_key}"]
        for name in WITNESSES:
            directory = WORKDIR / "witnesses" / name.split("/")[0]
            cosigner = Cosigner.generate(name)
            key_file = directory / "witness.key"
            write_secret(key_file, (cosigner.private_key_string() + "\n").encode())
            port = free_port()
            process = ManagedProcess(
                f"witness-{name.split('/')[0]}",
                [
                    sys.executable, "-m", "nexus_cli", "witness", "serve", "--log", str(log_key),
                    "--key-file", str(key_file.resolve()),
                    "--db-file", str((directory / "witness.db").resolve()),
                    "--host", "127.0.0.1", "--port", str(port),
                ],
                directory,
            )  # fmt: skip
            process.start()
            self.witnesses.append(process)
            if not wait_for_port("127.0.0.1", port, 30):
                raise RuntimeError(f"witness {name} did not start\n{process.log_tail()}")
            lines.append(f"witness {name.split('/')[0]} {cosigner.key} http://127.0.0.1:{port}")
        lines += [f"group regions all {' '.join(n.split('/')[0] for n in WITNESSES)}"]
        lines += ["quorum regions"]
        policy = WORKDIR / "witness-policy.txt"
        policy.write_text("\n".join(lines) + "\n")
        return policy

    def stop(self) -> None:
        for stack in self.stacks:
            stack.stop()
        if self.limiter is not None:
            self.limiter.stop()
        if self.server is not None:
            self.server.stop()
        if self.plane is not None:
            self.plane.close()
        if self.audit is not None:
            self.audit.close()
        for witness in self.witnesses:
            witness.stop()

    def approval_jwks(self, path: Path) -> Path:
        """The control plane's public approval JWKS, as `nexus-policy keys jwks` writes it."""
        with self.api("author") as api:
            path.write_text(api.get("/v1/keys")["approval_jwks"])
        return path

    def issue_approval(self, ask: Approval) -> str:
        """Bob (an approver) asks the control plane to approve one tool call."""
        with self.api("approver") as api:
            issued = api.post(
                "/v1/approvals/tools",
                {
                    "tenant": ask.tenant,
                    "tool": ask.tool,
                    "arguments": dict(ask.arguments),
                    "subject": ask.subject,
                    "ttl_seconds": ask.ttl_s,
                },
            )
        return str(issued["token"])

    def publish(
        self, bundle_dir: Path, overlays: list[Path], *, expected: str | None = None
    ) -> dict[str, Any]:
        """Alice publishes the sources; the control plane builds, tests, diffs and signs."""
        with self.api("author") as api:
            published: dict[str, Any] = api.publish(
                pack_sources(bundle_dir, overlays), expected_revision=expected
            )
        rollout = published["rollout"]
        widening = [c for c in published["diff"]["changes"] if c["effect"] == "widens"]
        code = published["diff"].get("modules", [])
        self.out.print(
            f"  alice published the sources; the control plane built {published['revision'][:12]}"
            f"{' (the revision her own build computed)' if expected else ''}: "
            f"{len(published['diff']['changes'])} data change(s), {len(widening)} widening "
            f"access, {len(code)} Rego module(s) changed"
        )
        if rollout["state"] == RolloutState.PENDING_APPROVAL:
            with self.api("approver") as api:
                rollout = api.post(f"/v1/rollouts/{rollout['id']}/approve", {"comment": "reviewed"})
            published["rollout"] = rollout
            self.out.print(
                "  it needs a second person (widening or policy code), so it waited unsigned: "
                "bob approved it, and the control plane signed it"
            )
        if rollout["state"] == RolloutState.HELD:
            self.out.print(f"  [bold yellow]held[/bold yellow]: {escape(str(rollout['reason']))}")
        elif rollout["state"] == RolloutState.ROLLING:
            with self.api("operator") as api:
                history = api.get(f"/v1/rollouts/{rollout['id']}")["history"]
            passed = [h["detail"] for h in history if h["action"] == "gate_passed"]
            if passed:
                self.out.print(f"  replay gate: {escape(str(passed[-1]))}; it rolls out")
        return published

    def follow(self, rollout_id: int, timeout_s: float = 60) -> dict[str, Any]:
        """Print the rollout's status each time it moves, until it ends."""

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
                if current["id"] == rollout_id and current["state"] in FINISHED:
                    result: dict[str, Any] = api.get(f"/v1/rollouts/{rollout_id}")
                    return result
                time.sleep(0.2)
        raise RuntimeError(f"rollout {rollout_id} did not finish in {timeout_s:.0f} s")


def _audit_settings(settings: ControlSettings) -> AuditSettings:
    audit = AuditSettings(
        database_url=f"sqlite:///{WORKDIR / 'audit.db'}",
        log_key_file=settings.keys_dir / "audit-log.key",
        master_key_file=settings.keys_dir / "audit-master.key",
        checkpoint_every_s=2.0,
    )
    init_audit_keys(settings.keys_dir, audit)
    return audit
