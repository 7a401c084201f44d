"""One approval, one call: the control plane's record of issued approvals and their use.

Every approval the control plane issues is kept (by ``jti``) until it
expires. The gateway reports the approval a call spent (the enforcer names it
in ``x-nexus-approval-id``); the first report marks it used, the control plane
republishes the state bundle, and every enforcer of every region refuses that
``jti`` from the moment it holds the new state (a long poll away). The set is
bounded: only approvals the control plane issued can be marked, and each
leaves the set (and the table) once it has expired, plus a grace for
enforcer clocks that run behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from nexus_contract.errors import NexusError
from nexus_control.access.approvals import Approval
from nexus_control.store import outbox
from nexus_control.store.tables import ToolApproval

__all__ = [
    "CLOCK_GRACE_S",
    "ApprovalUse",
    "UnknownApprovalError",
    "record_issued",
    "record_use",
    "used_approvals",
]

CLOCK_GRACE_S = 60
"""How long past ``exp`` a used id stays listed: the skew the Rego tolerates on iat."""


class UnknownApprovalError(NexusError):
    """A use reported for an approval the control plane never issued for that tenant."""


@dataclass(frozen=True)
class ApprovalUse:
    approval_id: str
    tenant: str
    tool: str
    first_use: bool
    """False when the approval was already reported used (the report changes nothing)."""
    used_at: datetime
    expires_at: datetime


def record_issued(session: Session, approval: Approval) -> None:
    """Remember ``approval`` so that its use can be reported (and only its)."""
    session.add(
        ToolApproval(
            token_id=approval.token_id,
            tenant=approval.tenant,
            tool=approval.tool,
            subject=approval.subject,
            args_sha256=approval.args_sha256,
            approver=approval.approver,
            issued_at=datetime.fromtimestamp(approval.issued_at, UTC),
            expires_at=datetime.fromtimestamp(approval.expires_at, UTC),
        )
    )


def record_use(
    session: Session,
    *,
    approval_id: str,
    tenant: str,
    reporter: str,
    decision_id: str | None,
    now: datetime | None = None,
) -> ApprovalUse:
    """Mark ``approval_id`` used (first report wins) and audit the report.

    A second report of the same id is audited too (a replay the enforcers
    let through before they held the new state shows up as a second
    decision id) but changes nothing.
    """
    when = now or datetime.now(UTC)
    row = session.get(ToolApproval, approval_id, with_for_update=True)
    if row is None or row.tenant != tenant:
        raise UnknownApprovalError(f"no approval {approval_id!r} was issued for tenant {tenant!r}")
    first = row.used_at is None
    if first:
        row.used_at = when
        row.used_by = reporter
        row.decision_id = decision_id
    outbox.record(
        session,
        "tool_approval.used" if first else "tool_approval.reused",
        reporter,
        token_id=approval_id,
        tenant=tenant,
        tool=row.tool,
        subject=row.subject,
        decision_id=decision_id,
        first_decision_id=row.decision_id,
        expires_at=row.expires_at.isoformat(),
    )
    used_at = row.used_at
    assert used_at is not None
    return ApprovalUse(approval_id, tenant, row.tool, first, used_at, row.expires_at)


def used_approvals(session: Session, now: datetime | None = None) -> dict[str, int]:
    """``jti`` → ``exp`` (Unix seconds) of every used approval not yet past its expiry grace.

    Rows past the grace are deleted on the way: no enforcer can accept them
    any more, so nobody needs to remember them.
    """
    when = now or datetime.now(UTC)
    horizon = when - timedelta(seconds=CLOCK_GRACE_S)
    session.execute(delete(ToolApproval).where(ToolApproval.expires_at < horizon))
    rows = session.execute(
        select(ToolApproval.token_id, ToolApproval.expires_at)
        .where(ToolApproval.used_at.is_not(None))
        .order_by(ToolApproval.token_id)
    )
    return {token_id: int(expires.timestamp()) for token_id, expires in rows}
