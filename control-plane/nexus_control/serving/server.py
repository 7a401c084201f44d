"""The bundle server: which revision each region's enforcers should hold, and what they report.

Policy revisions come from the registry (immutable, cached); the state bundle
from its one current row. Every poll and status report is recorded per
enforcer (`nexus_control.serving.enforcers`); a status report also pokes the
rollout engine, which is what moves a rollout on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from nexus_contract.errors import NexusError
from nexus_contract.wire import STATE_BUNDLE
from nexus_control.budgets import state
from nexus_control.registry.registry import Registry
from nexus_control.serving import enforcers
from nexus_control.serving.enforcers import EnforcerView, StatusReport
from nexus_control.serving.notifier import RevisionNotifier
from nexus_control.store import outbox
from nexus_control.store.tables import EnforcerBundle, RegionTarget, StateBundle
from nexus_runtime.database import Database

__all__ = ["BundleServer", "StaleStateError"]


class StaleStateError(NexusError):
    """The state revision asked for is no longer the current one."""


class BundleServer:
    """Answers enforcers' bundle polls and takes their status reports."""

    def __init__(
        self,
        db: Database,
        registry: Registry,
        notifier: RevisionNotifier,
        *,
        on_status: Callable[[], None],
        declared: Mapping[str, str] | None = None,
    ) -> None:
        """``declared``: the fleet file's enforcer ids and their regions."""
        self.db = db
        self.declared: Mapping[str, str] = dict(declared or {})
        self.registry = registry
        self.notifier = notifier
        self._on_status = on_status

    @staticmethod
    def _served(session: Session, region: str, bundle: str) -> str | None:
        # Only the revision column: held polls ask this every second, and the
        # state bundle's row also holds its archive.
        if bundle == STATE_BUNDLE:
            return session.scalar(
                select(StateBundle.revision).where(StateBundle.name == STATE_BUNDLE)
            )
        return session.scalar(
            select(RegionTarget.desired_revision).where(
                RegionTarget.region == region, RegionTarget.bundle == bundle
            )
        )

    def served_revision(self, region: str, bundle: str) -> str | None:
        """The revision a region's enforcers should hold now, if any."""
        with self.db.session() as session:
            return self._served(session, region, bundle)

    def poll_view(self, enforcer_id: str, region: str, bundle: str) -> tuple[str | None, bool]:
        """What a held poll rechecks: the revision to serve, and whether the enforcer errored."""
        with self.db.session() as session:
            error = session.scalar(
                select(EnforcerBundle.error_code).where(
                    EnforcerBundle.enforcer_id == enforcer_id, EnforcerBundle.bundle == bundle
                )
            )
            return self._served(session, region, bundle), error is not None

    def archive(self, bundle: str, revision: str) -> bytes:
        """The archive of ``revision`` of ``bundle``."""
        if bundle != STATE_BUNDLE:
            return self.registry.archive(revision)
        with self.db.session() as session:
            current = state.current_state(session)
            if current is None or current.revision != revision:
                raise StaleStateError(f"state revision {revision} is no longer current")
            return current.archive

    def record_poll(self, enforcer_id: str, region: str, bundle: str, held: str | None) -> bool:
        """Record what the enforcer holds; True if its last status for ``bundle`` was an error."""
        with self.db.session() as session:
            return enforcers.record_poll(session, self.declared, enforcer_id, region, bundle, held)

    def touch(self, enforcer_id: str, region: str) -> None:
        """The enforcer is alive (its held long poll just ended)."""
        with self.db.session() as session:
            enforcers.touch(session, self.declared, enforcer_id, region)

    def record_status(self, enforcer_id: str, region: str, report: StatusReport) -> None:
        with self.db.session() as session:
            enforcers.record_status(session, self.declared, enforcer_id, region, report)
        self._on_status()

    def enforcers(self, region: str | None = None) -> list[EnforcerView]:
        with self.db.session() as session:
            return enforcers.enforcer_views(session, region)

    def register_enforcer(self, enforcer_id: str, region: str, actor: str) -> bool:
        """Declare an enforcer in ``region`` (or again after a removal); False if it was."""
        with self.db.session() as session:
            return enforcers.register_enforcer(session, self.declared, enforcer_id, region, actor)

    def remove_enforcer(self, enforcer_id: str, actor: str) -> bool:
        """Take an enforcer out of the fleet until re-registered; False if it is not in it."""
        with self.db.session() as session:
            removed = enforcers.remove_enforcer(session, self.declared, enforcer_id)
            if removed:
                outbox.record(session, "enforcer.removed", actor, enforcer=enforcer_id)
            return removed

    def known_regions(self) -> list[str]:
        """Every region a policy revision was ever assigned to."""
        with self.db.session() as session:
            return sorted(set(session.scalars(select(RegionTarget.region))))
