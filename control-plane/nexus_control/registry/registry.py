"""The registry as a service: publishing verifies with the real OPA, reads are cached.

Revisions never change once published, so archives and compiled configs are
cached by revision (a bounded number of archives, one config per revision).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import cast

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
        self._configs: OrderedDict[str, CompiledConfig] = OrderedDict()

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
        with self._lock:
            cached = self._archives.get(revision)
        if cached is not None:
            return cached
        with self.db.session() as session:
            archive = session.scalar(
                select(BundleRevision.archive).where(BundleRevision.revision == revision)
            )
        if archive is None:
            raise RevisionNotFoundError(f"no revision {revision}")
        with self._lock:
            self._archives[revision] = archive
            while len(self._archives) > ARCHIVE_CACHE_SIZE:
                self._archives.popitem(last=False)
        return archive

    def config(self, revision: str) -> CompiledConfig:
        """The compiled ``data.nexus.config`` of ``revision``."""
        with self._lock:
            cached = self._configs.get(revision)
        if cached is not None:
            return cached
        with self.db.session() as session:
            raw = session.scalar(
                select(BundleRevision.config).where(BundleRevision.revision == revision)
            )
        if raw is None:
            raise RevisionNotFoundError(f"revision {revision} is not in the registry")
        config = cast(CompiledConfig, raw)
        with self._lock:
            self._configs[revision] = config
            while len(self._configs) > CONFIG_CACHE_SIZE:
                self._configs.popitem(last=False)
        return config
