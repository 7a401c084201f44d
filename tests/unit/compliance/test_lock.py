"""requirements.lock: generated from pyproject.toml with hashes, and refused, with file and
line, as soon as it no longer matches pyproject.toml's requirements."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.unit.compliance.supply_chain import supply_chain

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Path]:
    """Copies of pyproject.toml and requirements.lock to break."""
    pyproject = Path(shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml"))
    lock = Path(shutil.copy(REPO / "requirements.lock", tmp_path / "requirements.lock"))
    return pyproject, lock


def _line_of(path: Path, text: str) -> int:
    content = path.read_text()
    assert text in content, f"{text!r} not in {path.name}"
    return content[: content.index(text)].count("\n") + 1


def test_the_lock_matches_pyproject_and_pins_every_requirement_with_hashes() -> None:
    assert supply_chain.lock_problems() == []
    pins, unreadable, stamp = supply_chain.read_lock()
    assert unreadable == [] and stamp is not None
    locked = {pin.name for pin in pins}
    for requirement, _ in supply_chain.declared_requirements():
        assert requirement.name.lower().replace("_", "-") in locked, requirement
    assert all(pin.hashes and all(h.startswith("sha256:") for h in pin.hashes) for pin in pins)
    assert {"bandit", "pip-audit", "cyclonedx-bom", "uv", "setuptools"} <= locked


def test_a_requirement_the_lock_does_not_satisfy_is_named_at_its_pyproject_line(
    project: tuple[Path, Path],
) -> None:
    pyproject, lock = project
    line = _line_of(pyproject, '"PyYAML>=6.0.2,<7"')
    pyproject.write_text(pyproject.read_text().replace('"PyYAML>=6.0.2,<7"', '"PyYAML>=7"'))
    problems = supply_chain.lock_problems(pyproject, lock)
    assert [(p.path.name, p.line) for p in problems] == [
        ("pyproject.toml", line),
        ("requirements.lock", 3),
    ]
    assert "PyYAML>=7 does not allow the locked 6." in problems[0].message
    assert str(problems[0]).startswith(f"{pyproject}:{line}: ")


def test_a_new_requirement_is_named_and_the_lock_is_stale(project: tuple[Path, Path]) -> None:
    pyproject, lock = project
    pyproject.write_text(
        pyproject.read_text().replace(
            '    "PyYAML>=6.0.2,<7",\n', '    "PyYAML>=6.0.2,<7",\n    "tomlkit>=0.13",\n'
        )
    )
    line = _line_of(pyproject, '"tomlkit>=0.13"')
    messages = [str(p) for p in supply_chain.lock_problems(pyproject, lock)]
    assert f"{pyproject}:{line}: tomlkit>=0.13 is not in requirements.lock; re-lock" in messages
    assert any("compiled from other requirements" in m for m in messages)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('    "orjson>=3.10,<4",\n', ""),
        ('"uvicorn>=0.30,<1"', '"uvicorn[standard]>=0.30,<1"'),
        ('requires-python = ">=3.11"', 'requires-python = ">=3.12"'),
    ],
)
def test_a_change_every_pin_still_satisfies_leaves_the_lock_stale(
    project: tuple[Path, Path], old: str, new: str
) -> None:
    pyproject, lock = project
    pyproject.write_text(pyproject.read_text().replace(old, new, 1))
    problems = supply_chain.lock_problems(pyproject, lock)
    assert [(p.path.name, p.line) for p in problems] == [("requirements.lock", 3)]
    assert "run scripts/supply-chain lock" in problems[0].message


def test_a_pin_without_a_hash_is_named_at_its_line(project: tuple[Path, Path]) -> None:
    pyproject, lock = project
    text = lock.read_text()
    start = text.index("\npyyaml==") + 1
    end = text.index("\n", start)
    pin = text[start:end].removesuffix(" \\")
    rest = text[end + 1 :]
    while rest.lstrip().startswith("--hash="):
        rest = rest[rest.index("\n") + 1 :]
    lock.write_text(text[:start] + pin + "\n" + rest)
    line = _line_of(lock, pin)
    problems = supply_chain.lock_problems(pyproject, lock)
    assert [str(p) for p in problems] == [
        f"{lock}:{line}: pyyaml=={pin.split('==')[1]} has no --hash"
    ]


def test_a_missing_or_unstamped_lock_is_refused(project: tuple[Path, Path]) -> None:
    pyproject, lock = project
    lock.write_text(
        "".join(
            line
            for line in lock.read_text().splitlines(keepends=True)
            if not line.startswith(supply_chain.FINGERPRINT_PREFIX)
        )
    )
    assert [p.line for p in supply_chain.lock_problems(pyproject, lock)] == [1]
    supply_chain.stamp_lock(lock, pyproject)
    assert supply_chain.lock_problems(pyproject, lock) == []
    lock.unlink()
    assert "missing" in str(supply_chain.lock_problems(pyproject, lock)[0])
