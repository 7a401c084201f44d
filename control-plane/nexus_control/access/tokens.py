"""Bearer tokens: created once, shown once, stored only as SHA-256, each with one role.

Roles scope what a token may do: authors publish, approvers approve,
operators drive rollouts, compliance officers read evidence, enforcers poll
bundles and report status, the gateway reports usage, Alertmanager (a remediator)
posts alerts whose remediations act in its name, an evaluation pipeline (an
evaluator) posts offline evaluation results, a FinOps reader reads the spend of
the tenants its token names, a health probe reports provider and model health (in
the one region its token is bound to, if it is). An enforcer token is
bound to one enforcer id and its region: it speaks for that enforcer only; a
gateway token lists the tenants it may report usage for (at least one, at
most ``MAX_GATEWAY_TENANTS``), so a leaked or misused gateway token cannot
spend or disable any other tenant. A finops token lists tenants the same way: the
only spend it may read.

Every token belongs to a principal with an immutable id. A name is a
principal's, unique by its folded form (case and inner runs of spaces do not
make a new person), so a second token for the same name joins the same
principal; separation of duties compares principal ids, never names.
Creating a token (the grant of its role) and revoking one are control-plane
events in the audit log.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from nexus_contract.errors import NexusError
from nexus_control.store import outbox
from nexus_control.store.tables import ApiToken
from nexus_control.store.tables import Principal as PrincipalRow

__all__ = [
    "MAX_GATEWAY_TENANTS",
    "MAX_NAME_LENGTH",
    "TENANT_SCOPED_ROLES",
    "TOKEN_PREFIX",
    "Principal",
    "Role",
    "TokenError",
    "authenticate",
    "check_name",
    "create_token",
    "principal_of_token_id",
    "revoke_token",
    "token_digest",
]

TOKEN_PREFIX = "nxp_"  # noqa: S105 - a prefix that marks our tokens in logs and scanners
MAX_NAME_LENGTH = 64
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._@ -]{0,62}[A-Za-z0-9._@-])?$")
_ENFORCER_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
MAX_GATEWAY_TENANTS = 1000
_TENANT_ID = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$")


class Role(StrEnum):
    AUTHOR = "author"
    APPROVER = "approver"
    OPERATOR = "operator"
    COMPLIANCE = "compliance"
    ENFORCER = "enforcer"
    GATEWAY = "gateway"
    REMEDIATOR = "remediator"
    """Alertmanager: may post alerts to the webhook, and nothing else."""
    EVALUATOR = "evaluator"
    """An offline evaluation pipeline: may post evaluation results, and nothing else."""
    FINOPS = "finops"
    """May read the spend of the tenants its token names (the cost API), and nothing else."""
    PROBE = "probe"
    """A provider health probe: may report model and provider health (in its token's region
    when the token names one), and nothing else."""


TENANT_SCOPED_ROLES = frozenset({Role.GATEWAY, Role.FINOPS})
"""Roles whose tokens name the tenants they act for."""


class TokenError(NexusError):
    """A token cannot be created as asked (an enforcer token without a region, say)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id, its name (the actor in audit events), its role, and
    the immutable id of the principal holding it (what separation of duties compares)."""

    token_id: str
    name: str
    role: Role
    region: str | None
    enforcer_id: str | None
    principal_id: str
    tenants: tuple[str, ...] = ()
    """A gateway or finops token's scope: the tenants it may report usage for, or read the
    spend of (empty otherwise)."""

    def may_report_for(self, tenant: str) -> bool:
        return self.role is Role.GATEWAY and tenant in self.tenants


def check_name(name: str) -> str:
    """``name`` if it is a valid principal name; raise `TokenError` saying what is wrong."""
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise TokenError(f"a name has 1 to {MAX_NAME_LENGTH} characters, not {len(name)}")
    if name != name.strip():
        raise TokenError(f"the name {name!r} starts or ends with white space")
    if "  " in name or not _NAME.match(name):
        raise TokenError(
            f"the name {name!r} may hold only letters, digits, single spaces and . _ @ -, "
            "and starts and ends with a letter, digit or one of . _ @ -"
        )
    return name


def _name_key(name: str) -> str:
    return " ".join(name.split()).casefold()


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _principal_row(session: Session, name: str, actor: str, now: datetime) -> PrincipalRow:
    key = _name_key(name)
    row = session.scalar(select(PrincipalRow).where(PrincipalRow.name_key == key))
    if row is None:
        row = PrincipalRow(id=str(uuid.uuid4()), name=name, name_key=key, created_at=now)
        session.add(row)
        session.flush()
        outbox.record(session, "access.principal_created", actor, principal=row.id, name=name)
    return row


def create_token(
    session: Session,
    *,
    name: str,
    role: Role,
    region: str | None = None,
    enforcer_id: str | None = None,
    tenants: Sequence[str] = (),
    actor: str = "nexus-policy",
) -> tuple[str, Principal]:
    """Create a token; return its plain text (shown once, never stored) and its principal.

    ``name`` names the principal: an existing one (by folded name) gets another
    token, otherwise a principal is made. ``actor`` is who creates it (audited).
    """
    check_name(name)
    if role is Role.ENFORCER and not (region and enforcer_id):
        raise TokenError(
            "an enforcer token is bound to one enforcer id and its region (--enforcer and --region)"
        )
    if role is Role.PROBE and enforcer_id:
        raise TokenError("a probe token may be bound to a region (--region), not an enforcer")
    if role not in (Role.ENFORCER, Role.PROBE) and (region or enforcer_id):
        raise TokenError("only enforcer and probe tokens are bound to a region")
    if region is not None and not _REGION.match(region):
        raise TokenError(f"region {region!r} is not a lower-case id")
    if enforcer_id is not None and not _ENFORCER_ID.match(enforcer_id):
        raise TokenError(f"enforcer id {enforcer_id!r} is not a lower-case id")
    scope = _tenant_scope(role, tenants)
    now = datetime.now(UTC)
    holder = _principal_row(session, name, actor, now)
    had_role = session.scalar(
        select(ApiToken.id).where(ApiToken.principal_id == holder.id, ApiToken.role == role.value)
    )
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        id=str(uuid.uuid4()),
        principal_id=holder.id,
        name=holder.name,
        role=role.value,
        token_sha256=token_digest(plain),
        region=region,
        enforcer_id=enforcer_id,
        tenants=list(scope) if role in TENANT_SCOPED_ROLES else None,
        created_at=now,
    )
    session.add(row)
    binding: dict[str, object] = {"region": region, "enforcer": enforcer_id}
    if scope:
        binding["tenants"] = list(scope)
    if had_role is None:
        outbox.record(
            session, "access.role_granted", actor, principal=holder.id, role=role.value, **binding
        )
    outbox.record(
        session,
        "access.token_created",
        actor,
        token=row.id,
        principal=holder.id,
        role=role.value,
        **binding,
    )
    return plain, _principal(row)


def authenticate(session: Session, token: str) -> Principal | None:
    """The principal of a live token, or None (unknown or revoked)."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_sha256 == token_digest(token)))
    if row is None or row.revoked_at is not None:
        return None
    return _principal(row)


def principal_of_token_id(session: Session, token_id: str) -> Principal | None:
    """The principal of the live token with id ``token_id`` (a console session's), or None."""
    row = session.get(ApiToken, token_id)
    if row is None or row.revoked_at is not None:
        return None
    return _principal(row)


def revoke_token(session: Session, token_id: str, *, actor: str = "nexus-policy") -> bool:
    """Revoke the live token ``token_id`` (audited); False if there is none."""
    row = session.get(ApiToken, token_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = datetime.now(UTC)
    outbox.record(
        session,
        "access.token_revoked",
        actor,
        token=row.id,
        principal=row.principal_id,
        role=row.role,
    )
    return True


def _tenant_scope(role: Role, tenants: Sequence[str]) -> tuple[str, ...]:
    """The sorted, de-duplicated tenants of a gateway or finops token; TokenError when
    malformed."""
    if role not in TENANT_SCOPED_ROLES:
        if tenants:
            raise TokenError("only gateway and finops tokens are scoped to tenants")
        return ()
    if isinstance(tenants, str):
        raise TokenError(f"a {role.value} token's tenants are a list of tenant ids")
    scope = tuple(sorted(set(tenants)))
    if not scope:
        acts = "report usage for" if role is Role.GATEWAY else "read the spend of"
        raise TokenError(f"a {role.value} token must name the tenants it may {acts}")
    if len(scope) > MAX_GATEWAY_TENANTS:
        raise TokenError(f"a {role.value} token may name at most {MAX_GATEWAY_TENANTS} tenants")
    for tenant in scope:
        if not isinstance(tenant, str) or not _TENANT_ID.match(tenant):
            raise TokenError(f"{tenant!r} is not a tenant id")
    return scope


def _principal(row: ApiToken) -> Principal:
    scoped = row.role in {r.value for r in TENANT_SCOPED_ROLES}
    tenants = tuple(row.tenants or ()) if scoped else ()
    return Principal(
        row.id, row.name, Role(row.role), row.region, row.enforcer_id, row.principal_id, tenants
    )
