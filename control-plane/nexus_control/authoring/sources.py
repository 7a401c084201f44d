"""What an author publishes: the sources of a bundle, as one bounded tarball.

The control plane builds, tests and signs revisions itself, so authors send
what they edit, not what enforcers run::

    nexus-sources.json   {"format": 1, "bundle": "gateway", "git_commit": …}
    bundle/              the bundle directory: bundle.yaml, the spec YAMLs, tests/*.rego
    policy/              the Rego library the bundle names (``policy:`` in bundle.yaml)
    overlays/0/ …        each ``--overlay`` directory's spec YAMLs, in order

Only spec YAML and Rego modules are accepted (a ``.manifest``, a
``data.json`` or anything else is refused by name), every member within the
archive limits of `nexus_control.authoring.archive`, read before anything is
written to disk.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from nexus_contract.errors import NexusError
from nexus_control.authoring.archive import ArchiveError, ArchiveLimits, read_archive, write_archive
from nexus_control.authoring.bundle import BUNDLE_TESTS_DIR, git_commit
from nexus_control.authoring.loader import MAX_SPEC_BYTES, load_bundle

__all__ = [
    "MAX_SOURCES_BYTES",
    "SOURCES_FILE",
    "SOURCES_FORMAT",
    "SOURCES_LIMITS",
    "SourcesError",
    "UnpackedSources",
    "pack_sources",
    "unpack_sources",
]

SOURCES_FILE = "nexus-sources.json"
SOURCES_FORMAT = 1
MAX_SOURCES_BYTES = 64 * 1024 * 1024
"""Largest sources upload (compressed)."""
SOURCES_LIMITS = ArchiveLimits(member_bytes=MAX_SPEC_BYTES, total_bytes=256 * 1024 * 1024)
_SPEC_SUFFIXES = (".yaml", ".yml")
_BUNDLE, _POLICY, _OVERLAYS = "bundle", "policy", "overlays"
_MAX_OVERLAYS = 16


class SourcesError(NexusError):
    """A sources archive is malformed or holds something other than specs and Rego."""


@dataclass(frozen=True)
class UnpackedSources:
    """Sources written into a directory, ready for `stage_bundle`."""

    bundle_dir: Path
    policy_dir: Path
    overlays: tuple[Path, ...]
    git_commit: str | None
    bundle: str | None
    root: Path

    def display(self, path: str) -> str:
        """A path in the unpacked tree as the author would name it (``bundle/tenants.yaml``)."""
        try:
            return Path(path).resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return path


def _spec_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in _SPEC_SUFFIXES)


def pack_sources(bundle_dir: Path, overlays: Sequence[Path] = ()) -> bytes:
    """The sources tarball of ``bundle_dir``, its Rego library and ``overlays`` (deterministic)."""
    sources = load_bundle(bundle_dir, overlays)
    files: dict[str, bytes] = {}
    for path in _spec_files(sources.root):
        files[f"{_BUNDLE}/{path.name}"] = path.read_bytes()
    tests = sources.root / BUNDLE_TESTS_DIR
    if tests.is_dir():
        for path in sorted(tests.rglob("*.rego")):
            files[f"{_BUNDLE}/{BUNDLE_TESTS_DIR}/{path.relative_to(tests).as_posix()}"] = (
                path.read_bytes()
            )
    for path in sorted(sources.policy_dir.rglob("*.rego")):
        files[f"{_POLICY}/{path.relative_to(sources.policy_dir).as_posix()}"] = path.read_bytes()
    for i, overlay in enumerate(overlays):
        for path in _spec_files(overlay):
            files[f"{_OVERLAYS}/{i}/{path.name}"] = path.read_bytes()
    descriptor = {
        "format": SOURCES_FORMAT,
        "bundle": sources.name,
        "overlays": len(overlays),
        "git_commit": git_commit(sources.root),
    }
    files[SOURCES_FILE] = json.dumps(descriptor, sort_keys=True).encode()
    return write_archive(files)


def _place(name: str, overlays: int) -> str:
    """Check one member's place and kind; SourcesError naming it otherwise."""
    parts = PurePosixPath(name).parts
    if parts[0] == _BUNDLE:
        if len(parts) == 2 and name.endswith(_SPEC_SUFFIXES):
            return name
        if len(parts) >= 3 and parts[1] == BUNDLE_TESTS_DIR and name.endswith(".rego"):
            return name
    in_policy = parts[0] == _POLICY and len(parts) >= 2 and name.endswith(".rego")
    in_overlay = (
        parts[0] == _OVERLAYS
        and len(parts) == 3
        and parts[1].isdigit()
        and int(parts[1]) < overlays
        and name.endswith(_SPEC_SUFFIXES)
    )
    if in_policy or in_overlay:
        return name
    raise SourcesError(
        f"sources may hold only spec YAML (bundle/*.yaml, overlays/N/*.yaml) and Rego "
        f"(policy/**/*.rego, bundle/tests/**/*.rego); refused {name!r}: the control plane "
        "writes the manifest, the data and the signature itself"
    )


def unpack_sources(raw: bytes, into: Path) -> UnpackedSources:
    """Check and write the sources tarball ``raw`` under ``into``; SourcesError if malformed."""
    if len(raw) > MAX_SOURCES_BYTES:
        raise SourcesError(f"the sources are {len(raw)} bytes; the limit is {MAX_SOURCES_BYTES}")
    try:
        files = read_archive(raw, "the sources archive", SOURCES_LIMITS)
    except ArchiveError as exc:
        raise SourcesError(str(exc)) from None
    descriptor = _descriptor(files.pop(SOURCES_FILE, None))
    overlays = descriptor["overlays"]
    for name in files:
        _place(name, overlays)
    if f"{_BUNDLE}/bundle.yaml" not in files:
        raise SourcesError("the sources hold no bundle/bundle.yaml")
    into.mkdir(parents=True, exist_ok=True)
    for directory in (_BUNDLE, _POLICY, *(f"{_OVERLAYS}/{i}" for i in range(overlays))):
        (into / directory).mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        target = into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    commit = descriptor.get("git_commit")
    bundle = descriptor.get("bundle")
    return UnpackedSources(
        bundle_dir=into / _BUNDLE,
        policy_dir=into / _POLICY,
        overlays=tuple(into / _OVERLAYS / str(i) for i in range(overlays)),
        git_commit=str(commit)[:80] if isinstance(commit, str) else None,
        bundle=str(bundle)[:64] if isinstance(bundle, str) else None,
        root=into,
    )


def _descriptor(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        raise SourcesError(
            f"not a sources archive (no {SOURCES_FILE}): publish with `nexus-policy publish "
            "BUNDLE_DIR`; built bundle archives are not accepted, the control plane builds them"
        )
    try:
        descriptor = json.loads(raw)
    except ValueError:
        raise SourcesError(f"{SOURCES_FILE} is not JSON") from None
    if not isinstance(descriptor, dict) or descriptor.get("format") != SOURCES_FORMAT:
        raise SourcesError(f"{SOURCES_FILE} must say format {SOURCES_FORMAT}")
    overlays = descriptor.get("overlays", 0)
    if not isinstance(overlays, int) or not 0 <= overlays <= _MAX_OVERLAYS:
        raise SourcesError(f"{SOURCES_FILE}: overlays is a count from 0 to {_MAX_OVERLAYS}")
    return descriptor
