"""The control plane of one process: its parts, built from its settings, and their loops.

`ControlPlane` composes the concerns (registry, rollouts, bundle server,
budgets) over one database; HTTP routers call the parts directly. Database
work runs in worker threads; waiting (long polls) happens on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from pathlib import Path

from nexus_audit.service import AuditLog
from nexus_control.access.signing_keys import load_signing_key, public_pem
from nexus_control.authoring.opa import Opa
from nexus_control.budgets.budgets import Budgets, StateSigner
from nexus_control.budgets.spend import SpendStore
from nexus_control.registry.registry import Registry
from nexus_control.registry.revisions import VerificationKey
from nexus_control.rollout.fleet import Fleet, load_fleet
from nexus_control.rollout.rollouts import Rollouts
from nexus_control.serving.notifier import RevisionNotifier
from nexus_control.serving.server import BundleServer
from nexus_control.settings import ControlSettings
from nexus_control.store import outbox
from nexus_runtime.database import Database

__all__ = ["OUTBOX_DRAIN_S", "ControlPlane"]

log = logging.getLogger("nexus.control")

OUTBOX_DRAIN_S = 0.5
"""How often pending control-plane events are appended to a co-located audit log."""


class ControlPlane:
    """Registry, rollouts, bundle server and budgets over one database."""

    def __init__(
        self, settings: ControlSettings, db: Database, opa: Opa, spend: SpendStore
    ) -> None:
        self.settings = settings
        self.db = db
        self.opa = opa
        self._tmp = tempfile.TemporaryDirectory(prefix="nexus-cp-")
        self.fleet = (
            load_fleet(settings.fleet_file)
            if settings.fleet_file is not None
            else Fleet.single(list(settings.regions))
        )
        self.notifier = RevisionNotifier()
        self.registry = Registry(
            db, opa, VerificationKey(self._verification_key(), settings.signing_key_id)
        )
        self.rollouts = Rollouts(
            db,
            self.fleet,
            self.registry,
            self.notifier,
            on_change=lambda: self.budgets.mark_dirty(),
        )
        self.serving = BundleServer(db, self.registry, self.notifier, on_status=self.rollouts.poke)
        self.budgets = Budgets(
            db,
            spend,
            StateSigner(opa, settings.signing_key_path, settings.signing_key_id),
            self.notifier,
            config_in_force=self.rollouts.config_in_force,
            regions=self.known_regions,
            debounce_s=settings.state_debounce_s,
        )

    def _verification_key(self) -> Path:
        if self.settings.verification_key_file is not None:
            return self.settings.verification_key_file
        path = Path(self._tmp.name) / "bundle-signing.pub.pem"
        path.write_text(public_pem(load_signing_key(self.settings.signing_key_path)))
        return path

    def known_regions(self) -> list[str]:
        """The fleet's regions and every region a revision was ever assigned to."""
        return sorted(set(self.serving.known_regions()) | {r.id for r in self.fleet.regions})

    def drain_outbox(self, audit: AuditLog) -> int:
        """Append pending control-plane events to ``audit``; returns how many."""
        return outbox.drain(self.db, audit)

    async def run(self, stop: asyncio.Event, audit: AuditLog | None = None) -> None:
        """Run the background loops (state bundle, rollout engine, outbox) until ``stop``."""
        self.notifier.bind(asyncio.get_running_loop())
        self.budgets.mark_dirty()
        loops = [self.budgets.run(stop), self.rollouts.run(stop)]
        if audit is not None:
            loops.append(self._drain_loop(stop, audit))
        await asyncio.gather(*loops)

    async def _drain_loop(self, stop: asyncio.Event, audit: AuditLog) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.drain_outbox, audit)
            except Exception:
                log.exception("outbox drain failed; events stay in the outbox")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), OUTBOX_DRAIN_S)

    def close(self) -> None:
        self._tmp.cleanup()
