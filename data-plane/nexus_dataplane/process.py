"""Starts, watches and stops the real server processes: OPA, Envoy, and friends.

Each process gets free loopback ports, its own working directory and a log
file; :meth:`ManagedProcess.stop` sends SIGTERM, waits, then SIGKILLs, so
nothing outlives the test or demo that started it.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import httpx

from nexus_contract.errors import NexusError

__all__ = [
    "READY_POLL_S",
    "STOP_GRACE_S",
    "ManagedProcess",
    "ProcessError",
    "free_port",
    "http_ok",
    "wait_for_port",
]

STOP_GRACE_S = 10.0
READY_POLL_S = 0.05


class ProcessError(NexusError):
    """A managed process failed to start or died; the message ends with its log's tail."""


LOWEST_PORT = 10_000
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
PORT_ATTEMPTS = 200
RECENT_PORTS = 4096
"""Ports this process handed out lately: never handed out again while remembered, since a
server given one may not have bound it yet (two callers drawing the same random port
before either binds was a real collision in the tests)."""
_handed_out: deque[int] = deque(maxlen=RECENT_PORTS)
_handed_lock = threading.Lock()


def _ephemeral_low() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now, for a server started soon after.

    Chosen at random *below* the kernel's ephemeral range: a port the kernel
    hands out (``bind(0)``) is also what it gives the next outgoing
    connection's local end, so between this call and the server's bind an
    unrelated connection could take it. Below the range only other servers
    compete, and the random choice keeps parallel test runs apart.
    """
    upper = _ephemeral_low()
    rng = random.SystemRandom()
    with _handed_lock:
        for _ in range(PORT_ATTEMPTS):
            port = rng.randrange(LOWEST_PORT, upper)
            if port in _handed_out:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
            _handed_out.append(port)
            return port
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        _handed_out.append(port)
        return port


def wait_for_port(host: str, port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(READY_POLL_S)
    return False


class ManagedProcess:
    """One child process with a log file, started with :meth:`start`."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        workdir: Path,
        *,
        env: dict[str, str] | None = None,
        preexec: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.workdir = workdir.resolve()
        self.env = env
        self.preexec = preexec
        self.log_path = workdir / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                self.argv,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                preexec_fn=self.preexec,
                start_new_session=True,
            )
        except OSError as exc:
            raise ProcessError(f"{self.name}: cannot start {self.argv[0]}: {exc.strerror}") from exc
        finally:
            log.close()

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait_ready(self, probe: Callable[[], bool], timeout_s: float) -> None:
        """Poll ``probe`` until true; ProcessError if the process dies or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise ProcessError(
                    f"{self.name} exited with {self.returncode()}\n{self.log_tail()}"
                )
            with contextlib.suppress(Exception):
                if probe():
                    return
            time.sleep(READY_POLL_S)
        raise ProcessError(f"{self.name} not ready after {timeout_s:.0f} s\n{self.log_tail()}")

    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def signal(self, sig: int) -> None:
        if self._proc and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, sig)

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the process group, wait up to ``grace_s``, then SIGKILL."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self._proc.wait(timeout=grace_s)

    def kill(self) -> None:
        """SIGKILL at once: a crash, not a shutdown."""
        if self._proc and self._proc.poll() is None:
            self.signal(signal.SIGKILL)
            self._proc.wait(timeout=STOP_GRACE_S)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> ManagedProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout_s).status_code == httpx.codes.OK
    except httpx.HTTPError:
        return False
