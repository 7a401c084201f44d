"""The signed state bundle ``nexus-state``: spend ratios and remaining budgets, disabled
tenants, used approvals.

Signed like the policy bundle, with the key ring's active bundle key through
its key provider (`nexus_control.authoring.signatures` writes OPA's
``.signatures.json``, hashing JSON in OPA's own canonical form). Its root
``nexus_state`` is disjoint from the policy bundle's roots, so enforcers hold
both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NotRequired, TypedDict

from sqlalchemy.orm import Session

from nexus_contract.canonical import canonical_json
from nexus_contract.wire import STATE_BUNDLE, STATE_ROOTS
from nexus_control.authoring.archive import write_archive
from nexus_control.authoring.signatures import MANIFEST_FILE, SIGNATURES_FILE, sign_bundle_files
from nexus_control.budgets.holds import HeldEntry
from nexus_control.health.reports import HealthState
from nexus_control.store.tables import StateBundle
from nexus_runtime.keys.provider import SigningKey

__all__ = [
    "ApprovalsState",
    "DisabledEntry",
    "RemainingMicroUsd",
    "SignedState",
    "SpendRatios",
    "StateDocument",
    "build_state_bundle",
    "current_state",
    "same_content",
    "state_revision",
    "store_state",
]


class RemainingMicroUsd(TypedDict):
    """Cap - spend for the period per cap, in whole micro-USD rounded down (negative: over)."""

    total: int
    models: dict[str, int]
    features: dict[str, int]


class SpendRatios(TypedDict):
    """Spend ÷ cap for the period: ≥ 1 means the cap is reached."""

    ratio: float
    models: dict[str, float]
    features: dict[str, float]
    remaining: RemainingMicroUsd
    """What the policy checks a request's worst-case cost against (ratios are rounded)."""


class DisabledEntry(TypedDict):
    reason: str
    since: str


class ApprovalsState(TypedDict):
    used: dict[str, int]
    """``jti`` → ``exp`` of every approval already spent, until it expires."""


class StateDocument(TypedDict):
    """``data.nexus_state``, the state bundle's one document (see rego/README.md)."""

    period: str
    as_of: int
    """When spend was read for this document (Unix milliseconds, taken before reading): an
    enforcer releases a request's budget hold once a document read after the request
    ended (plus a grace) is evaluated."""
    spend: dict[str, SpendRatios]
    disabled: dict[str, DisabledEntry]
    approvals: ApprovalsState
    health: NotRequired[HealthState]
    """Degraded and down models and providers; absent while every one is healthy."""
    resets: NotRequired[dict[str, str]]
    """When (RFC 3339, UTC) the budget window of each tenant in ``spend`` or ``disabled``
    ends: the policy's ``retry-after`` on a reached cap; absent while no tenant is listed."""
    anomaly_holds: NotRequired[dict[str, HeldEntry]]
    """Tenants whose spend anomaly is held (`nexus_control.budgets.holds`); absent while
    none is."""


@dataclass(frozen=True)
class SignedState:
    revision: str
    archive: bytes


def state_revision(document: StateDocument, key_id: str) -> str:
    """The state bundle's revision: its content and the key that signs it.

    A new signing key gives a new revision, so enforcers fetch the state
    bundle signed by it before the old key is retired.
    """
    return hashlib.sha256(canonical_json(document) + b"\0" + key_id.encode()).hexdigest()


def same_content(document: StateDocument, stored: Mapping[str, object]) -> bool:
    """Whether ``document`` says what ``stored`` (the current state bundle's data) says,
    whenever each was read: ``as_of`` alone is no reason to republish."""
    mine = {k: v for k, v in document.items() if k != "as_of"}
    theirs = {k: v for k, v in stored.items() if k != "as_of"}
    return canonical_json(mine) == canonical_json(theirs)


def build_state_bundle(document: StateDocument, *, key: SigningKey, key_id: str) -> SignedState:
    """Sign ``document`` as a bundle rooted at ``nexus_state`` with ``key`` (id ``key_id``)."""
    data = canonical_json(document)
    revision = state_revision(document, key_id)
    manifest = {
        "revision": revision,
        "roots": list(STATE_ROOTS),
        "metadata": {"bundle": STATE_BUNDLE, "period": document["period"]},
    }
    files = {"nexus_state/data.json": data, MANIFEST_FILE: canonical_json(manifest)}
    files[SIGNATURES_FILE] = sign_bundle_files(files, key, key_id)
    return SignedState(revision, write_archive(files))


def store_state(session: Session, state: SignedState, document: StateDocument) -> bool:
    """Keep ``state`` as the current state bundle; False when it is already current."""
    row = session.get(StateBundle, STATE_BUNDLE)
    if row is not None and row.revision == state.revision:
        return False
    if row is None:
        row = StateBundle(name=STATE_BUNDLE)
        session.add(row)
    row.revision = state.revision
    row.archive = state.archive
    row.data = dict(document)
    row.built_at = datetime.now(UTC)
    return True


def current_state(session: Session) -> StateBundle | None:
    return session.get(StateBundle, STATE_BUNDLE)
