"""The bundle registry: immutable, content-addressed revisions as published.

Publishing takes a built archive, has the real OPA verify its signature
against the control plane's verification key, reads its manifest and data,
and stores it under its revision. Publishing the same revision twice is a
no-op; a revision's bytes never change. Each publication is an audit event
written in the same transaction.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from nexus_contract.errors import NexusError
from nexus_contract.wire import POLICY_ROOTS
from nexus_control.authoring.bundle import BuildError, read_bundle_bytes
from nexus_control.authoring.opa import Opa
from nexus_control.store import outbox
from nexus_control.store.tables import BundleRevision

__all__ = [
    "MAX_ARCHIVE_BYTES",
    "PublishError",
    "Published",
    "VerificationKey",
    "get_revision",
    "history",
    "latest",
    "publish",
    "verify_signature",
]

MAX_ARCHIVE_BYTES = 64 * 1024 * 1024


class PublishError(NexusError):
    """The archive cannot be published; the message says why."""


@dataclass(frozen=True)
class VerificationKey:
    """The public key (PEM file) and key id the real OPA verifies archives with."""

    public_key: Path
    key_id: str


@dataclass(frozen=True)
class Published:
    revision: str
    bundle: str
    created: bool
    git_commit: str | None


def verify_signature(opa: Opa, key: VerificationKey, archive: bytes) -> None:
    """Have OPA load the archive with signature verification on; raise PublishError."""
    with tempfile.TemporaryDirectory(prefix="nexus-verify-") as tmp:
        path = Path(tmp) / "bundle.tar.gz"
        path.write_bytes(archive)
        out = opa.run(
            "build",
            "--bundle",
            str(path),
            "--verification-key",
            str(key.public_key),
            "--verification-key-id",
            key.key_id,
            "--output",
            str(Path(tmp) / "verified.tar.gz"),
        )
    if out.returncode != 0:
        message = (out.stderr or out.stdout).strip().removeprefix("error: ")
        raise PublishError(f"signature verification failed: {message}")


def publish(
    session: Session, opa: Opa, key: VerificationKey, archive: bytes, *, author: str
) -> Published:
    """Verify and store ``archive``; record ``bundle.published`` in the same transaction."""
    if len(archive) > MAX_ARCHIVE_BYTES:
        raise PublishError(f"archive is {len(archive)} bytes; the limit is {MAX_ARCHIVE_BYTES}")
    try:
        contents = read_bundle_bytes(archive)
    except BuildError as exc:
        raise PublishError(str(exc)) from None
    manifest = contents.manifest
    revision = manifest.get("revision")
    if not isinstance(revision, str) or len(revision) != 64:
        raise PublishError("the manifest has no content revision; build it with nexus-policy build")
    if sorted(manifest.get("roots", [])) != sorted(POLICY_ROOTS):
        raise PublishError(f"the manifest's roots must be {list(POLICY_ROOTS)}")
    config = contents.data.get("nexus", {}).get("config")
    if not isinstance(config, dict):
        raise PublishError("the archive holds no data.nexus.config")
    verify_signature(opa, key, archive)

    existing = session.get(BundleRevision, revision)
    metadata: dict[str, Any] = manifest.get("metadata") or {}
    commit = metadata.get("git_commit") if isinstance(metadata.get("git_commit"), str) else None
    name = str(metadata.get("bundle", "gateway"))
    if existing is not None:
        return Published(revision, existing.bundle, False, existing.git_commit)
    session.add(
        BundleRevision(
            revision=revision,
            bundle=name,
            archive=archive,
            sha256=hashlib.sha256(archive).hexdigest(),
            size=len(archive),
            manifest=manifest,
            config=config,
            git_commit=commit,
            author=author,
            published_at=datetime.now(UTC),
        )
    )
    outbox.record(
        session,
        "bundle.published",
        author,
        bundle=name,
        revision=revision,
        git_commit=commit,
        sha256=hashlib.sha256(archive).hexdigest(),
    )
    return Published(revision, name, True, commit)


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
