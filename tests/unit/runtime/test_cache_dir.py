"""Caches follow $HOME (not the account's passwd entry), the same way in Python and in bootstrap."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from nexus_runtime.toolchain import cache_dir, maven_repository

REPO = Path(__file__).resolve().parents[3]


def _bootstrap_cache(env: dict[str, str]) -> Path:
    """The cache directory scripts/bootstrap computes, by running its own assignment."""
    line = next(
        line
        for line in (REPO / "scripts" / "bootstrap").read_text().splitlines()
        if line.startswith("cache=")
    )
    out = subprocess.run(
        ["bash", "-c", f'{line}; printf %s "$cache"'],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout)


@pytest.mark.parametrize(
    "env",
    [
        {"HOME": "/tmp/ci-home"},
        {"HOME": "/tmp/ci-home", "XDG_CACHE_HOME": "/tmp/xdg"},
        {"HOME": "/tmp/ci-home", "NEXUS_CACHE_DIR": "/tmp/nexus-cache"},
    ],
    ids=["home", "xdg", "explicit"],
)
def test_bootstrap_and_the_tests_agree_on_the_cache(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HOME", "XDG_CACHE_HOME", "NEXUS_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cache_dir() == _bootstrap_cache({"PATH": "/usr/bin:/bin", **env})


def test_maven_artefacts_live_under_the_cache_not_the_passwd_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("NEXUS_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert maven_repository() == tmp_path / ".cache" / "nexus-policy" / "m2"
