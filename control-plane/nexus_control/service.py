"""The control plane as one object: registry, bundle serving, fleet, budgets.

HTTP routers stay thin and call this; tests and the demo can drive it
directly too. Database work runs in worker threads; waiting (long polls)
happens on the event loop through :class:`RevisionNotifier`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from nexus_audit.events import ControlEvent
from nexus_audit.service import AuditLog
from nexus_control import budget, fleet, outbox, registry, rollout, state
from nexus_control.db import Database
from nexus_control.diff import diff_configs
from nexus_control.keys import load_signing_key, public_pem
from nexus_control.opa import Opa
from nexus_control.regions import Fleet, load_fleet
from nexus_control.registry import POLICY_BUNDLE, Published, Verifier
from nexus_control.settings import ControlSettings
from nexus_control.spend import SpendStore, period_of
from nexus_control.tables import (
    BundleRevision,
    EnforcerBundle,
    RegionTarget,
    Rollout,
    StateBundle,
)

log = logging.getLogger("nexus.control")

BUNDLES = (POLICY_BUNDLE, state.STATE_BUNDLE)
ARCHIVE_CACHE_SIZE = 16
ROLLOUT_TICK_S = 1.0
TICK_POLL_S = 0.02
OUTBOX_DRAIN_S = 0.5


@dataclass(frozen=True)
class Publication:
    published: Published
    rollout_id: int
    rollout_state: str
    needs_approval: bool
    diff: dict[str, Any]


def rollout_view(row: Rollout) -> dict[str, Any]:
    return {
        "id": row.id,
        "revision": row.revision,
        "base_revision": row.base_revision,
        "state": row.state,
        "wave": row.wave,
        "needs_approval": row.needs_approval,
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
        "reason": row.reason,
    }


class RevisionNotifier:
    """Wakes long polls when a region's bundle changes; safe to call from any thread."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[str, asyncio.Event] = {}

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve waiters on ``loop``; events of an earlier loop (a restart) are dropped."""
        self._loop = loop
        self._events = {}

    def _event(self, key: str) -> asyncio.Event:
        event = self._events.get(key)
        if event is None:
            event = self._events[key] = asyncio.Event()
        return event

    async def wait(self, key: str, timeout_s: float) -> None:
        """Return when ``key`` is notified or ``timeout_s`` passes."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event(key).wait(), timeout_s)

    def notify(self, keys: Iterable[str]) -> None:
        if self._loop is None:
            return
        for key in keys:
            self._loop.call_soon_threadsafe(self._fire, key)

    def _fire(self, key: str) -> None:
        event = self._events.pop(key, None)
        if event is not None:
            event.set()


def bundle_key(region: str, bundle: str) -> str:
    return f"{region}/{bundle}"


class ControlPlane:
    def __init__(
        self, settings: ControlSettings, db: Database, opa: Opa, spend: SpendStore
    ) -> None:
        self.settings = settings
        self.db = db
        self.opa = opa
        self.spend = spend
        self.notifier = RevisionNotifier()
        self._tmp = tempfile.TemporaryDirectory(prefix="nexus-cp-")
        self.verifier = Verifier(self._verification_key(), settings.signing_key_id)
        self.fleet = (
            load_fleet(settings.fleet_file)
            if settings.fleet_file is not None
            else Fleet.single(list(settings.regions))
        )
        self._state_dirty = threading.Event()
        self._state_lock = threading.Lock()
        self._period = period_of(datetime.now(UTC))
        self._archives: dict[str, bytes] = {}
        self._tick_now = threading.Event()
        self._configs: dict[str, dict[str, Any]] = {}

    def _verification_key(self) -> Path:
        if self.settings.verification_key_file is not None:
            return self.settings.verification_key_file
        path = Path(self._tmp.name) / "bundle-signing.pub.pem"
        path.write_text(public_pem(load_signing_key(self.settings.signing_key_path)))
        return path

    def close(self) -> None:
        self._tmp.cleanup()

    # -- publishing ---------------------------------------------------------------

    def publish(self, archive: bytes, author: str) -> Publication:
        """Verify and store ``archive``, then open its rollout (waiting for approval if needed)."""
        with self.db.session() as session:
            published = registry.publish(session, self.opa, self.verifier, archive, author=author)
            latest = rollout.recent(session, 1)
            if not published.created and latest and latest[0].revision == published.revision:
                current = latest[0]
                return Publication(
                    published, current.id, current.state, current.needs_approval, current.diff
                )
            base = rollout.current_base(session, self.fleet)
            new_config = session.get(BundleRevision, published.revision)
            assert new_config is not None
            old_row = session.get(BundleRevision, base) if base else None
            change = diff_configs(old_row.config if old_row else {}, new_config.config)
            needs_approval = self.fleet.second_approver == "always" or change.needs_second_approver
            opened, changed = rollout.start(
                session,
                self.fleet,
                published.revision,
                author=author,
                diff=change.as_dict(),
                needs_approval=needs_approval,
            )
            result = Publication(published, opened.id, opened.state, needs_approval, opened.diff)
        self._notify_policy(changed)
        self.mark_state_dirty()
        return result

    def _notify_policy(self, regions: list[str]) -> None:
        self.notifier.notify(bundle_key(r, POLICY_BUNDLE) for r in regions)

    def approve(self, rollout_id: int, approver: str, comment: str | None) -> dict[str, Any]:
        with self.db.session() as session:
            opened, changed = rollout.approve(
                session, self.fleet, rollout_id, approver=approver, comment=comment
            )
            view = rollout_view(opened)
        self._notify_policy(changed)
        return view

    def promote(self, rollout_id: int, actor: str, *, force: bool) -> dict[str, Any]:
        with self.db.session() as session:
            moved, changed = rollout.promote(
                session, self.fleet, rollout_id, actor=actor, force=force
            )
            view = rollout_view(moved)
        self._notify_policy(changed)
        return view

    def pause(self, rollout_id: int, actor: str, reason: str | None) -> dict[str, Any]:
        with self.db.session() as session:
            return rollout_view(rollout.pause(session, rollout_id, actor=actor, reason=reason))

    def resume(self, rollout_id: int, actor: str) -> dict[str, Any]:
        with self.db.session() as session:
            return rollout_view(rollout.resume(session, rollout_id, actor=actor))

    def rollback(self, rollout_id: int, actor: str, reason: str | None) -> dict[str, Any]:
        with self.db.session() as session:
            back, changed = rollout.rollback(
                session, self.fleet, rollout_id, actor=actor, reason=reason
            )
            view = rollout_view(back)
        self._notify_policy(changed)
        return view

    def tick(self) -> list[str]:
        """One step of the rollout engine; wakes the pollers of every region it changed."""
        with self.db.session() as session:
            changed = rollout.tick(session, self.fleet)
        self._notify_policy(changed)
        return changed

    def drain_outbox(self, audit: AuditLog) -> int:
        """Append pending control-plane events to the audit log; returns how many.

        Idempotent on the outbox id (the log ignores an event it already has),
        so a crash between appending and marking delivered loses nothing and
        doubles nothing.
        """
        with self.db.session() as session:
            pending = outbox.pending(session)
            if not pending:
                return 0
            audit.append_events(
                ControlEvent(
                    id=event.id,
                    type=event.event_type,
                    actor=event.actor,
                    created_at=event.created_at,
                    payload=event.payload,
                )
                for event in pending
            )
            delivered = datetime.now(UTC)
            for event in pending:
                event.delivered_at = delivered
            return len(pending)

    async def outbox_loop(self, stop: asyncio.Event, audit: AuditLog) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.drain_outbox, audit)
            except Exception:
                log.exception("outbox drain failed; events stay in the outbox")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), OUTBOX_DRAIN_S)

    async def rollout_loop(self, stop: asyncio.Event) -> None:
        """Step the engine every ROLLOUT_TICK_S, and at once after a status report."""
        while not stop.is_set():
            self._tick_now.clear()
            try:
                await asyncio.to_thread(self.tick)
            except Exception:
                log.exception("rollout engine step failed; will retry")
            deadline = time.monotonic() + ROLLOUT_TICK_S
            while not stop.is_set() and not self._tick_now.is_set():
                if time.monotonic() >= deadline:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), TICK_POLL_S)

    # -- serving --------------------------------------------------------------------

    @staticmethod
    def _served(session: Session, region: str, bundle: str) -> str | None:
        # Only the revision column: held polls ask this every second, and the
        # state bundle's row also holds its archive.
        if bundle == state.STATE_BUNDLE:
            return session.scalar(
                select(StateBundle.revision).where(StateBundle.name == state.STATE_BUNDLE)
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

    def archive(self, region: str, bundle: str, revision: str) -> bytes:
        """The archive of ``revision`` (policy revisions are immutable, so they are cached)."""
        cached = self._archives.get(revision)
        if cached is not None:
            return cached
        with self.db.session() as session:
            if bundle == state.STATE_BUNDLE:
                current = state.current_state(session)
                if current is None or current.revision != revision:
                    raise LookupError(f"state revision {revision} is no longer current")
                return current.archive
            row = session.get(BundleRevision, revision)
            if row is None:
                raise LookupError(f"unknown revision {revision}")
            archive = row.archive
        if len(self._archives) >= ARCHIVE_CACHE_SIZE:
            self._archives.pop(next(iter(self._archives)))
        self._archives[revision] = archive
        return archive

    def record_poll(self, enforcer_id: str, region: str, bundle: str, held: str | None) -> bool:
        """Record what the enforcer holds; True if its last status for ``bundle`` was an error."""
        with self.db.session() as session:
            return fleet.record_poll(session, enforcer_id, region, bundle, held)

    def touch(self, enforcer_id: str, region: str) -> None:
        with self.db.session() as session:
            fleet.touch(session, enforcer_id, region)

    def record_status(self, enforcer_id: str, region: str, report: fleet.StatusReport) -> None:
        with self.db.session() as session:
            fleet.record_status(session, enforcer_id, region, report)
        # A status report is what moves a rollout on: step the engine now.
        self._tick_now.set()

    # -- budgets ----------------------------------------------------------------------

    def policy_config(self) -> dict[str, Any]:
        """The compiled config in force: what the canary wave runs as good.

        A publication waiting for approval (a budget raise, say) is not in force
        yet. Configs are immutable per revision, so they are cached.
        """
        with self.db.session() as session:
            revision = rollout.current_base(session, self.fleet)
            if revision is None:
                raise budget.NoPolicyError("no policy is in force yet")
            cached = self._configs.get(revision)
            if cached is not None:
                return cached
            config: dict[str, Any] | None = session.scalar(
                select(BundleRevision.config).where(BundleRevision.revision == revision)
            )
        if config is None:
            raise budget.NoPolicyError(f"revision {revision} is not in the registry")
        self._configs = {revision: config}
        return config

    def record_usage(self, report: budget.UsageReport) -> budget.UsageOutcome:
        config = self.policy_config()
        with self.db.session() as session:
            outcome = budget.record_usage(session, self.spend, config, report)
        if outcome.counted:
            self.mark_state_dirty()
        return outcome

    def mark_state_dirty(self) -> None:
        self._state_dirty.set()

    def rebuild_state(self) -> bool:
        """Rebuild and sign the state bundle if its content changed; wake the pollers."""
        with self._state_lock:
            self._state_dirty.clear()
            try:
                config = self.policy_config()
            except budget.NoPolicyError:
                config = {}
            period = period_of(datetime.now(UTC))
            with self.db.session() as session:
                document = budget.state_document(session, self.spend, config, period)
                current = state.current_state(session)
                if current is not None and current.data == document:
                    return False
            signed = state.build_state_bundle(
                self.opa,
                document,
                signing_key=self.settings.signing_key_path,
                key_id=self.settings.signing_key_id,
            )
            with self.db.session() as session:
                changed = state.store_state(session, signed, document)
        if changed:
            self.notifier.notify(bundle_key(r, state.STATE_BUNDLE) for r in self.known_regions())
            self.notifier.notify([bundle_key("*", state.STATE_BUNDLE)])
        return changed

    def known_regions(self) -> list[str]:
        with self.db.session() as session:
            regions = set(session.scalars(select(RegionTarget.region)))
        return sorted(regions | {r.id for r in self.fleet.regions})

    async def state_loop(self, stop: asyncio.Event) -> None:
        """Rebuild the state bundle when spend changes (debounced) and when the month turns."""
        while not stop.is_set():
            if self._state_dirty.is_set() or period_of(datetime.now(UTC)) != self._period:
                self._period = period_of(datetime.now(UTC))
                await asyncio.sleep(self.settings.state_debounce_s)
                try:
                    await asyncio.to_thread(self.rebuild_state)
                except Exception:
                    log.exception("state bundle rebuild failed; will retry")
                    self._state_dirty.set()
                    await asyncio.sleep(1.0)
            else:
                await asyncio.sleep(0.05)
