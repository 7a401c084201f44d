"""Secrets of the log kept in its database only wrapped by the master key.

The salt of unknown-tenant hashes and the key of decision content MACs must
not be readable by whoever reads the database (else a tenant hash could be
reversed by trying names, e-mail addresses included). Each is 32 random
bytes, wrapped by the `KeyWrapper` on first use and unwrapped once per process.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading

from sqlalchemy.exc import IntegrityError

from nexus_audit.database import AuditDatabase
from nexus_audit.envelope import KeyWrapper
from nexus_audit.tables import LogSecret

__all__ = ["CONTENT_MAC", "TENANT_SALT", "LogSecrets"]

TENANT_SALT = "tenant-hash-salt"
CONTENT_MAC = "decision-content-mac"
_SIZE = 32


class LogSecrets:
    def __init__(self, db: AuditDatabase, wrapper: KeyWrapper) -> None:
        self._db = db
        self._wrapper = wrapper
        self._cache: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> bytes:
        with self._lock:
            known = self._cache.get(name)
            if known is not None:
                return known
            value = self._load_or_create(name)
            self._cache[name] = value
            return value

    def mac(self, name: str, data: bytes) -> bytes:
        return hmac.new(self.get(name), data, hashlib.sha256).digest()

    def _load_or_create(self, name: str) -> bytes:
        context = b"nexus-audit/log-secret\x00" + name.encode()
        for _ in range(2):
            with self._db.session() as session:
                row = session.get(LogSecret, name)
                if row is not None:
                    return self._wrapper.unwrap(row.wrapped, context)
            value = os.urandom(_SIZE)
            try:
                with self._db.session() as session:
                    session.add(LogSecret(name=name, wrapped=self._wrapper.wrap(value, context)))
                return value
            except IntegrityError:
                continue  # another process created it first: read theirs
        raise RuntimeError(f"log secret {name} could not be created")
