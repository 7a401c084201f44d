"""The registry as a service: publishing verifies with the real OPA, reads are cached.

Revisions never change once published, so archives and compiled configs are
cached by revision (a bounded number of archives, one config per revision).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from nexus_contract.errors import NexusError
from nexus_control.authoring.config import CompiledConfig
from nexus_control.authoring.opa import Opa
from nexus_control.registry import revisions
from nexus_control.registry.revisions import Published, VerificationKey
from nexus_control.store.tables import BundleRevision
from nexus_runtime.database import Database

__all__ = ["ARCHIVE_CACHE_SIZE", "Registry", "RevisionNotFoundError"]

ARCHIVE_CACHE_SIZE = 16
CONFIG_CACHE_SIZE = 16


class RevisionNotFoundError(NexusError):
    """No published revision has that id."""


class Registry:
    """Immutable, content-addressed bundle revisions."""

    def __init__(self, db: Database, opa: Opa, key: VerificationKey) -> None:
        self.db = db
        self.opa = opa
        self.key = key
        self._lock = threading.Lock()
        self._archives: OrderedDict[str, bytes] = OrderedDict()
        self._configs: OrderedDict[str, Any] = OrderedDict()

    def publish(self, session: Session, archive: bytes, author: str) -> Published:
        """Verify and store ``archive`` in the caller's transaction (see `revisions.publish`)."""
        return revisions.publish(session, self.opa, self.key, archive, author=author)

    def get(self, revision: str) -> BundleRevision:
        with self.db.session() as session:
            row = revisions.get_revision(session, revision)
        if row is None:
            raise RevisionNotFoundError(f"no revision {revision}")
        return row

    @staticmethod
    def config_in(session: Session, revision: str) -> CompiledConfig:
        """The compiled config of ``revision``, read in the caller's transaction."""
        raw = session.scalar(
            select(BundleRevision.config).where(BundleRevision.revision == revision)
        )
        if raw is None:
            raise RevisionNotFoundError(f"revision {revision} is not in the registry")
        return cast(CompiledConfig, raw)

    def history(self, limit: int = 50) -> list[BundleRevision]:
        with self.db.session() as session:
            return revisions.history(session, limit)

    def archive(self, revision: str) -> bytes:
        """The archive of ``revision``."""
        archive: bytes = self._cached(
            self._archives, ARCHIVE_CACHE_SIZE, revision, BundleRevision.archive
        )
        return archive

    def config(self, revision: str) -> CompiledConfig:
        """The compiled ``data.nexus.config`` of ``revision``."""
        raw = self._cached(self._configs, CONFIG_CACHE_SIZE, revision, BundleRevision.config)
        return cast(CompiledConfig, raw)

    def _cached(self, cache: OrderedDict[str, Any], size: int, revision: str, column: Any) -> Any:
        """One column of ``revision``, read once: revisions never change."""
        with self._lock:
            if revision in cache:
                return cache[revision]
        with self.db.session() as session:
            value = session.scalar(select(column).where(BundleRevision.revision == revision))
        if value is None:
            raise RevisionNotFoundError(f"no revision {revision}")
        with self._lock:
            cache[revision] = value
            while len(cache) > size:
                cache.popitem(last=False)
        return value
