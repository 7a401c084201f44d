"""Throwaway PostgreSQL and Redis servers for tests, on free loopback ports.

PostgreSQL refuses to run as root, so when the tests run as root the server
runs as the ``postgres`` user (setpriv keeps the postmaster's PID as ours to
stop). Each server's data lives in a temporary directory removed afterwards.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from nexus_dataplane.process import ManagedProcess, free_port, wait_for_port
from nexus_runtime.toolchain import find_postgres_bin, find_redis_server

START_TIMEOUT_S = 60.0


def _as_postgres(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", *argv]


class PostgresServer:
    """initdb + postgres on a free port; ``url`` is a SQLAlchemy psycopg URL."""

    def __init__(self) -> None:
        self.bin = find_postgres_bin()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="nexus-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://nexus@127.0.0.1:{self.port}/nexus"

    def start(self) -> None:
        self.socket_dir.mkdir()
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            for path in (self.root, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            _as_postgres(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "nexus",
                    "--auth=trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT_S,
        )
        self.process = ManagedProcess(
            "postgres",
            _as_postgres(
                [
                    str(self.bin / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.socket_dir),
                    "-h",
                    "127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=200",
                ]
            ),
            self.root / "logs",
        )
        self.process.start()
        if not wait_for_port("127.0.0.1", self.port, START_TIMEOUT_S):
            raise RuntimeError(f"postgres did not start\n{self.process.log_tail()}")
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            out = subprocess.run(
                [
                    str(self.bin / "createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    "nexus",
                    "nexus",
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            if out.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"createdb failed: {out.stderr}")
            time.sleep(0.2)

    def psql(self, sql: str, *, database: str = "nexus") -> str:
        """Run ``sql`` with the psql client (in ``database``); stdout, unaligned."""
        out = subprocess.run(
            [
                str(self.bin / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "nexus",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return out.stdout

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class RedisServer:
    """redis-server on a free port, no persistence."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="nexus-redis-"))
        self.process = ManagedProcess(
            "redis",
            [
                str(find_redis_server()),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
            ],
            self.root,
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process.start()
        if not wait_for_port("127.0.0.1", self.port, START_TIMEOUT_S):
            raise RuntimeError(f"redis did not start\n{self.process.log_tail()}")

    def stop(self) -> None:
        self.process.stop()
        shutil.rmtree(self.root, ignore_errors=True)
