"""The signed state bundle ``nexus-state``: live spend ratios and disabled tenants.

Built with the real ``opa build --signing-key`` like the policy bundle (OPA
hashes JSON in its own canonical form; a hand-made signature would have to
match it byte for byte). Its root ``nexus_state`` is disjoint from the
policy bundle's roots, so enforcers hold both.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypedDict

from sqlalchemy.orm import Session

from nexus_contract.canonical import canonical_json
from nexus_contract.wire import STATE_BUNDLE, STATE_ROOTS
from nexus_control.authoring.opa import Opa
from nexus_control.store.tables import StateBundle

__all__ = [
    "DisabledEntry",
    "SignedState",
    "SpendRatios",
    "StateDocument",
    "build_state_bundle",
    "current_state",
    "store_state",
]


class SpendRatios(TypedDict):
    """Spend ÷ cap for the period: ≥ 1 means the cap is reached."""

    ratio: float
    models: dict[str, float]
    features: dict[str, float]


class DisabledEntry(TypedDict):
    reason: str
    since: str


class StateDocument(TypedDict):
    """``data.nexus_state``, the state bundle's one document (see rego/README.md)."""

    period: str
    spend: dict[str, SpendRatios]
    disabled: dict[str, DisabledEntry]


@dataclass(frozen=True)
class SignedState:
    revision: str
    archive: bytes


def build_state_bundle(
    opa: Opa, document: StateDocument, *, signing_key: Path, key_id: str
) -> SignedState:
    """Sign ``document`` as a bundle rooted at ``nexus_state``."""
    data = canonical_json(document)
    revision = hashlib.sha256(data).hexdigest()
    manifest = {
        "revision": revision,
        "roots": list(STATE_ROOTS),
        "metadata": {"bundle": STATE_BUNDLE, "period": document["period"]},
    }
    with tempfile.TemporaryDirectory(prefix="nexus-state-") as tmp:
        stage = Path(tmp) / "bundle"
        (stage / "nexus_state").mkdir(parents=True)
        (stage / "nexus_state" / "data.json").write_bytes(data)
        (stage / ".manifest").write_bytes(canonical_json(manifest))
        output = Path(tmp) / "state.tar.gz"
        opa.build_signed(stage, output, signing_key=signing_key, key_id=key_id)
        return SignedState(revision, output.read_bytes())


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
