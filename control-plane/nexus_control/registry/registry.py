"""The registry as a service: builds published sources, stores and signs revisions, caches reads.

Building runs the same pipeline as ``nexus-policy build`` (specs, ``opa
check`` against the restricted capabilities, ``opa test``) on the unpacked
sources, with the key ring's approval JWKS compiled in, outside any database
transaction. Revisions never change once published, so archives, configs and
diff views are cached by revision.
"""

from __future__ import annotations

import tempfile
import threading
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from nexus_contract.errors import NexusError
from nexus_control.access.keyring import KeyPurpose, Keyring
from nexus_control.authoring.archive import ArchiveError, read_archive
from nexus_control.authoring.bundle import BuildError, StagedBundle, stage_bundle
from nexus_control.authoring.config import CompiledConfig
from nexus_control.authoring.diff import BundleView
from nexus_control.authoring.loader import Problem, SpecError
from nexus_control.authoring.opa import Opa
from nexus_control.authoring.sources import SourcesError, UnpackedSources, unpack_sources
from nexus_control.registry import revisions
from nexus_control.registry.revisions import Published, PublishError
from nexus_control.store.tables import BundleRevision, RegionTarget
from nexus_runtime.database import Database

__all__ = ["ARCHIVE_CACHE_SIZE", "Registry", "RevisionNotFoundError", "UnsignedRevisionError"]

ARCHIVE_CACHE_SIZE = 16
CONFIG_CACHE_SIZE = 16
VIEW_CACHE_SIZE = 8


class RevisionNotFoundError(NexusError):
    """No published revision has that id."""


class UnsignedRevisionError(RevisionNotFoundError):
    """The revision exists but is not signed: it waits for its approval."""


class Registry:
    """Immutable, content-addressed bundle revisions."""

    def __init__(self, db: Database, opa: Opa, keyring: Keyring) -> None:
        self.db = db
        self.opa = opa
        self.keyring = keyring
        self._lock = threading.Lock()
        self._archives: OrderedDict[str, bytes] = OrderedDict()
        self._configs: OrderedDict[str, Any] = OrderedDict()
        self._views: OrderedDict[str, BundleView] = OrderedDict()

    # -- publishing -------------------------------------------------------------------

    def build(self, sources: bytes, *, expected_revision: str | None = None) -> StagedBundle:
        """Build, check and test published ``sources``; raise PublishError, SpecError, BuildError.

        ``expected_revision``: the revision the author's own build computed;
        a different one here is refused (the author and the control plane
        would not be looking at the same bundle).
        """
        with tempfile.TemporaryDirectory(prefix="nexus-sources-") as tmp:
            try:
                unpacked = unpack_sources(sources, Path(tmp) / "src")
            except SourcesError as exc:
                raise PublishError(str(exc)) from None
            try:
                staged = stage_bundle(
                    unpacked.bundle_dir,
                    self.opa,
                    self.keyring.approval_jwks(),
                    unpacked.overlays,
                    policy_dir=unpacked.policy_dir,
                    commit=unpacked.git_commit,
                )
            except SpecError as exc:
                raise SpecError([_shown(p, unpacked) for p in exc.problems]) from None
            except BuildError as exc:
                raise BuildError(
                    str(exc).splitlines()[0], [_shown(p, unpacked) for p in exc.problems]
                ) from None
            shown = tuple(replace(d, file=unpacked.display(d.file)) for d in staged.demands)
            staged = replace(staged, demands=shown)
        if expected_revision is not None and expected_revision != staged.revision:
            raise PublishError(
                f"the sources build revision {staged.revision} here, not {expected_revision}: "
                "the revision is computed from the content, and these differ"
            )
        return staged

    def store(
        self, session: Session, staged: StagedBundle, sources: bytes, author: str
    ) -> Published:
        """Keep ``staged`` in the caller's transaction (see `revisions.store`)."""
        return revisions.store(session, staged, sources=sources, author=author)

    def sign(self, session: Session, revision: str, actor: str) -> bool:
        """Sign ``revision`` with the active bundle key, in the caller's transaction."""
        key, kid = self.keyring.signer(KeyPurpose.BUNDLE)
        trusted = self.keyring.trusted_for_verification(KeyPurpose.BUNDLE)
        return revisions.sign(session, revision, key, kid, actor=actor, trusted=trusted)

    def renew_signatures(self, session: Session, actor: str) -> list[str]:
        """Re-sign with the active key every revision a region runs or falls back to."""
        in_force = set(session.scalars(select(RegionTarget.desired_revision)))
        in_force |= {r for r in session.scalars(select(RegionTarget.last_good_revision)) if r}
        key, kid = self.keyring.signer(KeyPurpose.BUNDLE)
        trusted = self.keyring.trusted_for_verification(KeyPurpose.BUNDLE)
        renewed = [
            revision
            for revision in sorted(in_force)
            if revisions.sign(session, revision, key, kid, actor=actor, trusted=trusted, renew=True)
        ]
        with self._lock:
            for revision in renewed:
                self._archives.pop(revision, None)
        return renewed

    # -- reading ----------------------------------------------------------------------

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

    def view_in(self, session: Session, revision: str) -> BundleView:
        """What a diff compares of ``revision``: its config, modules and roots."""
        with self._lock:
            if revision in self._views:
                return self._views[revision]
        row = session.get(BundleRevision, revision)
        if row is None:
            raise RevisionNotFoundError(f"revision {revision} is not in the registry")
        raw = row.content if row.content is not None else row.archive
        try:
            files = read_archive(raw or b"", f"revision {revision[:12]}")
        except ArchiveError as exc:
            raise RevisionNotFoundError(f"revision {revision[:12]} cannot be read: {exc}") from None
        roots = row.manifest.get("roots", []) if isinstance(row.manifest, dict) else []
        view = BundleView(
            config=row.config,
            modules={p: body for p, body in files.items() if p.endswith(".rego")},
            roots=tuple(str(r) for r in roots),
        )
        with self._lock:
            self._views[revision] = view
            while len(self._views) > VIEW_CACHE_SIZE:
                self._views.popitem(last=False)
        return view

    def history(self, limit: int = 50) -> list[BundleRevision]:
        with self.db.session() as session:
            return revisions.history(session, limit)

    def archive(self, revision: str) -> bytes:
        """The signed archive of ``revision`` (UnsignedRevisionError before its approval)."""
        archive: bytes = self._cached(
            self._archives, ARCHIVE_CACHE_SIZE, revision, BundleRevision.archive
        )
        return archive

    def config(self, revision: str) -> CompiledConfig:
        """The compiled ``data.nexus.config`` of ``revision``."""
        raw = self._cached(self._configs, CONFIG_CACHE_SIZE, revision, BundleRevision.config)
        return cast(CompiledConfig, raw)

    def _cached(self, cache: OrderedDict[str, Any], size: int, revision: str, column: Any) -> Any:
        """One column of ``revision``, read once: revisions never change once set."""
        with self._lock:
            if revision in cache:
                return cache[revision]
        with self.db.session() as session:
            value = session.scalar(select(column).where(BundleRevision.revision == revision))
            exists = value is not None or session.get(BundleRevision, revision) is not None
        if value is None:
            if exists:
                raise UnsignedRevisionError(f"revision {revision[:12]} is not signed yet")
            raise RevisionNotFoundError(f"no revision {revision}")
        with self._lock:
            cache[revision] = value
            while len(cache) > size:
                cache.popitem(last=False)
        return value


def _shown(problem: Problem, unpacked: UnpackedSources) -> Problem:
    """A problem found in the unpacked sources, named as the author knows the file."""
    return Problem(unpacked.display(problem.file), problem.line, problem.column, problem.message)
