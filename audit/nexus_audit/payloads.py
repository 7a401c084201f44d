"""Payloads stored apart from the leaves, AES-GCM encrypted under per-tenant or per-subject keys.

A payload belongs to the data key of its (tenant, subject): subject None is
the tenant's own key. Destroying a key (`PayloadVault.destroy_keys`) makes
every payload under it unreadable for good, crypto-shredding, while the
leaves, which only carry a salted commitment, and so every proof, stay valid.

Each ciphertext is bound to its leaf and key (the AEAD's associated data is
the leaf index and key id), so a ciphertext moved onto another row fails to
decrypt instead of passing as that row's payload.

Tenant and subject names longer than the columns allow are stored as
``sha256:<hex>`` of the name (`scope_name`); erasure applies the same rule.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Table, delete, select, tuple_, update
from sqlalchemy.orm import Session

from nexus_audit import storage
from nexus_audit.envelope import DATA_KEY_SIZE, KeyWrapper, data_key_context
from nexus_audit.storage import bulk_insert
from nexus_audit.tables import DataKey, Payload
from nexus_contract.errors import NexusError

__all__ = [
    "MAX_SUBJECT_LENGTH",
    "MAX_TENANT_LENGTH",
    "OpenedPayload",
    "PayloadIntegrityError",
    "PayloadStatus",
    "PayloadToSeal",
    "PayloadVault",
    "scope_name",
]

MAX_TENANT_LENGTH = 128
MAX_SUBJECT_LENGTH = 256
_NONCE_SIZE = 12
_AAD_LABEL = b"nexus-audit/payload\x00"
_CACHE_SIZE = 4096
_LIVE_CACHE_SIZE = 100_000
_CHUNK = 500

_T = TypeVar("_T")

_DATA_KEYS: Table = DataKey.__table__  # type: ignore[assignment]
_DATA_KEY_COLUMNS = ("key_id", "tenant", "subject", "wrapped_key", "created_at", "destroyed_at")
_PAYLOADS: Table = Payload.__table__  # type: ignore[assignment]
_PAYLOAD_COLUMNS = (
    "leaf_index", "tenant", "subject", "key_id", "nonce", "ciphertext", "salt", "time",
)  # fmt: skip


class PayloadIntegrityError(NexusError):
    """A stored payload does not decrypt under its live key: the row was altered."""


class PayloadStatus(StrEnum):
    PRESENT = "present"
    """Decrypted."""
    ERASED = "erased"
    """Its data key was destroyed (GDPR erasure)."""
    PURGED = "purged"
    """Deleted by the retention job (or never stored)."""


@dataclass(frozen=True)
class PayloadToSeal:
    leaf_index: int
    tenant: str
    subject: str | None
    plaintext: bytes
    salt: bytes
    time: datetime


@dataclass(frozen=True)
class OpenedPayload:
    """A payload as it stands: ``plaintext`` and ``salt`` only when PRESENT."""

    status: PayloadStatus
    plaintext: bytes | None = None
    salt: bytes | None = None


def scope_name(value: str, limit: int) -> str:
    """``value`` itself, or ``sha256:<hex>`` of it when longer than ``limit``."""
    if len(value) <= limit:
        return value
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()


class PayloadVault:
    """Seals and opens payloads.

    Two caches spare the database and the key wrapper: unwrapped keys by key
    id, and which key is live for a (tenant, subject). The second is only
    trusted for one sequencer key epoch: destroying keys bumps the epoch
    (`nexus_audit.storage.bump_keys_epoch`) under the sequencer lock, so
    every writer, in any process, drops it at its next append.
    """

    def __init__(self, wrapper: KeyWrapper) -> None:
        self._wrapper = wrapper
        self._cache: dict[str, AESGCM] = {}
        self._live: dict[tuple[str, str | None], tuple[str, bytes]] = {}
        self._live_epoch: int | None = None
        self._lock = threading.Lock()

    def seal(
        self, session: Session, items: Sequence[PayloadToSeal], *, now: datetime, keys_epoch: int
    ) -> None:
        """Encrypt and store ``items`` in the caller's transaction, creating keys as needed.

        The caller holds the sequencer lock, under which it read ``keys_epoch``.
        """
        if not items:
            return
        scopes = {(item.tenant, item.subject) for item in items}
        keys = self._cached_live_keys(scopes, keys_epoch)
        if len(keys) < len(scopes):
            found = self._active_keys(session, scopes - keys.keys())
            keys.update(found)
            self._remember_live(found, keys_epoch)
        new_keys = []
        for tenant, subject in sorted(scopes - keys.keys(), key=lambda s: (s[0], s[1] or "")):
            key_id = str(uuid.uuid4())
            key = os.urandom(DATA_KEY_SIZE)
            wrapped = self._wrapper.wrap(key, data_key_context(key_id, tenant, subject))
            new_keys.append((key_id, tenant, subject, wrapped, now.astimezone(UTC), None))
            self._remember(key_id, AESGCM(key))
            keys[(tenant, subject)] = (key_id, wrapped)
        bulk_insert(session, _DATA_KEYS, _DATA_KEY_COLUMNS, new_keys)

        rows = []
        for item in items:
            key_id, wrapped = keys[(item.tenant, item.subject)]
            aead = self._aead(key_id, item.tenant, item.subject, wrapped)
            nonce = os.urandom(_NONCE_SIZE)
            aad = _aad(item.leaf_index, key_id)
            rows.append(
                (item.leaf_index, item.tenant, item.subject, key_id, nonce,
                 aead.encrypt(nonce, item.plaintext, aad), item.salt, item.time.astimezone(UTC))
            )  # fmt: skip
        bulk_insert(session, _PAYLOADS, _PAYLOAD_COLUMNS, rows)

    def open(self, session: Session, indexes: Iterable[int]) -> dict[int, OpenedPayload]:
        """The payload of each leaf in ``indexes``: decrypted, erased or purged.

        Raises `PayloadIntegrityError` when a payload under a live key fails to decrypt.
        """
        wanted = sorted(set(indexes))
        opened = {index: OpenedPayload(PayloadStatus.PURGED) for index in wanted}
        for chunk in _chunks(wanted):
            query = (
                select(Payload, DataKey.wrapped_key)
                .join(DataKey, DataKey.key_id == Payload.key_id)
                .where(Payload.leaf_index.in_(chunk))
            )
            for payload, wrapped in session.execute(query).tuples():
                if wrapped is None or payload.salt is None:
                    opened[payload.leaf_index] = OpenedPayload(PayloadStatus.ERASED)
                    continue
                aead = self._aead(payload.key_id, payload.tenant, payload.subject, wrapped)
                try:
                    plaintext = aead.decrypt(
                        payload.nonce,
                        payload.ciphertext,
                        _aad(payload.leaf_index, payload.key_id),
                    )
                except InvalidTag:
                    raise PayloadIntegrityError(
                        f"the payload of leaf {payload.leaf_index} does not decrypt under its "
                        f"data key {payload.key_id}: the payloads row was altered"
                    ) from None
                opened[payload.leaf_index] = OpenedPayload(
                    PayloadStatus.PRESENT, plaintext, payload.salt
                )
        return opened

    def destroy_keys(
        self, session: Session, tenant: str, subject: str | None, *, now: datetime
    ) -> tuple[list[str], int]:
        """Destroy the live keys of a subject (or, with subject None, of the whole tenant).

        Returns the destroyed key ids and the number of payloads made unreadable.
        The wrapped keys are overwritten with NULL and the payloads' nonces,
        ciphertexts and salts deleted (the rows stay as tombstones, status
        ERASED); the caller compacts the database afterwards so no old copy
        survives. The caller must hold the sequencer lock.
        """
        query = select(DataKey.key_id).where(
            DataKey.tenant == tenant, DataKey.destroyed_at.is_(None)
        )
        if subject is not None:
            query = query.where(DataKey.subject == subject)
        key_ids = sorted(session.scalars(query.order_by(DataKey.key_id)))
        affected = 0
        for chunk in _chunks(key_ids):
            session.execute(
                update(DataKey)
                .where(DataKey.key_id.in_(chunk))
                .values(wrapped_key=None, destroyed_at=now.astimezone(UTC))
            )
            result = session.execute(
                update(Payload)
                .where(Payload.key_id.in_(chunk))
                .values(salt=None, nonce=b"", ciphertext=b"")
            )
            affected += result.rowcount  # type: ignore[attr-defined]
        storage.bump_keys_epoch(session)
        with self._lock:
            for key_id in key_ids:
                self._cache.pop(key_id, None)
            self._live.clear()
            self._live_epoch = None
        return key_ids, affected

    def purge(self, session: Session, tenant: str, before: datetime) -> int:
        """Delete the tenant's payloads older than ``before``; return how many."""
        result = session.execute(
            delete(Payload).where(Payload.tenant == tenant, Payload.time < before.astimezone(UTC))
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    def tenants(self, session: Session) -> list[str]:
        """Tenants that have stored payloads."""
        return sorted(session.scalars(select(Payload.tenant).distinct()))

    def _cached_live_keys(
        self, scopes: set[tuple[str, str | None]], epoch: int
    ) -> dict[tuple[str, str | None], tuple[str, bytes]]:
        with self._lock:
            if epoch != self._live_epoch:
                self._live.clear()
                self._live_epoch = epoch
            return {scope: self._live[scope] for scope in scopes if scope in self._live}

    def _remember_live(
        self, keys: dict[tuple[str, str | None], tuple[str, bytes]], epoch: int
    ) -> None:
        """Cache live keys read from the database (never ones created in an open transaction)."""
        with self._lock:
            if epoch != self._live_epoch:
                return
            for scope, key in keys.items():
                if len(self._live) >= _LIVE_CACHE_SIZE:
                    self._live.pop(next(iter(self._live)))
                self._live[scope] = key

    def _active_keys(
        self, session: Session, scopes: set[tuple[str, str | None]]
    ) -> dict[tuple[str, str | None], tuple[str, bytes]]:
        with_subject = sorted((t, s) for t, s in scopes if s is not None)
        tenant_only = sorted(t for t, s in scopes if s is None)
        found: dict[tuple[str, str | None], tuple[str, bytes]] = {}
        live = DataKey.destroyed_at.is_(None)
        queries = [
            select(DataKey).where(live, tuple_(DataKey.tenant, DataKey.subject).in_(chunk))
            for chunk in _chunks(with_subject)
        ] + [
            select(DataKey).where(live, DataKey.subject.is_(None), DataKey.tenant.in_(chunk))
            for chunk in _chunks(tenant_only)
        ]
        for query in queries:
            for key in session.scalars(query.order_by(DataKey.created_at)):
                if key.wrapped_key is not None:
                    found[(key.tenant, key.subject)] = (key.key_id, key.wrapped_key)
        return found

    def _aead(self, key_id: str, tenant: str, subject: str | None, wrapped: bytes) -> AESGCM:
        with self._lock:
            aead = self._cache.get(key_id)
        if aead is None:
            key = self._wrapper.unwrap(wrapped, data_key_context(key_id, tenant, subject))
            aead = AESGCM(key)
            self._remember(key_id, aead)
        return aead

    def _remember(self, key_id: str, aead: AESGCM) -> None:
        with self._lock:
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key_id] = aead


def _aad(leaf_index: int, key_id: str) -> bytes:
    return _AAD_LABEL + leaf_index.to_bytes(8, "big") + key_id.encode()


def _chunks(values: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]
