"""The bundle registry: immutable, content-addressed revisions, built and signed here.

A revision enters as a :class:`~nexus_control.authoring.bundle.StagedBundle`
the control plane built from published sources, keyed by the revision it
computed from the content. Its signed archive is written once, by
:func:`sign`, with the key ring's active bundle key, when the revision is
approved (or at once when it needs no second approver). Publishing the same
revision twice changes nothing; a revision's bytes never change. Each
publication and each signature is an audit event in the same transaction.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from nexus_contract.errors import NexusError
from nexus_control.authoring.archive import read_archive
from nexus_control.authoring.bundle import StagedBundle, sign_staged
from nexus_control.authoring.signatures import MANIFEST_FILE, verify_bundle_files
from nexus_control.store import outbox
from nexus_control.store.tables import BundleRevision
from nexus_runtime.keys.algorithms import Algorithm, PublicKey
from nexus_runtime.keys.provider import SigningKey

__all__ = [
    "PublishError",
    "Published",
    "get_revision",
    "history",
    "latest",
    "sign",
    "store",
]


class PublishError(NexusError):
    """The sources cannot be published; the message says why."""


@dataclass(frozen=True)
class Published:
    revision: str
    bundle: str
    created: bool
    git_commit: str | None


def store(session: Session, staged: StagedBundle, *, sources: bytes, author: str) -> Published:
    """Keep ``staged`` (unsigned) under its revision; record ``bundle.published``."""
    existing = session.get(BundleRevision, staged.revision)
    if existing is not None:
        return Published(existing.revision, existing.bundle, False, existing.git_commit)
    content = staged.content
    manifest = _manifest(staged)
    session.add(
        BundleRevision(
            revision=staged.revision,
            bundle=staged.name,
            archive=None,
            content=content,
            sources=sources,
            sources_sha256=hashlib.sha256(sources).hexdigest(),
            sha256=hashlib.sha256(content).hexdigest(),
            size=len(content),
            manifest=manifest,
            config=dict(staged.config),
            git_commit=staged.git_commit,
            author=author,
            published_at=datetime.now(UTC),
        )
    )
    outbox.record(
        session,
        "bundle.published",
        author,
        bundle=staged.name,
        revision=staged.revision,
        git_commit=staged.git_commit,
        sources_sha256=hashlib.sha256(sources).hexdigest(),
        tests=staged.tests_run,
    )
    return Published(staged.revision, staged.name, True, staged.git_commit)


def _manifest(staged: StagedBundle) -> dict[str, object]:
    loaded = json.loads(staged.files[MANIFEST_FILE])
    return loaded if isinstance(loaded, dict) else {}


def sign(
    session: Session,
    revision: str,
    key: SigningKey,
    kid: str,
    *,
    actor: str,
    trusted: dict[str, tuple[Algorithm, PublicKey]],
    renew: bool = False,
) -> bool:
    """Sign ``revision`` with ``key``; False when there was nothing to do.

    A revision is signed once; with ``renew`` a signed one whose signature is
    by another key is signed again (its content, hence its revision, is
    unchanged: after a key rotation, what is in force is re-signed so it
    still verifies once the old key is retired). The signature is checked
    against ``trusted`` (the key ring's bundle keys) before it is stored, the
    way an enforcer would check it.
    """
    row = session.get(BundleRevision, revision)
    if row is None:
        raise PublishError(f"no revision {revision}")
    if row.archive is not None and (not renew or row.signed_by == kid):
        return False
    if row.content is None:
        raise PublishError(f"revision {revision[:12]} has no content to sign")
    files = read_archive(row.content, f"revision {revision[:12]}")
    staged = StagedBundle(row.bundle, revision, files, row.config, row.git_commit, 0)  # type: ignore[arg-type]
    archive = sign_staged(staged, key, kid)
    previous = row.signed_by
    verify_bundle_files(read_archive(archive, "the signed archive"), trusted)
    row.archive = archive
    row.sha256 = hashlib.sha256(archive).hexdigest()
    row.size = len(archive)
    row.signed_by = kid
    row.signed_at = datetime.now(UTC)
    outbox.record(
        session,
        "bundle.resigned" if previous is not None else "bundle.signed",
        actor,
        revision=revision,
        key_id=kid,
        replaces=previous,
        sha256=row.sha256,
    )
    return True


def get_revision(session: Session, revision: str) -> BundleRevision | None:
    return session.get(BundleRevision, revision)


def latest(session: Session) -> BundleRevision | None:
    return session.scalar(
        select(BundleRevision).order_by(BundleRevision.published_at.desc()).limit(1)
    )


def history(session: Session, limit: int = 50) -> list[BundleRevision]:
    return list(
        session.scalars(
            select(BundleRevision).order_by(BundleRevision.published_at.desc()).limit(limit)
        )
    )
