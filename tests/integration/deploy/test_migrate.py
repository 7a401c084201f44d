"""`nexus-policy migrate`, the command the chart's pre-install/pre-upgrade Job runs."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path


def test_migrate_brings_both_schemas_to_head_and_is_idempotent(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "NEXUS_DATABASE_URL": f"sqlite:///{tmp_path / 'control.db'}",
        "NEXUS_AUDIT_DATABASE_URL": f"sqlite:///{tmp_path / 'audit.db'}",
    }
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-m", "nexus_cli", "migrate"],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
    with sqlite3.connect(tmp_path / "control.db") as control:
        (control_head,) = control.execute(
            "SELECT version_num FROM alembic_version_control"
        ).fetchone()
    with sqlite3.connect(tmp_path / "audit.db") as audit:
        (audit_head,) = audit.execute("SELECT version_num FROM alembic_version_audit").fetchone()
    assert control_head.startswith("00") and audit_head.startswith("audit_")
