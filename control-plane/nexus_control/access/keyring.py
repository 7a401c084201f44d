"""The control plane's key ring: which keys sign bundles and approvals, and their rotation.

Every key is held by the key provider (files for the demo, a PKCS#11 token
in production); the ring stores only public halves and each key's life:

``next``      published for verification, not yet signing: enforcers are
              re-configured to trust it (and new bundles carry it in their
              approval JWKS) before it signs anything;
``active``    signs; exactly one per purpose;
``retiring``  the previous active key, still trusted until ``retire_after``
              (the rotation window), so revisions it signed keep verifying;
``retired``   trusted nowhere, never used again.

Every change is an outbox event (``key.created``, ``key.activated``,
``key.retiring``, ``key.retired``) written in the change's transaction.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from nexus_contract.errors import NexusError
from nexus_control.access.signing_keys import approval_jwks, approval_key_id
from nexus_control.store import outbox
from nexus_control.store.tables import KeyRecord
from nexus_runtime.database import Database
from nexus_runtime.keys.algorithms import (
    BUNDLE_ALGORITHMS,
    Algorithm,
    PublicKey,
    load_public_pem,
    public_pem,
)
from nexus_runtime.keys.provider import KeyProvider, SigningKey

__all__ = [
    "DEFAULT_ROTATION_WINDOW_S",
    "MAX_ROTATION_WINDOW_S",
    "KeyPurpose",
    "KeyState",
    "Keyring",
    "KeyringError",
    "TrustedKey",
]

DEFAULT_ROTATION_WINDOW_S = 7 * 86_400
"""How long a replaced key stays trusted: long enough for every enforcer to be re-configured."""
MAX_ROTATION_WINDOW_S = 90 * 86_400
SYSTEM_ACTOR = "control-plane"


class KeyringError(NexusError):
    """A key-ring request the keys' states do not allow; nothing was changed."""


class KeyPurpose(StrEnum):
    BUNDLE = "bundle-signing"
    """Signs policy and state bundles; enforcers verify with it (OPA ``keys``)."""
    APPROVAL = "approval-signing"
    """Signs tool approvals; bundles carry its public JWKS for the Rego check."""


class KeyState(StrEnum):
    NEXT = "next"
    ACTIVE = "active"
    RETIRING = "retiring"
    RETIRED = "retired"


_TRUSTED = (KeyState.NEXT, KeyState.ACTIVE, KeyState.RETIRING)


@dataclass(frozen=True)
class TrustedKey:
    kid: str
    purpose: KeyPurpose
    algorithm: Algorithm
    public_pem: str
    state: KeyState
    retire_after: datetime | None

    def public_key(self) -> PublicKey:
        return load_public_pem(self.public_pem)


def _check_algorithm(purpose: KeyPurpose, algorithm: Algorithm) -> None:
    if purpose is KeyPurpose.APPROVAL and algorithm is not Algorithm.ES256:
        raise KeyringError("approval keys are ES256: the Rego check accepts nothing else")
    if purpose is KeyPurpose.BUNDLE and algorithm not in BUNDLE_ALGORITHMS:
        names = ", ".join(sorted(BUNDLE_ALGORITHMS))
        raise KeyringError(f"bundle keys sign {names}: OPA verifies nothing else")


def _now() -> datetime:
    return datetime.now(UTC)


def _trusted(row: KeyRecord) -> TrustedKey:
    return TrustedKey(
        row.kid,
        KeyPurpose(row.purpose),
        Algorithm(row.algorithm),
        row.public_pem,
        KeyState(row.state),
        row.retire_after,
    )


class Keyring:
    """The key ring over the control plane's database and one key provider."""

    def __init__(
        self,
        db: Database,
        provider: KeyProvider,
        *,
        bundle_kid: str,
        algorithms: dict[KeyPurpose, Algorithm],
        initial_references: dict[KeyPurpose, str],
    ) -> None:
        """``initial_references``: where each purpose's first key is (or is made)."""
        self.db = db
        self.provider = provider
        self.bundle_kid = bundle_kid
        self.algorithms = algorithms
        self.initial_references = initial_references
        self._open: dict[str, SigningKey] = {}
        self._lock = threading.Lock()

    # -- keys in use ------------------------------------------------------------------

    def ensure(self) -> None:
        """Give every purpose an active key: register (or make) its first key if it has none."""
        with self.db.session() as session:
            self.sweep(session)
            for purpose in KeyPurpose:
                if self._active_row(session, purpose) is not None:
                    continue
                reference = self.initial_references[purpose]
                algorithm = self.algorithms[purpose]
                _check_algorithm(purpose, algorithm)
                if self.provider.exists(reference):
                    key = self.provider.open(reference, algorithm)
                else:
                    key = self.provider.generate(reference, algorithm)
                kid = self._kid_for(session, purpose, key, first=True)
                row = self._register(session, purpose, key, kid, SYSTEM_ACTOR, KeyState.ACTIVE)
                row.activated_at = _now()
                self._open[kid] = key
                outbox.record(session, "key.activated", SYSTEM_ACTOR, kid=kid, purpose=purpose)

    def signer(self, purpose: KeyPurpose) -> tuple[SigningKey, str]:
        """The active key of ``purpose`` and its id."""
        with self.db.session() as session:
            row = self._active_row(session, purpose)
            if row is None:
                raise KeyringError(f"no active {purpose} key; the control plane has not started")
            kid, reference, algorithm = row.kid, row.reference, Algorithm(row.algorithm)
        with self._lock:
            key = self._open.get(kid)
            if key is None:
                key = self.provider.open(reference, algorithm)
                self._open[kid] = key
        return key, kid

    def trusted(self, purpose: KeyPurpose) -> list[TrustedKey]:
        """Every key of ``purpose`` verifiers should accept now (next, active, retiring)."""
        with self.db.session() as session:
            self.sweep(session)
            rows = session.scalars(
                select(KeyRecord)
                .where(KeyRecord.purpose == purpose.value, KeyRecord.state.in_(_TRUSTED))
                .order_by(KeyRecord.created_at, KeyRecord.kid)
            )
            return [_trusted(row) for row in rows]

    def keys(self) -> list[TrustedKey]:
        """Every key of every purpose, retired ones included, oldest first."""
        with self.db.session() as session:
            self.sweep(session)
            rows = session.scalars(select(KeyRecord).order_by(KeyRecord.created_at, KeyRecord.kid))
            return [_trusted(row) for row in rows]

    def approval_jwks(self) -> str:
        """The public JWKS that bundles built now carry to verify tool approvals."""
        return approval_jwks([key.public_key() for key in self.trusted(KeyPurpose.APPROVAL)])

    def trusted_for_verification(
        self, purpose: KeyPurpose
    ) -> dict[str, tuple[Algorithm, PublicKey]]:
        return {key.kid: (key.algorithm, key.public_key()) for key in self.trusted(purpose)}

    # -- rotation ---------------------------------------------------------------------

    def rotate(
        self, purpose: KeyPurpose, actor: str, algorithm: Algorithm | None = None
    ) -> TrustedKey:
        """Make a new key of ``purpose`` in the provider, trusted but not signing (``next``)."""
        chosen = algorithm or self.algorithms[purpose]
        _check_algorithm(purpose, chosen)
        with self.db.session() as session:
            pending = session.scalar(
                select(KeyRecord).where(
                    KeyRecord.purpose == purpose.value, KeyRecord.state == KeyState.NEXT.value
                )
            )
            if pending is not None:
                raise KeyringError(
                    f"key {pending.kid} is already waiting to be activated; activate or retire it"
                )
            count = len(
                list(
                    session.scalars(select(KeyRecord.kid).where(KeyRecord.purpose == purpose.value))
                )
            )
            reference = f"{purpose.value}-{count + 1}-{uuid.uuid4().hex[:12]}"
            key = self.provider.generate(reference, chosen)
            kid = self._kid_for(session, purpose, key, first=False, serial=count + 1)
            row = self._register(session, purpose, key, kid, actor, KeyState.NEXT)
            with self._lock:
                self._open[kid] = key
            return _trusted(row)

    def activate(
        self, kid: str, actor: str, window_s: int = DEFAULT_ROTATION_WINDOW_S
    ) -> TrustedKey:
        """``kid`` signs from now on; the key it replaces stays trusted for ``window_s``."""
        if not 0 <= window_s <= MAX_ROTATION_WINDOW_S:
            raise KeyringError(f"the rotation window is 0 to {MAX_ROTATION_WINDOW_S} seconds")
        with self.db.session() as session:
            self.sweep(session)
            row = self._row(session, kid)
            state = KeyState(row.state)
            if state is KeyState.ACTIVE:
                raise KeyringError(f"key {kid} is already active")
            if state is KeyState.RETIRED:
                raise KeyringError(f"key {kid} is retired; a retired key never signs again")
            now = _now()
            previous = self._active_row(session, KeyPurpose(row.purpose))
            if previous is not None:
                previous.state = KeyState.RETIRING.value
                previous.retire_after = now + timedelta(seconds=window_s)
                outbox.record(
                    session,
                    "key.retiring",
                    actor,
                    kid=previous.kid,
                    purpose=previous.purpose,
                    retire_after=previous.retire_after.isoformat(),
                )
            row.state = KeyState.ACTIVE.value
            row.activated_at = now
            row.retire_after = None
            outbox.record(
                session,
                "key.activated",
                actor,
                kid=kid,
                purpose=row.purpose,
                replaces=previous.kid if previous is not None else None,
            )
            return _trusted(row)

    def retire(self, kid: str, actor: str) -> TrustedKey:
        """Trust ``kid`` nowhere from now on (not the active key: activate another first)."""
        with self.db.session() as session:
            row = self._row(session, kid)
            if row.state == KeyState.ACTIVE.value:
                raise KeyringError(f"key {kid} is active; activate its successor first")
            if row.state == KeyState.RETIRED.value:
                raise KeyringError(f"key {kid} is already retired")
            self._retire(session, row, actor)
            return _trusted(row)

    def sweep(self, session: Session) -> list[str]:
        """Retire every retiring key whose window has passed; their ids."""
        now = _now()
        rows = list(
            session.scalars(
                select(KeyRecord).where(
                    KeyRecord.state == KeyState.RETIRING.value, KeyRecord.retire_after <= now
                )
            )
        )
        for row in rows:
            self._retire(session, row, SYSTEM_ACTOR)
        return [row.kid for row in rows]

    # -- helpers ----------------------------------------------------------------------

    def _retire(self, session: Session, row: KeyRecord, actor: str) -> None:
        row.state = KeyState.RETIRED.value
        row.retired_at = _now()
        outbox.record(session, "key.retired", actor, kid=row.kid, purpose=row.purpose)
        with self._lock:
            self._open.pop(row.kid, None)

    def _kid_for(
        self,
        session: Session,
        purpose: KeyPurpose,
        key: SigningKey,
        *,
        first: bool,
        serial: int = 1,
    ) -> str:
        if purpose is KeyPurpose.APPROVAL:
            kid = approval_key_id(key)
        else:
            kid = self.bundle_kid if first else f"{self.bundle_kid}-{serial}"
        if session.get(KeyRecord, kid) is not None:
            raise KeyringError(f"a key with id {kid} is already registered")
        return kid

    def _register(
        self,
        session: Session,
        purpose: KeyPurpose,
        key: SigningKey,
        kid: str,
        actor: str,
        state: KeyState,
    ) -> KeyRecord:
        row = KeyRecord(
            kid=kid,
            purpose=purpose.value,
            algorithm=key.algorithm.value,
            provider=self.provider.kind,
            reference=key.reference,
            public_pem=public_pem(key.public_key()),
            state=state.value,
            created_by=actor,
            created_at=_now(),
        )
        session.add(row)
        session.flush()
        outbox.record(
            session,
            "key.created",
            actor,
            kid=kid,
            purpose=purpose.value,
            algorithm=key.algorithm.value,
            provider=self.provider.kind,
            state=state.value,
        )
        return row

    @staticmethod
    def _row(session: Session, kid: str) -> KeyRecord:
        row = session.get(KeyRecord, kid)
        if row is None:
            raise KeyringError(f"no key {kid} in the key ring")
        return row

    @staticmethod
    def _active_row(session: Session, purpose: KeyPurpose) -> KeyRecord | None:
        return session.scalar(
            select(KeyRecord).where(
                KeyRecord.purpose == purpose.value, KeyRecord.state == KeyState.ACTIVE.value
            )
        )
