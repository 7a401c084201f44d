"""Runs the real OPA binary for check, test, fmt and build, and reads its answers.

OPA's own messages reach the author unchanged, with their file, row and
column; this module only parses OPA's JSON output into typed results.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nexus_contract.errors import NexusError
from nexus_control.authoring.loader import Problem
from nexus_runtime.toolchain import environ_with_tools

__all__ = ["DEFAULT_TIMEOUT_S", "CoverageReport", "Opa", "OpaError", "TestResult"]

DEFAULT_TIMEOUT_S = 600


class OpaError(NexusError):
    """OPA refused the input; ``problems`` holds OPA's messages with their places."""

    def __init__(self, what: str, problems: Sequence[Problem], output: str = "") -> None:
        self.problems = list(problems)
        self.output = output
        detail = "\n".join(str(p) for p in self.problems) or output.strip()
        super().__init__(f"{what}:\n{detail}" if detail else what)


@dataclass(frozen=True)
class TestResult:
    package: str
    name: str
    file: str
    row: int
    passed: bool
    message: str | None
    duration_ns: int


@dataclass(frozen=True)
class CoverageReport:
    percent: float
    files: dict[str, float]
    uncovered: dict[str, list[tuple[int, int]]]
    """Per file, the uncovered line ranges (start, end)."""


class Opa:
    """One OPA binary and the commands the control plane runs with it."""

    def __init__(self, binary: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.binary = binary
        self.timeout_s = timeout_s

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [str(self.binary), *args],
                capture_output=True,
                text=True,
                cwd=cwd,
                env=environ_with_tools(),
                timeout=self.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise OpaError(f"opa {args[0]} did not finish in {self.timeout_s:.0f} s", []) from exc
        except OSError as exc:
            raise OpaError(f"cannot run {self.binary}: {exc.strerror}", []) from exc

    def version(self) -> str:
        out = self.run("version")
        return out.stdout.splitlines()[0].removeprefix("Version: ").strip() if out.stdout else "?"

    def check(
        self,
        paths: Sequence[Path],
        *,
        strict: bool = True,
        bundle: bool = False,
        capabilities: Path | None = None,
    ) -> None:
        """``opa check``; raise OpaError with every error OPA reports."""
        args = ["check", "--format", "json"]
        if strict:
            args.append("--strict")
        if bundle:
            args.append("--bundle")
        if capabilities is not None:
            args += ["--capabilities", str(capabilities)]
        out = self.run(*args, *map(str, paths))
        if out.returncode != 0:
            raise OpaError(
                "opa check failed",
                _check_problems(out.stdout + out.stderr),
                out.stderr or out.stdout,
            )

    def test(
        self, paths: Sequence[Path], *, bundle: bool = False, capabilities: Path | None = None
    ) -> list[TestResult]:
        """``opa test``; every test's result (OpaError if OPA could not run them)."""
        args = ["test", "--format", "json"]
        if bundle:
            args.append("--bundle")
        if capabilities is not None:
            args += ["--capabilities", str(capabilities)]
        out = self.run(*args, *map(str, paths))
        try:
            raw = json.loads(out.stdout) if out.stdout.strip() else None
        except ValueError:
            raw = None
        if not isinstance(raw, list):
            raise OpaError(
                "opa test could not run the tests",
                _check_problems(out.stdout),
                out.stderr or out.stdout,
            )
        return [_test_result(item) for item in raw]

    def coverage(self, paths: Sequence[Path], *, bundle: bool = False) -> CoverageReport:
        """``opa test --coverage``; call after :meth:`test` passed."""
        args = ["test", "--coverage", "--format", "json"]
        if bundle:
            args.append("--bundle")
        out = self.run(*args, *map(str, paths))
        try:
            raw = json.loads(out.stdout)
        except ValueError:
            raise OpaError("opa test --coverage failed", [], out.stderr or out.stdout) from None
        files: dict[str, float] = {}
        uncovered: dict[str, list[tuple[int, int]]] = {}
        for name, report in sorted(raw.get("files", {}).items()):
            files[name] = float(report.get("coverage", 0.0))
            uncovered[name] = [
                (r["start"]["row"], r["end"]["row"]) for r in report.get("not_covered", [])
            ]
        return CoverageReport(float(raw.get("coverage", 0.0)), files, uncovered)

    def fmt_unformatted(self, paths: Sequence[Path]) -> list[str]:
        """Files ``opa fmt`` would change."""
        out = self.run("fmt", "--list", *map(str, paths))
        if out.returncode not in (0, 2):
            raise OpaError("opa fmt failed", [], out.stderr)
        return [line for line in out.stdout.splitlines() if line.strip()]

    def build_signed(
        self,
        source: Path,
        output: Path,
        *,
        signing_key: Path,
        key_id: str,
        algorithm: str = "RS256",
    ) -> None:
        """``opa build -b`` of a staged bundle directory, signed with ``signing_key``.

        OPA names each file in the archive by the path it was given, so it runs
        inside ``source`` on ``.``: the archive then holds bundle-relative paths
        and does not depend on where the staging directory was.
        """
        out = self.run(
            "build",
            "--bundle",
            ".",
            "--output",
            str(output.resolve()),
            "--signing-key",
            str(signing_key.resolve()),
            "--signing-alg",
            algorithm,
            "--verification-key-id",
            key_id,
            cwd=source,
        )
        if out.returncode != 0:
            raise OpaError(
                "opa build failed", _check_problems(out.stdout), out.stderr or out.stdout
            )


def _check_problems(output: str) -> list[Problem]:
    """OPA's JSON error report, wherever in ``output`` it starts."""
    start = output.find("{")
    try:
        raw = json.loads(output[start:]) if start >= 0 else None
    except ValueError:
        return []
    errors = raw.get("errors", []) if isinstance(raw, dict) else []
    problems = []
    for err in errors:
        loc = err.get("location") or {}
        problems.append(
            Problem(
                str(loc.get("file", "?")),
                int(loc.get("row", 0)),
                int(loc.get("col", 0)),
                f"{err.get('code', 'opa')}: {err.get('message', '')}",
            )
        )
    return problems


def _test_result(item: dict[str, Any]) -> TestResult:
    loc = item.get("location") or {}
    failed = bool(item.get("fail")) or "error" in item
    message = None
    if "error" in item:
        message = str(
            item["error"].get("message") if isinstance(item["error"], dict) else item["error"]
        )
    elif failed:
        message = "test failed"
    return TestResult(
        package=str(item.get("package", "")),
        name=str(item.get("name", "")),
        file=str(loc.get("file", "")),
        row=int(loc.get("row", 0)),
        passed=not failed,
        message=message,
        duration_ns=int(item.get("duration", 0)),
    )
