"""Budgets as a service: usage in, a signed state bundle out, rebuilt when spend changes.

Usage reports are counted against the caps in force (what the canary wave runs
as good). The state bundle is rebuilt, debounced, whenever a report was counted,
an approval was reported used, a used approval expired, the month turned or a
listed tenant's budget window ended, and only republished when its content changed
(``as_of``, when spend was read, does not count); every region's pollers are woken
then. A trailing rebuild ``refresh_s`` after the last usage republishes with a new
``as_of`` even if nothing else changed, so enforcers release the budget holds of
requests that ended since (data-plane/opa/README.md). The clock is injected
(``clock``), so a test can walk budgets across a window's boundary.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from nexus_contract.wire import STATE_BUNDLE
from nexus_control.access import approval_uses
from nexus_control.access.approval_uses import ApprovalUse
from nexus_control.access.keyring import KeyPurpose, Keyring
from nexus_control.authoring.config import CompiledConfig
from nexus_control.budgets import holds, state, usage
from nexus_control.budgets.costs import CostQuery, CostReport, cost_report
from nexus_control.budgets.overview import (
    PAGE_TENANTS,
    SpendOverview,
    SpendPage,
    spend_overview,
    spend_page,
)
from nexus_control.budgets.spend import SpendStore, period_of
from nexus_control.budgets.usage import UsageOutcome, UsageReport
from nexus_control.health.reports import HealthReport, RecordedHealth, list_health, record_health
from nexus_control.rollout.rollouts import NoPolicyInForceError
from nexus_control.serving.notifier import RevisionNotifier, bundle_key
from nexus_runtime.database import Database

__all__ = ["Budgets", "StateSigner"]

log = logging.getLogger("nexus.control.budgets")

IDLE_POLL_S = 0.05
RETRY_AFTER_FAILURE_S = 1.0


def utc_now() -> datetime:
    return datetime.now(UTC)


class StateSigner:
    """Where the state bundle's signature comes from: the key ring's active bundle key."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    def key_id(self) -> str:
        return self.keyring.signer(KeyPurpose.BUNDLE)[1]

    def sign(self, document: state.StateDocument) -> state.SignedState:
        key, kid = self.keyring.signer(KeyPurpose.BUNDLE)
        return state.build_state_bundle(document, key=key, key_id=kid)


class Budgets:
    """Counts usage and keeps the state bundle current."""

    def __init__(
        self,
        db: Database,
        spend: SpendStore,
        signer: StateSigner,
        notifier: RevisionNotifier,
        *,
        config_in_force: Callable[[], CompiledConfig],
        regions: Callable[[], list[str]],
        debounce_s: float,
        clock: Callable[[], datetime] = utc_now,
        refresh_s: float = 0.0,
    ) -> None:
        self.db = db
        self.spend = spend
        self.signer = signer
        self.notifier = notifier
        self._config_in_force = config_in_force
        self._regions = regions
        self._debounce_s = debounce_s
        self.clock = clock
        self._refresh_s = refresh_s
        self._refresh_at: float | None = None
        """When the trailing rebuild after the last usage is due (monotonic seconds)."""
        self._dirty = threading.Event()
        self._lock = threading.Lock()
        self._period = period_of(clock())
        self._next_expiry: float | None = None
        """When the first listed used approval leaves the state bundle (Unix seconds)."""
        self._next_reset: datetime | None = None
        """When the first listed tenant's budget window ends: its spend starts again."""

    def record_approval_use(
        self, *, approval_id: str, tenant: str, reporter: str, decision_id: str | None
    ) -> ApprovalUse:
        """Mark an approval used; on first use, republish the state bundle at once."""
        with self.db.session() as session:
            use = approval_uses.record_use(
                session,
                approval_id=approval_id,
                tenant=tenant,
                reporter=reporter,
                decision_id=decision_id,
            )
        if use.first_use:
            # Not debounced: every enforcer should refuse the approval as soon as possible.
            self.republish_now("an approval use")
        return use

    def record_usage(self, report: UsageReport) -> UsageOutcome:
        """Count ``report`` once (idempotent on its request id)."""
        config = self._config_in_force()
        with self.db.session() as session:
            outcome = usage.record_usage(session, self.spend, config, report, self.clock())
        if outcome.counted:
            self.mark_dirty()
        return outcome

    def disable(self, tenant: str, actor: str, reason: str, **detail: str) -> bool:
        """Disable ``tenant`` for its open budget window in ``actor``'s name, as its hard cap would;
        republish the state bundle at once. False if it already was disabled.

        Raises `UnknownTenantError` when the policy in force does not know the tenant, and
        `NoPolicyInForceError` when there is none.
        """
        config = self._config_in_force()
        if tenant not in config.get("tenants", {}):
            raise usage.UnknownTenantError(f"unknown tenant {tenant!r}: not in the policy in force")
        now = self.clock()
        window = usage.open_windows(config, now)[tenant]
        with self.db.session() as session:
            disabled = usage.disable_tenant(
                session, tenant, window.key, actor=actor, reason=reason, now=now, **detail
            )
        if disabled:
            # Not debounced: every enforcer should refuse the tenant as soon as possible.
            self.republish_now("disabling a tenant")
        return disabled

    def record_health(
        self, report: HealthReport, *, reporter: str, bound_region: str | None
    ) -> RecordedHealth:
        """Keep a probe's health observation; on a change of status, republish the state
        bundle at once, so every enforcer routes around (or back to) the target.

        Raises `ReportRefusedError` for a report the policy in force cannot accept.
        """
        config = self._config_in_force()
        with self.db.session() as session:
            recorded = record_health(
                session, config, report, reporter=reporter, bound_region=bound_region
            )
        if recorded.changed:
            # Not debounced: the measure is health change → fallback everywhere in < 2 s.
            self.republish_now("a health change")
        return recorded

    def release_anomaly(self, tenant: str, actor: str, reason: str) -> holds.HeldEntry:
        """End ``tenant``'s spend-anomaly hold in ``actor``'s name; republish at once.

        Raises `holds.NoHoldError` when the tenant's anomaly is not held.
        """
        with self.db.session() as session:
            row = holds.release(session, tenant=tenant, actor=actor, reason=reason)
            released: holds.HeldEntry = {
                "day": row.day,
                "kind": row.kind,
                "since": row.since.astimezone(UTC).isoformat(),
            }
        self.republish_now("an anomaly release")
        return released

    def anomaly_holds(self) -> dict[str, holds.HeldEntry]:
        with self.db.session() as session:
            return holds.holds_state(session)

    def config_or_none(self) -> CompiledConfig | None:
        """The policy in force's config; None while there is none."""
        try:
            return self._config_in_force()
        except NoPolicyInForceError:
            return None

    def health(self) -> list[RecordedHealth]:
        with self.db.session() as session:
            return list_health(session)

    def overview(self, period: str | None = None) -> SpendOverview:
        """Spend against caps in ``period`` (default: this month), per tenant and per day."""
        config = self.config_or_none()
        month, windows = self._month_and_windows(config, period)
        with self.db.session() as session:
            return spend_overview(session, self.spend, config, month, windows)

    def page(
        self, period: str | None = None, *, tenant: str | None = None, limit: int = PAGE_TENANTS
    ) -> SpendPage:
        """`overview` for the first ``limit`` tenants by share of cap, or for ``tenant`` alone."""
        config = self.config_or_none()
        month, windows = self._month_and_windows(config, period)
        with self.db.session() as session:
            return spend_page(
                session, self.spend, config, month, limit=limit, tenant=tenant, windows=windows
            )

    def _month_and_windows(
        self, config: CompiledConfig | None, period: str | None
    ) -> tuple[str, dict[str, str] | None]:
        """The month asked for (default: this one) and, when it is this one, every tenant's
        open window key (so a tenant disabled for its week or day shows as disabled)."""
        now = self.clock()
        month = period or period_of(now)
        if month != period_of(now):
            return month, None
        return month, {tid: span.key for tid, span in usage.open_windows(config, now).items()}

    def costs(
        self, query: CostQuery, *, tenant: str | None, scope: frozenset[str] | None
    ) -> CostReport:
        """Exact spend over ``query``'s range (see `nexus_control.budgets.costs`)."""
        return cost_report(self.spend, query, tenant=tenant, scope=scope)

    def republish_now(self, after: str) -> None:
        """Rebuild the state bundle now, not debounced; a failure leaves it to `run`."""
        try:
            self.rebuild()
        except Exception:
            log.exception("state bundle rebuild after %s failed; will retry", after)
            self.mark_dirty()

    def mark_dirty(self) -> None:
        """Spend or caps may have changed: rebuild the state bundle soon."""
        self._dirty.set()

    def rebuild(self, *, refresh: bool = False) -> bool:
        """Rebuild and sign the state bundle if its content changed, or with ``refresh``
        whenever its ``as_of`` moves on; wake the pollers."""
        with self._lock:
            self._dirty.clear()
            config = self.config_or_none()
            now = self.clock()
            with self.db.session() as session:
                document = usage.state_document(session, self.spend, config, period_of(now), now)
                used = document["approvals"]["used"].values()
                self._next_expiry = min(used) + approval_uses.CLOCK_GRACE_S + 1 if used else None
                resets = document.get("resets", {}).values()
                self._next_reset = min(map(datetime.fromisoformat, resets)) if resets else None
                current = state.current_state(session)
                kid = self.signer.key_id()
                unchanged = current is not None and (
                    current.revision == state.state_revision(document, kid)
                    or (not refresh and state.same_content(document, current.data))
                )
                if unchanged:
                    return False
            signed = self.signer.sign(document)
            with self.db.session() as session:
                changed = state.store_state(session, signed, document)
        if changed:
            regions = [*self._regions(), "*"]
            self.notifier.notify(bundle_key(region, STATE_BUNDLE) for region in regions)
        return changed

    async def run(self, stop: asyncio.Event) -> None:
        """Rebuild the state bundle when spend changes (debounced), when the month turns
        and when a listed tenant's window ends; ``refresh_s`` after the last usage, once
        more with a new ``as_of`` even if nothing else changed, so enforcers release the
        holds of requests that ended meanwhile."""
        while not stop.is_set():
            now = self.clock()
            turned = period_of(now) != self._period
            expired = self._next_expiry is not None and time.time() >= self._next_expiry
            reset = self._next_reset is not None and now >= self._next_reset
            dirty = self._dirty.is_set()
            trailing = self._refresh_at is not None and time.monotonic() >= self._refresh_at
            if not dirty and not turned and not expired and not reset and not trailing:
                await asyncio.sleep(IDLE_POLL_S)
                continue
            self._period = period_of(now)
            self._next_expiry = None
            self._next_reset = None
            self._refresh_at = None
            if dirty and self._refresh_s > 0:
                self._refresh_at = time.monotonic() + self._debounce_s + self._refresh_s
            await asyncio.sleep(self._debounce_s)
            try:
                await asyncio.to_thread(self.rebuild, refresh=trailing and not dirty)
            except Exception:
                log.exception("state bundle rebuild failed; will retry")
                self._dirty.set()
                await asyncio.sleep(RETRY_AFTER_FAILURE_S)
