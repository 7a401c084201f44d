"""The Python side of scripts/supply-chain: the lock, advisories, licences and SBOMs.

Run by scripts/supply-chain with the project's virtualenv; each subcommand
prints what it found and exits non-zero on a failure:

- ``fingerprint``: stamp requirements.lock with the requirements it was
  compiled from (after ``uv pip compile`` rewrote it);
- ``check-lock``: the lock still matches pyproject.toml (see `lock_problems`);
- ``advisories FILE``: judge pip-audit's JSON report against the accepted
  advisories (`ADVISORIES_FILE`): a vulnerability with a fixed version always
  fails, one without must be accepted there with a reason, and a distribution
  pip-audit could not audit fails too, unless none could (`EXIT_NOT_RUN`:
  PyPI's vulnerability data is out of reach);
- ``licences``: no installed distribution is under a licence `DENIED_LICENCES` names;
- ``runtime-requirements OUT``: the lock's entries the installed distribution
  needs at run time (no dev tools), hashes included, for its SBOM;
- ``check-sbom FILE...``: each file is a CycloneDX JSON document valid against
  its schema version.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
LOCK_FILE = ROOT / "requirements.lock"
ADVISORIES_FILE = ROOT / "supply-chain" / "advisories.yaml"
LOCKED_EXTRAS = ("dev",)
"""The optional-dependency groups the lock holds besides the runtime requirements."""
FINGERPRINT_PREFIX = "# pyproject-requirements-sha256: "
DENIED_LICENCES = (
    ("AGPL", re.compile(r"\bAGPL|Affero", re.IGNORECASE)),
    ("SSPL", re.compile(r"\bSSPL|Server[ -]Side Public License", re.IGNORECASE)),
    ("BUSL", re.compile(r"\bBUSL|Business Source License", re.IGNORECASE)),
)
"""Licences no dependency may carry: they would bind how the platform is offered."""

EXIT_NOT_RUN = 3
"""Exit status of a check that could not run here (scripts/supply-chain reports it)."""

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)\s*(;[^\\]*)?\\?\s*$")


@dataclass(frozen=True)
class Problem:
    """Something wrong at ``path``:``line``."""

    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


# --- the lock ----------------------------------------------------------------


@dataclass(frozen=True)
class LockedPin:
    name: str
    version: str
    marker: str | None
    line: int
    hashes: tuple[str, ...]


def declared_requirements(pyproject: Path = PYPROJECT) -> list[tuple[Requirement, int]]:
    """The runtime and `LOCKED_EXTRAS` requirements of pyproject.toml, each with its line."""
    text = pyproject.read_text(encoding="utf-8")
    project = tomllib.loads(text)["project"]
    strings = list(project.get("dependencies", []))
    for extra in LOCKED_EXTRAS:
        strings += project.get("optional-dependencies", {}).get(extra, [])
    lines = text.splitlines()
    found = []
    for string in strings:
        number = next((n for n, line in enumerate(lines, start=1) if f'"{string}"' in line), 1)
        found.append((Requirement(string), number))
    return found


def fingerprint(pyproject: Path = PYPROJECT) -> str:
    """A digest of what the lock is compiled from: requires-python and the requirements."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    parts = [f"requires-python {project.get('requires-python', '')}"]
    parts += sorted(str(req) for req, _ in declared_requirements(pyproject))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def read_lock(
    lock: Path = LOCK_FILE,
) -> tuple[list[LockedPin], list[Problem], tuple[str, int] | None]:
    """The pins of a requirements lock, lines it cannot read, and its fingerprint line."""
    pins: list[LockedPin] = []
    problems: list[Problem] = []
    stamp: tuple[str, int] | None = None
    current: dict[str, Any] | None = None
    for number, raw in enumerate(lock.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if line.startswith(FINGERPRINT_PREFIX):
            stamp = (line.removeprefix(FINGERPRINT_PREFIX).strip(), number)
        if not line or line.startswith("#"):
            continue
        if line.startswith("--hash="):
            if current is None:
                problems.append(Problem(lock, number, "a hash that belongs to no requirement"))
            else:
                current["hashes"].append(line.removeprefix("--hash=").rstrip("\\ ").strip())
            continue
        match = _PIN.match(line)
        if match is None:
            problems.append(Problem(lock, number, f"not a pinned requirement: {line}"))
            current = None
            continue
        if current is not None:
            pins.append(LockedPin(**current))
        current = {
            "name": canonicalize_name(match.group(1)),
            "version": match.group(3),
            "marker": match.group(4)[1:].strip() if match.group(4) else None,
            "line": number,
            "hashes": [],
        }
    if current is not None:
        pins.append(LockedPin(**current))
    return (
        [LockedPin(p.name, p.version, p.marker, p.line, tuple(p.hashes)) for p in pins],
        problems,
        stamp,
    )


def lock_problems(pyproject: Path = PYPROJECT, lock: Path = LOCK_FILE) -> list[Problem]:
    """Why ``lock`` no longer matches ``pyproject``: each requirement must be pinned to a
    version it allows, every pin must carry a hash, and the lock's fingerprint must be
    that of pyproject.toml's requirements today (a changed extra or a removed
    requirement leaves every pin satisfied but the lock stale)."""
    if not lock.is_file():
        return [Problem(lock, 1, "missing; run scripts/supply-chain lock")]
    pins, problems, stamp = read_lock(lock)
    by_name: dict[str, list[LockedPin]] = {}
    for pin in pins:
        by_name.setdefault(pin.name, []).append(pin)
        if not pin.hashes:
            problems.append(Problem(lock, pin.line, f"{pin.name}=={pin.version} has no --hash"))
    for requirement, line in declared_requirements(pyproject):
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        locked = by_name.get(canonicalize_name(requirement.name), [])
        if not locked:
            problems.append(
                Problem(pyproject, line, f"{requirement} is not in {lock.name}; re-lock")
            )
        elif not any(requirement.specifier.contains(p.version, prereleases=True) for p in locked):
            versions = ", ".join(p.version for p in locked)
            problems.append(
                Problem(
                    pyproject,
                    line,
                    f"{requirement} does not allow the locked {versions} "
                    f"({lock.name}:{locked[0].line}); re-lock",
                )
            )
    expected = fingerprint(pyproject)
    if stamp is None:
        problems.append(Problem(lock, 1, f"no '{FINGERPRINT_PREFIX.strip()}' line; re-lock"))
    elif stamp[0] != expected:
        problems.append(
            Problem(
                lock,
                stamp[1],
                "compiled from other requirements than pyproject.toml's today; "
                "run scripts/supply-chain lock",
            )
        )
    return sorted(problems, key=lambda p: (str(p.path), p.line))


def stamp_lock(lock: Path = LOCK_FILE, pyproject: Path = PYPROJECT) -> None:
    """Write (or replace) the fingerprint line after the lock's header comments."""
    lines = [
        line
        for line in lock.read_text(encoding="utf-8").splitlines()
        if not line.startswith(FINGERPRINT_PREFIX)
    ]
    header = 0
    while header < len(lines) and lines[header].startswith("#"):
        header += 1
    lines.insert(header, FINGERPRINT_PREFIX + fingerprint(pyproject))
    lock.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --- advisories --------------------------------------------------------------


@dataclass(frozen=True)
class Advisory:
    """One known vulnerability of a locked dependency, as pip-audit reports it."""

    package: str
    version: str
    id: str
    aliases: tuple[str, ...]
    fix_versions: tuple[str, ...]

    @property
    def ids(self) -> frozenset[str]:
        return frozenset((self.id, *self.aliases))


def advisories_of(report: Any) -> list[Advisory]:
    """Every vulnerability in pip-audit's ``--format json`` report."""
    found = []
    for dependency in report.get("dependencies", []):
        for vuln in dependency.get("vulns", []):
            found.append(
                Advisory(
                    package=canonicalize_name(dependency["name"]),
                    version=str(dependency.get("version", "")),
                    id=str(vuln["id"]),
                    aliases=tuple(str(a) for a in vuln.get("aliases", [])),
                    fix_versions=tuple(str(v) for v in vuln.get("fix_versions", [])),
                )
            )
    return found


def accepted_advisories(path: Path = ADVISORIES_FILE) -> dict[str, tuple[str, str, int]]:
    """Accepted advisory id → (package, reason, line). Raises ValueError naming file:line."""
    text = path.read_text(encoding="utf-8")
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict) or set(data) - {"accepted"}:
        raise ValueError(f"{path}:1: expected a mapping with one key, 'accepted'")
    entries = data.get("accepted") or []
    nodes = []
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if key.value == "accepted" and isinstance(value, yaml.SequenceNode):
                nodes = value.value
    accepted: dict[str, tuple[str, str, int]] = {}
    for index, entry in enumerate(entries):
        line = nodes[index].start_mark.line + 1 if index < len(nodes) else 1
        if not isinstance(entry, dict) or set(entry) != {"id", "package", "reason"}:
            raise ValueError(f"{path}:{line}: an entry has exactly id, package and reason")
        if not all(isinstance(entry[k], str) and entry[k].strip() for k in entry):
            raise ValueError(f"{path}:{line}: id, package and reason must be non-empty text")
        accepted[entry["id"]] = (canonicalize_name(entry["package"]), entry["reason"], line)
    return accepted


def judge_advisories(
    advisories: Sequence[Advisory], accepted: dict[str, tuple[str, str, int]]
) -> tuple[list[str], list[str], list[str]]:
    """(failures, accepted ones with their reasons, stale acceptances) as printable lines."""
    failures, kept = [], []
    used: set[str] = set()
    for advisory in advisories:
        what = f"{advisory.package} {advisory.version}: {advisory.id}"
        if advisory.fix_versions:
            failures.append(f"{what} is fixed in {', '.join(advisory.fix_versions)}; upgrade it")
            continue
        match = next(
            (i for i in sorted(advisory.ids) if accepted.get(i, ("",))[0] == advisory.package),
            None,
        )
        if match is None:
            failures.append(
                f"{what} has no fixed version; accept it with a reason in {ADVISORIES_FILE.name}"
                " or drop the dependency"
            )
        else:
            used.add(match)
            kept.append(f"{what} (no fix yet) accepted: {accepted[match][1]}")
    stale = [
        f"{ADVISORIES_FILE.name}:{line}: {advisory_id} ({package}) no longer reported"
        for advisory_id, (package, _, line) in accepted.items()
        if advisory_id not in used
    ]
    return failures, kept, stale


# --- licences ----------------------------------------------------------------


def licence_texts(dist: metadata.Distribution) -> list[str]:
    """What a distribution says its licence is: expression, field and classifiers."""
    meta = dist.metadata
    texts = [*(meta.get_all("License-Expression") or [])]
    texts += [text.split("\n")[0] for text in meta.get_all("License") or []]
    texts += [c for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    return [t for t in texts if t.strip()]


def denied_licences(dists: Iterable[metadata.Distribution]) -> list[str]:
    """``name version: licence (denied: X)`` for every distribution under a denied licence."""
    found = []
    for dist in dists:
        for text in licence_texts(dist):
            for label, pattern in DENIED_LICENCES:
                if pattern.search(text):
                    found.append(f"{dist.metadata['Name']} {dist.version}: {text} ({label})")
    return sorted(set(found))


# --- runtime requirements for the SBOM ----------------------------------------


def runtime_closure(project: str = "nexus-policy") -> dict[str, str]:
    """Canonical name → version of every installed distribution ``project`` needs at run
    time: its requirements without extras, followed through each one's own
    (with the extras asked of it), markers evaluated for this interpreter."""
    environment = {key: str(value) for key, value in default_environment().items()}
    wanted: dict[str, set[str]] = {canonicalize_name(project): set()}
    found: dict[str, str] = {}
    queue = [canonicalize_name(project)]
    while queue:
        name = queue.pop()
        dist = metadata.distribution(name)
        found[name] = dist.version
        for string in dist.requires or []:
            try:
                requirement = Requirement(string)
            except InvalidRequirement:
                continue
            extras = wanted[name] or {""}
            if requirement.marker is not None and not any(
                requirement.marker.evaluate({**environment, "extra": extra}) for extra in extras
            ):
                continue
            child = canonicalize_name(requirement.name)
            before = set(wanted.get(child, set()))
            wanted.setdefault(child, set()).update(requirement.extras)
            if child not in found or wanted[child] != before:
                queue.append(child)
    found.pop(canonicalize_name(project))
    return found


def runtime_requirements(lock: Path = LOCK_FILE) -> str:
    """The lock's lines (with hashes) for `runtime_closure`, as a requirements file."""
    closure = runtime_closure()
    pins, _, _ = read_lock(lock)
    lines = lock.read_text(encoding="utf-8").splitlines()
    out = []
    for index, pin in enumerate(pins):
        if closure.get(pin.name) != pin.version:
            continue
        end = pins[index + 1].line - 1 if index + 1 < len(pins) else len(lines)
        block = [ln for ln in lines[pin.line - 1 : end] if not ln.strip().startswith("#")]
        out.append("\n".join(ln for ln in block if ln.strip()))
    missing = sorted(set(closure) - {p.name for p in pins})
    if missing:
        raise ValueError(f"{lock}: installed but not locked: {', '.join(missing)}")
    return "\n".join(out) + "\n"


# --- SBOMs ---------------------------------------------------------------------


def sbom_problems(path: Path) -> list[str]:
    """Why ``path`` is not a well-formed CycloneDX JSON document (empty when it is)."""
    from cyclonedx.schema import OutputFormat, SchemaVersion
    from cyclonedx.validation import make_schemabased_validator

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"{path}: not JSON: {exc}"]
    if document.get("bomFormat") != "CycloneDX":
        return [f"{path}: bomFormat is {document.get('bomFormat')!r}, not 'CycloneDX'"]
    try:
        version = SchemaVersion.from_version(str(document.get("specVersion")))
    except ValueError:
        return [f"{path}: unknown CycloneDX specVersion {document.get('specVersion')!r}"]
    validator = make_schemabased_validator(OutputFormat.JSON, version)
    error = validator.validate_str(path.read_text(encoding="utf-8"))
    problems = [f"{path}: not valid CycloneDX {version.to_version()}: {error}"] if error else []
    if not document.get("components"):
        problems.append(f"{path}: lists no components")
    if not document.get("metadata", {}).get("component", {}).get("name"):
        problems.append(f"{path}: names no root component (metadata.component)")
    return problems


# --- command line ---------------------------------------------------------------


def main(argv: Sequence[str]) -> int:
    command, *args = argv or ["--help"]
    if command == "fingerprint":
        stamp_lock()
        return 0
    if command == "check-lock":
        problems = lock_problems()
        for problem in problems:
            print(problem, file=sys.stderr)
        if not problems:
            print(f"{LOCK_FILE.name} matches {PYPROJECT.name}")
        return 1 if problems else 0
    if command == "advisories":
        report = json.loads(Path(args[0]).read_text(encoding="utf-8"))
        dependencies = report.get("dependencies", [])
        skipped = [d for d in dependencies if "skip_reason" in d]
        if dependencies and len(skipped) == len(dependencies):
            print(
                f"  NOT RUN: none of the {len(dependencies)} locked distributions could be "
                f"audited ({skipped[0]['skip_reason']}): PyPI's per-release JSON API, "
                "which carries its vulnerability data, does not answer from here",
                file=sys.stderr,
            )
            return EXIT_NOT_RUN
        failures, kept, stale = judge_advisories(advisories_of(report), accepted_advisories())
        failures += [f"{d['name']}: not audited: {d['skip_reason']}" for d in skipped]
        for line in kept + stale:
            print(f"  note: {line}")
        for line in failures:
            print(f"  FAIL: {line}", file=sys.stderr)
        audited = len(dependencies) - len(skipped)
        print(f"{audited} locked distributions audited, {len(failures)} failures")
        return 1 if failures else 0
    if command == "licences":
        dists = list(metadata.distributions())
        denied = denied_licences(dists)
        for line in denied:
            print(f"  FAIL: {line}", file=sys.stderr)
        labels = "/".join(label for label, _ in DENIED_LICENCES)
        print(f"{len(dists)} installed distributions, {len(denied)} under {labels}")
        return 1 if denied else 0
    if command == "runtime-requirements":
        Path(args[0]).write_text(runtime_requirements(), encoding="utf-8")
        return 0
    if command == "check-sbom":
        found = [p for path in args for p in sbom_problems(Path(path))]
        for line in found:
            print(line, file=sys.stderr)
        return 1 if found else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
