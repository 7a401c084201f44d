"""``python -m nexus_runtime.dashboards [--check] [DIR]``: write (or check) the dashboards."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from nexus_runtime.dashboards import DEFAULT_DIR, REGENERATE, stale, write_all


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=REGENERATE, description=__doc__)
    parser.add_argument(
        "directory",
        nargs="?",
        type=Path,
        default=DEFAULT_DIR,
        help=f"where the JSON goes (default: {DEFAULT_DIR}, from the repository's root)",
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file is out of date"
    )
    args = parser.parse_args(argv)
    directory: Path = args.directory
    if args.check:
        problems = stale(directory)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print(f"regenerate them with: {REGENERATE} {directory}", file=sys.stderr)
        return 1 if problems else 0
    for path in write_all(directory):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
