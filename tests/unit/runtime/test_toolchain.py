"""Which build of a pinned tool the project runs when several are cached."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from nexus_runtime.toolchain import find_ratelimit


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_ratelimit_is_the_clones_own_build_not_any_cached_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two clones at different pins share the cache; the hash directories sort arbitrarily.
    cache = tmp_path / "cache"
    _executable(cache / "tools" / "ratelimit" / "0aaa" / "ratelimit")
    stale = _executable(cache / "tools" / "ratelimit" / "ffff" / "ratelimit")
    monkeypatch.setenv("NEXUS_CACHE_DIR", str(cache))
    venv_bin = tmp_path / "venv" / "bin"
    monkeypatch.setattr(sys, "executable", str(_executable(venv_bin / "python")))
    assert find_ratelimit() == stale  # nothing linked: some cached build

    linked = venv_bin / "ratelimit"
    linked.symlink_to(cache / "tools" / "ratelimit" / "0aaa" / "ratelimit")
    assert find_ratelimit() == linked  # what this clone's bootstrap linked
    configured = _executable(tmp_path / "elsewhere" / "ratelimit")
    assert find_ratelimit(configured) == configured
