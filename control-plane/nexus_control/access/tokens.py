"""Bearer tokens: created once, shown once, stored only as SHA-256, each with one role.

Roles scope what a token may do: authors publish, approvers approve,
operators drive rollouts, compliance officers read evidence, enforcers poll
bundles and report status, the gateway reports usage. An enforcer token is
bound to a region and, optionally, to one enforcer id; a gateway token lists
the tenants it may report usage for (at least one, at most
``MAX_GATEWAY_TENANTS``), so a leaked or misused gateway token cannot spend
or disable any other tenant.
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
from nexus_control.store.tables import ApiToken

__all__ = [
    "MAX_GATEWAY_TENANTS",
    "TOKEN_PREFIX",
    "Principal",
    "Role",
    "TokenError",
    "authenticate",
    "create_token",
    "principal_of_token_id",
    "revoke_token",
    "token_digest",
]

TOKEN_PREFIX = "nxp_"  # noqa: S105 - a prefix that marks our tokens in logs and scanners
MAX_GATEWAY_TENANTS = 1000
_TENANT_ID = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$")


class Role(StrEnum):
    AUTHOR = "author"
    APPROVER = "approver"
    OPERATOR = "operator"
    COMPLIANCE = "compliance"
    ENFORCER = "enforcer"
    GATEWAY = "gateway"


class TokenError(NexusError):
    """A token cannot be created as asked (an enforcer token without a region, say)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id, its name (the actor in audit events) and its role."""

    token_id: str
    name: str
    role: Role
    region: str | None
    enforcer_id: str | None
    tenants: tuple[str, ...] = ()
    """A gateway token's scope: the tenants it may report usage for (empty otherwise)."""

    def may_report_for(self, tenant: str) -> bool:
        return self.role is Role.GATEWAY and tenant in self.tenants


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    session: Session,
    *,
    name: str,
    role: Role,
    region: str | None = None,
    enforcer_id: str | None = None,
    tenants: Sequence[str] = (),
) -> tuple[str, Principal]:
    """Create a token; return its plain text (shown once, never stored) and its principal."""
    if role is Role.ENFORCER and not region:
        raise TokenError("an enforcer token must be bound to a region")
    if role is not Role.ENFORCER and (region or enforcer_id):
        raise TokenError("only enforcer tokens are bound to a region or an enforcer")
    scope = _gateway_scope(role, tenants)
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        id=str(uuid.uuid4()),
        name=name,
        role=role.value,
        token_sha256=token_digest(plain),
        region=region,
        enforcer_id=enforcer_id,
        tenants=list(scope) if role is Role.GATEWAY else None,
        created_at=datetime.now(UTC),
    )
    session.add(row)
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


def revoke_token(session: Session, token_id: str) -> bool:
    row = session.get(ApiToken, token_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = datetime.now(UTC)
    return True


def _gateway_scope(role: Role, tenants: Sequence[str]) -> tuple[str, ...]:
    """The sorted, de-duplicated tenants of a gateway token; TokenError when malformed."""
    if role is not Role.GATEWAY:
        if tenants:
            raise TokenError("only gateway tokens are scoped to tenants")
        return ()
    if isinstance(tenants, str):
        raise TokenError("a gateway token's tenants are a list of tenant ids")
    scope = tuple(sorted(set(tenants)))
    if not scope:
        raise TokenError("a gateway token must name the tenants it may report usage for")
    if len(scope) > MAX_GATEWAY_TENANTS:
        raise TokenError(f"a gateway token may name at most {MAX_GATEWAY_TENANTS} tenants")
    for tenant in scope:
        if not isinstance(tenant, str) or not _TENANT_ID.match(tenant):
            raise TokenError(f"{tenant!r} is not a tenant id")
    return scope


def _principal(row: ApiToken) -> Principal:
    tenants = tuple(row.tenants or ()) if row.role == Role.GATEWAY.value else ()
    return Principal(row.id, row.name, Role(row.role), row.region, row.enforcer_id, tenants)
