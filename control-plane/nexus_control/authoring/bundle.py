"""Builds the signed policy bundle: specs + Rego -> checked, tested, signed tarball.

The pipeline, top to bottom: load and cross-check the specs, compile them to
``data.nexus.config``, stage the bundle directory (``.manifest``, data, the
library's non-test modules), run ``opa check --strict`` on it and ``opa test``
on the library and the bundle's own tests against the compiled data, then
``opa build --signing-key`` it and move the tarball into place atomically.

Invariants:
- the revision is a hash over the data and policy files only, computed before
  the manifest that carries it; the same sources give the same revision, and
  (with RS256, which is deterministic) byte-identical archives;
- nothing reaches ``dist/`` unless every step passed.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from nexus_contract.canonical import canonical_json
from nexus_contract.decision import SCHEMAS_DIR
from nexus_contract.errors import NexusError
from nexus_contract.wire import POLICY_ROOTS
from nexus_control import __version__
from nexus_control.access.signing_keys import approval_jwks, load_approval_key, load_signing_key
from nexus_control.authoring.compiler import compile_data
from nexus_control.authoring.config import CompiledConfig
from nexus_control.authoring.loader import BundleSources, Problem, load_bundle
from nexus_control.authoring.opa import Opa, OpaError
from nexus_control.authoring.policyset import PolicySet, resolve

__all__ = [
    "ARCHIVE_SUFFIX",
    "BUNDLE_TESTS_DIR",
    "DATA_PATH",
    "MAX_ARCHIVE_BYTES",
    "SIGNING_ALGORITHM",
    "BuildError",
    "BuildOptions",
    "BuiltBundle",
    "BundleContents",
    "build_bundle",
    "compile_sources",
    "git_commit",
    "policy_modules",
    "read_bundle",
    "read_bundle_bytes",
    "revision_of",
]

DATA_PATH = "nexus/config/data.json"
BUNDLE_TESTS_DIR = "tests"
SIGNING_ALGORITHM = "RS256"
ARCHIVE_SUFFIX = ".tar.gz"


class BuildError(NexusError):
    """The bundle was not built; ``problems`` lists why, with places where known."""

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        self.problems = problems or []
        detail = "\n".join(str(p) for p in self.problems)
        super().__init__(f"{message}\n{detail}" if detail else message)


@dataclass(frozen=True)
class BuildOptions:
    signing_key: Path
    key_id: str
    approval_key: Path
    dist_dir: Path
    run_tests: bool = True


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
    """Content address of a bundle: SHA-256 over each file's path and SHA-256, in path order."""
    digest = hashlib.sha256()
    for path in sorted(files):
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
    bundle_dir: Path, approval_key: Path, overlays: Sequence[Path] = ()
) -> tuple[BundleSources, PolicySet, CompiledConfig]:
    """Load, cross-check and compile a bundle directory (no OPA involved)."""
    sources = load_bundle(bundle_dir, overlays)
    policy = resolve(sources)
    jwks = approval_jwks(load_approval_key(approval_key))
    return sources, policy, compile_data(policy, jwks)


def build_bundle(
    bundle_dir: Path, opa: Opa, options: BuildOptions, overlays: Sequence[Path] = ()
) -> BuiltBundle:
    """Build, test and sign ``bundle_dir`` into ``options.dist_dir``; raise BuildError."""
    load_signing_key(options.signing_key)
    sources, policy, data = compile_sources(bundle_dir, options.approval_key, overlays)

    files = policy_modules(policy.policy_dir)
    if not files:
        raise BuildError(f"no Rego modules in {policy.policy_dir}")
    data_bytes = canonical_json(data)
    files[DATA_PATH] = data_bytes
    revision = revision_of(files)
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

    with tempfile.TemporaryDirectory(prefix="nexus-build-") as tmp:
        stage = Path(tmp) / "bundle"
        _write_tree(stage, files)
        (stage / ".manifest").write_bytes(canonical_json(manifest))
        try:
            opa.check([stage], strict=True, bundle=True)
        except OpaError as exc:
            problems = [_unstage(p, stage, policy.policy_dir) for p in exc.problems]
            raise BuildError("opa check --strict refused the bundle", problems) from exc

        tests_run = 0
        if options.run_tests:
            tests_run = _run_tests(opa, policy, sources.root, data_bytes, Path(tmp))

        options.dist_dir.mkdir(parents=True, exist_ok=True)
        final = options.dist_dir / f"{policy.name}-{revision}{ARCHIVE_SUFFIX}"
        partial = options.dist_dir / f".{final.name}.partial"
        try:
            opa.build_signed(
                stage,
                partial,
                signing_key=options.signing_key,
                key_id=options.key_id,
                algorithm=SIGNING_ALGORITHM,
            )
            os.replace(partial, final)
        except OpaError as exc:
            raise BuildError("opa build could not sign the bundle", exc.problems) from exc
        finally:
            partial.unlink(missing_ok=True)

    archive = final.read_bytes()
    return BuiltBundle(
        name=policy.name,
        revision=revision,
        path=final,
        sha256=hashlib.sha256(archive).hexdigest(),
        size=len(archive),
        git_commit=commit,
        tests_run=tests_run,
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
        results = opa.test(paths)
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


MAX_ARCHIVE_BYTES = 256 * 1024 * 1024


def read_bundle(path: Path) -> BundleContents:
    """Read a bundle tarball; raise BuildError if it is not one."""
    try:
        if path.stat().st_size > MAX_ARCHIVE_BYTES:
            raise BuildError(f"{path} is larger than 256 MiB")
        raw = path.read_bytes()
    except OSError as exc:
        raise BuildError(f"cannot read {path}: {exc.strerror}") from None
    return read_bundle_bytes(raw, str(path))


def read_bundle_bytes(raw: bytes, name: str = "bundle") -> BundleContents:
    manifest: dict[str, Any] = {}
    data: dict[str, Any] = {}
    modules: dict[str, bytes] = {}
    signatures: dict[str, Any] | None = None
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
            for member, content in _members(tar):
                member_path = member.lstrip("/")
                if member_path == ".manifest":
                    manifest = orjson.loads(content)
                elif member_path == ".signatures.json":
                    signatures = orjson.loads(content)
                elif member_path.endswith("data.json"):
                    prefix = [p for p in member_path.split("/")[:-1] if p]
                    _merge_at(data, prefix, orjson.loads(content))
                elif member_path.endswith(".rego"):
                    modules[member_path] = content
    except (tarfile.TarError, OSError, EOFError, orjson.JSONDecodeError) as exc:
        raise BuildError(f"{name} is not a readable bundle archive: {exc}") from None
    return BundleContents(manifest, data, modules, signatures)


def _members(tar: tarfile.TarFile) -> Iterator[tuple[str, bytes]]:
    for member in tar.getmembers():
        if not member.isfile():
            continue
        handle = tar.extractfile(member)
        if handle is not None:
            yield member.name, handle.read()


def _merge_at(root: dict[str, Any], prefix: list[str], value: Any) -> None:
    node = root
    for part in prefix[:-1] if prefix else []:
        node = node.setdefault(part, {})
    if prefix:
        node[prefix[-1]] = value
    elif isinstance(value, dict):
        root.update(value)
