"""Builds a policy bundle: specs + Rego -> checked, tested files -> a signed tarball.

The pipeline, top to bottom (:func:`stage_bundle`): load and cross-check the
specs, compile them to ``data.nexus.config`` (with the approval keys' public
JWKS), stage the bundle's files (``.manifest``, data, the library's non-test
modules), run ``opa check --strict`` on them and ``opa test`` on the library
and the bundle's own tests against the compiled data, both against the
restricted capabilities (`nexus_control.authoring.capabilities`). Signing
(:func:`sign_staged`) adds ``.signatures.json`` through a key provider and
packs the deterministic archive. The control plane runs both on published
sources; ``nexus-policy build`` runs them locally with a dev key.

Invariants:
- the revision is a hash over the data and policy files only, computed before
  the manifest that carries it; the same sources give the same revision and
  byte-identical unsigned files; :func:`read_bundle_bytes` recomputes it and
  refuses an archive whose manifest claims another;
- nothing reaches ``dist/`` unless every step passed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from nexus_contract.canonical import canonical_json
from nexus_contract.decision import SCHEMAS_DIR
from nexus_contract.errors import NexusError
from nexus_contract.wire import POLICY_ROOTS
from nexus_control import __version__
from nexus_control.access.signing_keys import load_signing_key, read_approval_jwks
from nexus_control.authoring.archive import ArchiveError, read_archive, write_archive
from nexus_control.authoring.capabilities import capabilities_file
from nexus_control.authoring.compiler import compile_data
from nexus_control.authoring.config import CompiledConfig
from nexus_control.authoring.loader import BundleSources, Problem, load_bundle
from nexus_control.authoring.opa import Opa, OpaError
from nexus_control.authoring.policyset import PolicySet, resolve
from nexus_control.authoring.signatures import MANIFEST_FILE, SIGNATURES_FILE, sign_bundle_files
from nexus_control.authoring.traffic import QualityDemand, compile_quality, quality_demands
from nexus_runtime.keys.provider import SigningKey

__all__ = [
    "ARCHIVE_SUFFIX",
    "BUNDLE_TESTS_DIR",
    "DATA_PATH",
    "DEV_KEY_NOTE",
    "MAX_ARCHIVE_BYTES",
    "BuildError",
    "BuildOptions",
    "BuiltBundle",
    "BundleContents",
    "StagedBundle",
    "build_bundle",
    "compile_sources",
    "git_commit",
    "policy_modules",
    "read_bundle",
    "read_bundle_bytes",
    "revision_of",
    "sign_staged",
    "stage_bundle",
]

DATA_PATH = "nexus/config/data.json"
BUNDLE_TESTS_DIR = "tests"
ARCHIVE_SUFFIX = ".tar.gz"
MAX_ARCHIVE_BYTES = 256 * 1024 * 1024
DEV_KEY_NOTE = "signed with a local dev key: no fleet enforcer trusts it; publish the sources"
_NOT_CONTENT = frozenset({MANIFEST_FILE, SIGNATURES_FILE})


class BuildError(NexusError):
    """The bundle was not built; ``problems`` lists why, with places where known."""

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        self.problems = problems or []
        detail = "\n".join(str(p) for p in self.problems)
        super().__init__(f"{message}\n{detail}" if detail else message)


@dataclass(frozen=True)
class BuildOptions:
    """A local build: a dev signing key and the approval keys' public JWKS (no private key)."""

    signing_key: Path
    key_id: str
    approval_jwks: Path
    dist_dir: Path
    run_tests: bool = True


@dataclass(frozen=True)
class StagedBundle:
    """A checked and tested bundle, not yet signed: its files by path, manifest included."""

    name: str
    revision: str
    files: dict[str, bytes]
    config: CompiledConfig
    git_commit: str | None
    tests_run: int
    demands: tuple[QualityDemand, ...] = ()
    """The evaluations publishing it needs (`nexus_control.authoring.traffic`): not part of
    the bundle, so not of its revision."""

    @property
    def modules(self) -> dict[str, bytes]:
        return {path: body for path, body in self.files.items() if path.endswith(".rego")}

    @property
    def content(self) -> bytes:
        """The unsigned archive: what the registry stores until the revision is signed."""
        return write_archive(self.files)


@dataclass(frozen=True)
class BuiltBundle:
    name: str
    revision: str
    path: Path
    sha256: str
    size: int
    git_commit: str | None
    tests_run: int


def revision_of(files: dict[str, bytes]) -> str:
    """Content address of a bundle: SHA-256 over each file's path and SHA-256, in path order.

    The manifest (which carries the revision) and the signatures are not content.
    """
    digest = hashlib.sha256()
    for path in sorted(files):
        if path in _NOT_CONTENT:
            continue
        digest.update(path.encode())
        digest.update(b"\0")
        digest.update(hashlib.sha256(files[path]).hexdigest().encode())
        digest.update(b"\n")
    return digest.hexdigest()


def policy_modules(policy_dir: Path) -> dict[str, bytes]:
    """The library's non-test Rego modules, keyed by their path inside the bundle."""
    modules: dict[str, bytes] = {}
    for path in sorted(policy_dir.rglob("*.rego")):
        if path.name.endswith("_test.rego"):
            continue
        rel = path.relative_to(policy_dir).as_posix()
        modules[rel] = path.read_bytes()
    return modules


def git_commit(path: Path) -> str | None:
    """The commit ``path`` was checked out at, with ``+dirty`` when it has local changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = head.stdout.strip()
    return f"{commit}+dirty" if dirty.stdout.strip() else commit


def compile_sources(
    bundle_dir: Path,
    approval_jwks: str,
    overlays: Sequence[Path] = (),
    *,
    policy_dir: Path | None = None,
) -> tuple[BundleSources, PolicySet, CompiledConfig]:
    """Load, cross-check and compile a bundle directory (no OPA involved)."""
    sources = load_bundle(bundle_dir, overlays, policy_dir=policy_dir)
    policy = resolve(sources)
    data = compile_data(policy, approval_jwks)
    demands = quality_demands(sources)
    if demands:
        data["quality"] = compile_quality(demands)
    return sources, policy, data


def stage_bundle(
    bundle_dir: Path,
    opa: Opa,
    approval_jwks: str,
    overlays: Sequence[Path] = (),
    *,
    policy_dir: Path | None = None,
    commit: str | None = None,
    run_tests: bool = True,
) -> StagedBundle:
    """Compile, check and test ``bundle_dir``; raise SpecError or BuildError."""
    sources, policy, data = compile_sources(
        bundle_dir, approval_jwks, overlays, policy_dir=policy_dir
    )
    files = policy_modules(policy.policy_dir)
    if not files:
        raise BuildError(f"no Rego modules in {policy.policy_dir}")
    data_bytes = canonical_json(data)
    files[DATA_PATH] = data_bytes
    revision = revision_of(files)
    if commit is None:
        commit = git_commit(sources.root)
    manifest = {
        "revision": revision,
        "roots": list(POLICY_ROOTS),
        "rego_version": 1,
        "metadata": {
            "bundle": policy.name,
            "git_commit": commit,
            "built_by": f"nexus-policy {__version__}",
        },
    }
    files[MANIFEST_FILE] = canonical_json(manifest)

    tests_run = 0
    with tempfile.TemporaryDirectory(prefix="nexus-build-") as tmp:
        stage = Path(tmp) / "bundle"
        _write_tree(stage, files)
        try:
            opa.check([stage], strict=True, bundle=True, capabilities=capabilities_file(opa))
        except OpaError as exc:
            problems = [_unstage(p, stage, policy.policy_dir) for p in exc.problems]
            raise BuildError("opa check --strict refused the bundle", problems) from exc
        if run_tests:
            tests_run = _run_tests(opa, policy, sources.root, data_bytes, Path(tmp))
    demands = quality_demands(sources)
    return StagedBundle(policy.name, revision, files, data, commit, tests_run, demands)


def sign_staged(staged: StagedBundle, key: SigningKey, kid: str) -> bytes:
    """The signed archive of ``staged``: its files plus ``.signatures.json`` by ``key``."""
    signed = dict(staged.files)
    signed[SIGNATURES_FILE] = sign_bundle_files(staged.files, key, kid)
    return write_archive(signed)


def build_bundle(
    bundle_dir: Path, opa: Opa, options: BuildOptions, overlays: Sequence[Path] = ()
) -> BuiltBundle:
    """Build, test and sign ``bundle_dir`` with a local key into ``options.dist_dir``.

    For local work and CI: the key is a dev key (no fleet enforcer trusts it),
    and the approval JWKS is public. A fleet's revisions are built and signed
    by the control plane from published sources.
    """
    key = load_signing_key(options.signing_key)
    jwks = read_approval_jwks(options.approval_jwks)
    staged = stage_bundle(bundle_dir, opa, jwks, overlays, run_tests=options.run_tests)
    archive = sign_staged(staged, key, options.key_id)
    options.dist_dir.mkdir(parents=True, exist_ok=True)
    final = options.dist_dir / f"{staged.name}-{staged.revision}{ARCHIVE_SUFFIX}"
    partial = options.dist_dir / f".{final.name}.partial"
    try:
        partial.write_bytes(archive)
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    return BuiltBundle(
        name=staged.name,
        revision=staged.revision,
        path=final,
        sha256=hashlib.sha256(archive).hexdigest(),
        size=len(archive),
        git_commit=staged.git_commit,
        tests_run=staged.tests_run,
    )


def _unstage(problem: Problem, stage: Path, policy_dir: Path) -> Problem:
    """Point a problem OPA found in the staging directory at the author's file."""
    path = Path(problem.file)
    if not path.is_absolute():
        path = stage.parent / path
    try:
        rel = path.resolve().relative_to(stage.resolve())
    except ValueError:
        return problem
    source = "(compiled data)" if rel.as_posix() == DATA_PATH else str(policy_dir / rel)
    return Problem(source, problem.line, problem.column, problem.message)


def _write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, content in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


def _run_tests(opa: Opa, policy: PolicySet, bundle_root: Path, data: bytes, tmp: Path) -> int:
    """The library's tests, plus the bundle's own tests against its compiled data."""
    testdata = tmp / "testdata"
    _write_tree(testdata, {DATA_PATH: data})
    paths = [policy.policy_dir, SCHEMAS_DIR]
    bundle_tests = bundle_root / BUNDLE_TESTS_DIR
    if bundle_tests.is_dir():
        paths += [testdata, bundle_tests]
    try:
        results = opa.test(paths, capabilities=capabilities_file(opa, for_tests=True))
    except OpaError as exc:
        raise BuildError("opa test could not run", exc.problems) from exc
    failed = [r for r in results if not r.passed]
    if failed:
        raise BuildError(
            f"{len(failed)} of {len(results)} Rego tests failed",
            [Problem(r.file, r.row, 1, f"{r.package}.{r.name}: {r.message}") for r in failed],
        )
    return len(results)


@dataclass(frozen=True)
class BundleContents:
    """What a built bundle archive holds, read back for diffing and serving."""

    manifest: dict[str, Any]
    data: dict[str, Any]
    modules: dict[str, bytes]
    signatures: dict[str, Any] | None
    files: dict[str, bytes]

    @property
    def roots(self) -> list[str]:
        roots = self.manifest.get("roots")
        return [str(r) for r in roots] if isinstance(roots, list) else []


def read_bundle(path: Path, *, check_revision: bool = True) -> BundleContents:
    """Read a bundle tarball; raise BuildError if it is not one."""
    try:
        if path.stat().st_size > MAX_ARCHIVE_BYTES:
            raise BuildError(f"{path} is larger than 256 MiB")
        raw = path.read_bytes()
    except OSError as exc:
        raise BuildError(f"cannot read {path}: {exc.strerror}") from None
    return read_bundle_bytes(raw, str(path), check_revision=check_revision)


def read_bundle_bytes(
    raw: bytes, name: str = "bundle", *, check_revision: bool = True
) -> BundleContents:
    """The files of a bundle archive, read within limits.

    With ``check_revision``, the manifest's revision must be the hash of the
    content (:func:`revision_of`): an archive that claims another revision
    is refused.
    """
    try:
        files = read_archive(raw, name)
    except ArchiveError as exc:
        raise BuildError(str(exc)) from None
    manifest: dict[str, Any] = {}
    data: dict[str, Any] = {}
    modules: dict[str, bytes] = {}
    signatures: dict[str, Any] | None = None
    try:
        for member_path, content in files.items():
            if member_path == MANIFEST_FILE:
                manifest = orjson.loads(content)
            elif member_path == SIGNATURES_FILE:
                signatures = orjson.loads(content)
            elif member_path.endswith("data.json"):
                prefix = [p for p in member_path.split("/")[:-1] if p]
                _merge_at(data, prefix, orjson.loads(content))
            elif member_path.endswith(".rego"):
                modules[member_path] = content
    except orjson.JSONDecodeError as exc:
        raise BuildError(f"{name} is not a readable bundle archive: {exc}") from None
    if not isinstance(manifest, dict):
        raise BuildError(f"{name}: .manifest is not a JSON object")
    if check_revision:
        claimed = manifest.get("revision")
        actual = revision_of(files)
        if claimed != actual:
            raise BuildError(
                f"{name}: the manifest claims revision {str(claimed)[:16]}… but the content "
                f"hashes to {actual[:16]}…; a revision is computed from the content, never given"
            )
    return BundleContents(manifest, data, modules, signatures, files)


def _merge_at(root: dict[str, Any], prefix: list[str], value: Any) -> None:
    node = root
    for part in prefix[:-1] if prefix else []:
        node = node.setdefault(part, {})
    if prefix:
        node[prefix[-1]] = value
    elif isinstance(value, dict):
        root.update(value)
