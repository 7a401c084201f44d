"""Console sessions: a role token exchanged once for a cookie, and the CSRF token of each form.

The cookie is 32 random bytes; the database keeps only its SHA-256, so a copy
of the database opens no session. A session speaks for the API token it was
opened with and is re-checked on every request: it ends at its absolute
expiry, after `ConsoleSettings.idle_s` without a request, at logout, or as soon
as the token is revoked.

The CSRF token of a session is HMAC-SHA256 keyed by the cookie itself, so it
is never stored and cannot be derived from the database; every
state-changing form carries it and `check_csrf` compares in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from nexus_contract.errors import NexusError
from nexus_control.access.tokens import Principal, authenticate, principal_of_token_id
from nexus_control.store import outbox
from nexus_control.store.tables import ConsoleSession

__all__ = [
    "CONSOLE_ROLES",
    "CSRF_FIELD",
    "CsrfError",
    "OpenedSession",
    "SessionEndedError",
    "SignInError",
    "check_csrf",
    "csrf_token",
    "end_session",
    "end_sessions_of_token",
    "open_session",
    "resume_session",
]

CSRF_FIELD = "csrf"
_CSRF_LABEL = b"nexus-console-csrf/v1"


class SignInError(NexusError):
    """The token given at sign-in is unknown, revoked, or of a role that has no console."""


class SessionEndedError(NexusError):
    """The session cookie is missing, unknown, expired, idle too long, or its token revoked."""


class CsrfError(NexusError):
    """A state-changing form came without the session's CSRF token (or with another)."""


@dataclass(frozen=True)
class OpenedSession:
    cookie: str
    """The cookie value: shown to the browser once, stored only as SHA-256."""
    principal: Principal
    expires_at: datetime


CONSOLE_ROLES = frozenset({"author", "approver", "operator", "compliance"})
"""Roles of people; enforcer and gateway tokens are for machines and open no session."""


def _digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


def csrf_token(cookie: str) -> str:
    """The CSRF token of the session whose cookie is ``cookie``."""
    return hmac.new(cookie.encode(), _CSRF_LABEL, hashlib.sha256).hexdigest()


def check_csrf(cookie: str, given: str | None) -> None:
    """Raise `CsrfError` unless ``given`` is the session's CSRF token."""
    if not given or not hmac.compare_digest(csrf_token(cookie), given):
        raise CsrfError("the form's CSRF token is missing or wrong: reload the page and retry")


def open_session(session: Session, token: str, *, ttl_s: int, now: datetime) -> OpenedSession:
    """Exchange a live role token for a new session; the sign-in is an audit event."""
    principal = authenticate(session, token.strip())
    if principal is None:
        raise SignInError("unknown or revoked token")
    if principal.role.value not in CONSOLE_ROLES:
        raise SignInError(f"a {principal.role.value} token is for machines; it opens no console")
    cookie = secrets.token_urlsafe(32)
    expires = now + timedelta(seconds=ttl_s)
    session.add(
        ConsoleSession(
            id_sha256=_digest(cookie),
            token_id=principal.token_id,
            created_at=now,
            expires_at=expires,
            last_seen_at=now,
            ended_at=None,
        )
    )
    outbox.record(session, "console.signed_in", principal.name, role=principal.role.value)
    return OpenedSession(cookie, principal, expires)


def resume_session(
    session: Session, cookie: str | None, *, idle_s: int, now: datetime
) -> Principal:
    """The principal of a live session, its last-seen time moved to ``now``."""
    if not cookie:
        raise SessionEndedError("you are not signed in")
    row = session.get(ConsoleSession, _digest(cookie))
    if row is None or row.ended_at is not None:
        raise SessionEndedError("this session has ended: sign in again")
    if now >= row.expires_at:
        raise SessionEndedError("this session has expired: sign in again")
    if now - row.last_seen_at > timedelta(seconds=idle_s):
        row.ended_at = now
        raise SessionEndedError("this session was idle too long: sign in again")
    principal = principal_of_token_id(session, row.token_id)
    if principal is None:
        row.ended_at = now
        raise SessionEndedError("the token this session was opened with was revoked")
    row.last_seen_at = now
    return principal


def end_session(session: Session, cookie: str | None, *, now: datetime) -> Principal | None:
    """End the session (logout); returns whose it was, None when there was none."""
    if not cookie:
        return None
    row = session.get(ConsoleSession, _digest(cookie))
    if row is None or row.ended_at is not None:
        return None
    row.ended_at = now
    principal = principal_of_token_id(session, row.token_id)
    if principal is not None:
        outbox.record(session, "console.signed_out", principal.name, role=principal.role.value)
    return principal


def end_sessions_of_token(session: Session, token_id: str, *, now: datetime | None = None) -> int:
    """End every open session of a token (when it is revoked); returns how many."""
    result = session.execute(
        update(ConsoleSession)
        .where(ConsoleSession.token_id == token_id, ConsoleSession.ended_at.is_(None))
        .values(ended_at=now or datetime.now(UTC))
    )
    return int(getattr(result, "rowcount", 0) or 0)
