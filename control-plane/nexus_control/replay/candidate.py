"""The candidate (or a baseline) to replay: a signed bundle, its signature checked before use.

A candidate is a published revision (from the registry), a built archive
(``.tar.gz``) or a built bundle directory (the archive unpacked: it holds a
``.manifest``). Sources (a directory with ``bundle.yaml``) are not a
candidate: they must be built and signed first, so what is judged is exactly
what enforcers would run. The signature is verified against the key ring's
trusted bundle keys here (an unsigned bundle, or one signed by an unknown
key, is refused with the reason) and again by OPA when it loads the bundle;
``opa check --strict --bundle`` must pass.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nexus_contract.errors import NexusError
from nexus_control.access.keyring import KeyPurpose, Keyring
from nexus_control.authoring.archive import ArchiveError, read_archive, write_archive
from nexus_control.authoring.bundle import DATA_PATH
from nexus_control.authoring.opa import Opa, OpaError
from nexus_control.authoring.signatures import (
    MANIFEST_FILE,
    BundleSignatureError,
    verify_bundle_files,
)
from nexus_control.authoring.spec import RiskLevel
from nexus_control.registry.registry import Registry, RevisionNotFoundError

__all__ = [
    "CandidateError",
    "SignedBundle",
    "load_archive",
    "load_directory",
    "load_revision",
]

_MAX_DIRECTORY_FILES = 4096


class CandidateError(NexusError):
    """The candidate cannot be replayed: unreadable, unsigned, unknown key, or fails opa check."""


@dataclass(frozen=True)
class SignedBundle:
    """A verified bundle: its revision, archive, the key that signed it, its tools' risk."""

    revision: str
    archive: bytes
    kid: str
    algorithm: str
    public_pem: str
    tool_risk: Mapping[str, RiskLevel] = field(default_factory=dict)

    def risk_of(self, tool: str) -> RiskLevel | None:
        return self.tool_risk.get(tool)


def load_revision(registry: Registry, keyring: Keyring, opa: Opa, revision: str) -> SignedBundle:
    try:
        archive = registry.archive(revision)
    except RevisionNotFoundError as exc:
        raise CandidateError(f"revision {revision}: {exc}") from None
    return load_archive(archive, keyring, opa, what=f"revision {revision[:12]}")


def load_directory(path: Path, keyring: Keyring, opa: Opa) -> SignedBundle:
    if (path / "bundle.yaml").is_file() and not (path / MANIFEST_FILE).is_file():
        raise CandidateError(
            f"{path} holds bundle sources, not a built bundle: build and sign it first "
            "(nexus-policy publish), then replay the revision or its archive"
        )
    if not (path / MANIFEST_FILE).is_file():
        raise CandidateError(f"{path} is not a built bundle directory (no {MANIFEST_FILE})")
    files: dict[str, bytes] = {}
    for item in sorted(path.rglob("*")):
        if item.is_symlink():
            raise CandidateError(f"{item}: links are not allowed in a bundle")
        if item.is_file():
            if len(files) >= _MAX_DIRECTORY_FILES:
                raise CandidateError(f"{path} has more than {_MAX_DIRECTORY_FILES} files")
            files[item.relative_to(path).as_posix()] = item.read_bytes()
    return _verified(files, write_archive(files), keyring, opa, what=str(path))


def load_archive(archive: bytes, keyring: Keyring, opa: Opa, *, what: str) -> SignedBundle:
    try:
        files = read_archive(archive, what)
    except ArchiveError as exc:
        raise CandidateError(str(exc)) from None
    return _verified(files, archive, keyring, opa, what=what)


def _verified(
    files: Mapping[str, bytes], archive: bytes, keyring: Keyring, opa: Opa, *, what: str
) -> SignedBundle:
    trusted = {key.kid: key for key in keyring.trusted(KeyPurpose.BUNDLE)}
    try:
        kid = verify_bundle_files(
            files, {kid: (key.algorithm, key.public_key()) for kid, key in trusted.items()}
        )
    except BundleSignatureError as exc:
        raise CandidateError(
            f"{what} is refused for replay: {exc} (only bundles signed by a trusted bundle "
            "key can be judged)"
        ) from None
    manifest = _json(files.get(MANIFEST_FILE), f"{what}: {MANIFEST_FILE}")
    revision = manifest.get("revision")
    if not isinstance(revision, str) or not revision:
        raise CandidateError(f"{what}: the manifest names no revision")
    with tempfile.TemporaryDirectory(prefix="nexus-candidate-") as scratch:
        bundle = Path(scratch) / "bundle.tar.gz"
        bundle.write_bytes(archive)
        try:
            opa.check([bundle], strict=True, bundle=True)
        except OpaError as exc:
            raise CandidateError(f"{what} fails opa check: {exc}") from None
    key = trusted[kid]
    return SignedBundle(
        revision=revision,
        archive=archive,
        kid=kid,
        algorithm=key.algorithm.value,
        public_pem=key.public_pem,
        tool_risk=_tool_risk(files),
    )


def _json(raw: bytes | None, what: str) -> dict[str, Any]:
    if raw is None:
        raise CandidateError(f"{what} is missing")
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise CandidateError(f"{what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CandidateError(f"{what} is not a JSON object")
    return value


def _tool_risk(files: Mapping[str, bytes]) -> dict[str, RiskLevel]:
    """The tools' risk levels from the compiled ``data.nexus.config`` (empty if absent)."""
    raw = files.get(DATA_PATH)
    if raw is None:
        return {}
    try:
        tools = json.loads(raw).get("tools")
    except (ValueError, AttributeError):
        return {}
    known = {level.value for level in RiskLevel}
    risks: dict[str, RiskLevel] = {}
    for tool, spec in (tools or {}).items() if isinstance(tools, dict) else ():
        risk = spec.get("risk") if isinstance(spec, dict) else None
        if risk in known:
            risks[str(tool)] = RiskLevel(risk)
    return risks
