"""A fault the demo injects: a correctly signed revision that OPA will refuse to activate.

Its manifest also claims ``nexus_state``, the state bundle's root, and OPA
refuses overlapping roots when it activates. The control plane's publish
check refuses such a manifest, so the demo stores it in the registry
directly, standing in for a revision that passed every check and still fails
in the field; the rollout engine must contain it in the canary.
"""

from __future__ import annotations

import hashlib
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from nexus_contract.canonical import canonical_json
from nexus_contract.wire import POLICY_BUNDLE, STATE_ROOTS
from nexus_control.authoring.bundle import DATA_PATH, read_bundle_bytes
from nexus_control.authoring.opa import Opa
from nexus_control.plane import ControlPlane
from nexus_control.rollout import engine
from nexus_control.serving.notifier import bundle_key
from nexus_control.store.tables import BundleRevision

__all__ = ["roll_out", "store_unactivatable", "unactivatable_revision"]


def unactivatable_revision(
    good: bytes, opa: Opa, signing_key: Path, key_id: str
) -> tuple[str, bytes]:
    """``good`` re-signed with overlapping roots: (its revision, its archive)."""
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "stage"
        contents = read_bundle_bytes(good)
        for name, module in contents.modules.items():
            (stage / name).parent.mkdir(parents=True, exist_ok=True)
            (stage / name).write_bytes(module)
        (stage / DATA_PATH).parent.mkdir(parents=True, exist_ok=True)
        (stage / DATA_PATH).write_bytes(canonical_json(contents.data["nexus"]["config"]))
        revision = hashlib.sha256(good + b"unactivatable").hexdigest()
        manifest = {
            **contents.manifest,
            "revision": revision,
            "roots": [*contents.manifest["roots"], *STATE_ROOTS],
        }
        (stage / ".manifest").write_bytes(canonical_json(manifest))
        out = Path(tmp) / "bad.tar.gz"
        opa.build_signed(stage, out, signing_key=signing_key, key_id=key_id)
        return revision, out.read_bytes()


def store_unactivatable(
    plane: ControlPlane, good_revision: str, *, signing_key: Path, key_id: str, author: str
) -> str:
    """Store (once) the unactivatable twin of ``good_revision``; its revision.

    Bypasses publish on purpose (publish refuses the overlapping roots): the
    fault stands for a revision every check passed that still fails in the field.
    """
    with plane.db.session() as session:
        row = session.get(BundleRevision, good_revision)
        if row is None:
            raise LookupError(f"revision {good_revision[:12]} is not in the registry")
        revision, archive = unactivatable_revision(row.archive, plane.opa, signing_key, key_id)
        if session.get(BundleRevision, revision) is None:
            session.add(
                BundleRevision(
                    revision=revision,
                    bundle=row.bundle,
                    archive=archive,
                    sha256=hashlib.sha256(archive).hexdigest(),
                    size=len(archive),
                    manifest={"revision": revision},
                    config=row.config,
                    git_commit=None,
                    author=author,
                    published_at=datetime.now(UTC),
                )
            )
    return revision


def roll_out(plane: ControlPlane, revision: str, *, author: str) -> int:
    """Open a rollout of a stored ``revision`` and wake the canary's pollers, as publish does."""
    with plane.db.session() as session:
        opened, changed = engine.start(
            session, plane.fleet, revision, author=author, diff={}, needs_approval=False
        )
        rollout_id = opened.id
    plane.notifier.notify(bundle_key(region, POLICY_BUNDLE) for region in changed)
    return rollout_id
