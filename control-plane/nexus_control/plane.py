"""The control plane of one process: its parts, built from its settings, and their loops.

`ControlPlane` composes the concerns (registry, rollouts, bundle server,
budgets) over one database; HTTP routers call the parts directly. Database
work runs in worker threads; waiting (long polls) happens on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nexus_audit.service import AuditLog
from nexus_control.access.keyring import KeyPurpose, Keyring, TrustedKey
from nexus_control.authoring.opa import Opa
from nexus_control.budgets.backpressure import UsageGate
from nexus_control.budgets.budgets import Budgets, StateSigner
from nexus_control.budgets.metrics import BudgetGauges
from nexus_control.budgets.spend import SpendStore
from nexus_control.budgets.watch import AnomalyWatch
from nexus_control.quality.evaluations import Evaluations
from nexus_control.registry.registry import Registry
from nexus_control.replay.gatekeeper import Gatekeeper, GateOutcome
from nexus_control.replay.shadowkeeper import ShadowGatekeeper
from nexus_control.rollout.fleet import Fleet, load_fleet
from nexus_control.rollout.rollouts import Gate, Rollouts
from nexus_control.serving.notifier import RevisionNotifier
from nexus_control.serving.pg_notify import PostgresRelay
from nexus_control.serving.server import BundleServer
from nexus_control.settings import ControlSettings
from nexus_control.store import outbox
from nexus_control.store.lease import AdvisoryLease, run_while_leader
from nexus_runtime.database import Database
from nexus_runtime.keys.algorithms import Algorithm
from nexus_runtime.keys.factory import open_provider
from nexus_runtime.keys.provider import KeyProvider

__all__ = ["OUTBOX_DRAIN_S", "PKCS11_INITIAL_REFERENCES", "ControlPlane", "make_keyring"]

log = logging.getLogger("nexus.control")

OUTBOX_DRAIN_S = 0.5
"""How often pending control-plane events are appended to a co-located audit log."""
ROLLOUT_LEASE = "nexus-rollout-engine"
ANOMALY_LEASE = "nexus-spend-anomalies"
"""The lease naming the one replica whose rollout engine steps (PostgreSQL only)."""


PKCS11_INITIAL_REFERENCES = {
    KeyPurpose.BUNDLE: "nexus-bundle-signing-1",
    KeyPurpose.APPROVAL: "nexus-approval-signing-1",
}
"""Labels of the first keys the control plane makes on an empty token."""


def make_keyring(settings: ControlSettings, db: Database, provider: KeyProvider) -> Keyring:
    """The key ring over ``provider``, with every purpose's first key in place."""
    if provider.kind == "file":
        initial = {
            KeyPurpose.BUNDLE: str(settings.signing_key_path.resolve()),
            KeyPurpose.APPROVAL: str(settings.approval_key_path.resolve()),
        }
    else:
        initial = dict(PKCS11_INITIAL_REFERENCES)
    keyring = Keyring(
        db,
        provider,
        bundle_kid=settings.signing_key_id,
        algorithms={
            KeyPurpose.BUNDLE: settings.signing_algorithm,
            KeyPurpose.APPROVAL: Algorithm.ES256,
        },
        initial_references=initial,
    )
    keyring.ensure()
    return keyring


class ControlPlane:
    """Registry, rollouts, bundle server and budgets over one database."""

    def __init__(
        self,
        settings: ControlSettings,
        db: Database,
        opa: Opa,
        spend: SpendStore,
        *,
        key_provider: KeyProvider | None = None,
    ) -> None:
        """``key_provider``: where the signing keys live (default: the one settings name)."""
        self.settings = settings
        self.db = db
        self.opa = opa
        self.key_provider = key_provider or open_provider(
            settings.key_provider,
            directory=settings.keys_dir,
            pkcs11_module=settings.pkcs11_module,
            token_label=settings.pkcs11_token_label,
            pin_file=settings.pkcs11_pin_file,
        )
        self.keyring = make_keyring(settings, db, self.key_provider)
        self.fleet = (
            load_fleet(settings.fleet_file)
            if settings.fleet_file is not None
            else Fleet.single(list(settings.regions))
        )
        self.notifier = RevisionNotifier()
        self.registry = Registry(db, opa, self.keyring)
        self.evaluations = Evaluations(db, self.registry.config)
        self.rollouts = Rollouts(
            db,
            self.fleet,
            self.registry,
            self.notifier,
            on_change=lambda: self.budgets.mark_dirty(),
        )
        self.serving = BundleServer(
            db,
            self.registry,
            self.notifier,
            on_status=self.rollouts.poke,
            declared=self.fleet.declared,
        )
        self.budgets = Budgets(
            db,
            spend,
            StateSigner(self.keyring),
            self.notifier,
            config_in_force=self.rollouts.config_in_force,
            regions=self.known_regions,
            debounce_s=settings.state_debounce_s,
            refresh_s=settings.state_refresh_s,
        )
        self.usage_gate = UsageGate(settings.usage_max_in_flight, settings.usage_retry_after_s)
        self.budget_gauges = BudgetGauges(self.budgets.overview, settings.metric_tenants)
        self.anomalies = AnomalyWatch(
            self.db,
            self.budgets.overview,
            config=self.budgets.config_or_none,
            republish=lambda: self.budgets.republish_now("an anomaly hold"),
        )

    def activate_key(self, kid: str, actor: str, window_s: int) -> TrustedKey:
        """Activate ``kid``; a new bundle key re-signs what is in force and the state bundle."""
        activated = self.keyring.activate(kid, actor, window_s)
        if activated.purpose is KeyPurpose.BUNDLE:
            with self.db.session() as session:
                self.registry.renew_signatures(session, actor)
            self.budgets.mark_dirty()
        return activated

    def replay_gate(self, audit: AuditLog | None) -> Gate | None:
        """The replay gate rollouts wait for, when the fleet declares gates.

        Fail closed: gates declared but no audit log served with the plane hold
        every rollout, with the reason.
        """
        gates = self.fleet.replay_gates
        if gates is None:
            return None
        if audit is None:

            def no_log(revision: str, rollout_id: int, actor: str) -> GateOutcome:
                return GateOutcome(False, "replay gates need the audit log served with the plane")

            return no_log
        keeper = Gatekeeper(
            self.db, audit, self.registry, self.keyring, self.opa, gates,
            base_revision=self.rollouts.base_revision,
        )  # fmt: skip
        return keeper.judge_revision

    def bind_audit(self, audit: AuditLog | None) -> None:
        """Judge the fleet's shadow gates over ``audit`` (None: they hold every promotion)."""
        gates = self.fleet.shadow_gates
        if gates is not None and audit is not None:
            self.rollouts.wave_gate = ShadowGatekeeper(
                audit, self.registry, self.keyring, self.opa, self.fleet, gates
            )

    def known_regions(self) -> list[str]:
        """The fleet's regions and every region a revision was ever assigned to."""
        return sorted(set(self.serving.known_regions()) | {r.id for r in self.fleet.regions})

    def drain_outbox(self, audit: AuditLog) -> int:
        """Append pending control-plane events to ``audit``; returns how many."""
        return outbox.drain(self.db, audit)

    async def run(self, stop: asyncio.Event, audit: AuditLog | None = None) -> None:
        """Run the background loops (state bundle, rollout engine, outbox) until ``stop``."""
        self.notifier.bind(asyncio.get_running_loop())
        self.bind_audit(audit)
        relay = (
            PostgresRelay(self.db.url, self.notifier.notify_local)
            if self.db.is_postgresql
            else None
        )
        if relay is not None:
            relay.start()
            self.notifier.relay = relay.send
        self.budgets.mark_dirty()
        engine = (
            run_while_leader(AdvisoryLease(self.db.url, ROLLOUT_LEASE), stop, self.rollouts.run)
            if self.db.is_postgresql
            else self.rollouts.run(stop)
        )
        anomalies = (
            run_while_leader(AdvisoryLease(self.db.url, ANOMALY_LEASE), stop, self.anomalies.run)
            if self.db.is_postgresql
            else self.anomalies.run(stop)
        )
        loops = [self.budgets.run(stop), engine, anomalies]
        if audit is not None:
            loops.append(self._drain_loop(stop, audit))
        gate = self.replay_gate(audit)
        if gate is not None:
            loops.append(self.rollouts.run_gate_recovery(stop, gate))
        try:
            await asyncio.gather(*loops)
        finally:
            if relay is not None:
                self.notifier.relay = None
                await asyncio.to_thread(relay.stop)

    async def _drain_loop(self, stop: asyncio.Event, audit: AuditLog) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.drain_outbox, audit)
            except Exception:
                log.exception("outbox drain failed; events stay in the outbox")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), OUTBOX_DRAIN_S)

    def close(self) -> None:
        close = getattr(self.key_provider, "close", None)
        if callable(close):
            close()
