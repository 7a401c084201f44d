"""Real OPA (and, later, Envoy) processes for one enforcer, started on free ports."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from nexus_dataplane.process import ManagedProcess, free_port, http_ok

OPA_READY_TIMEOUT_S = 30.0


class OpaServer(ManagedProcess):
    """``opa run --server`` on a free loopback port, with an optional config file."""

    def __init__(
        self,
        opa_bin: Path,
        workdir: Path,
        *,
        config: dict[str, Any] | None = None,
        args: Sequence[str] = (),
        name: str = "opa",
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.config_path = workdir / f"{name}-config.yaml"
        argv = [
            str(opa_bin), "run", "--server",
            "--addr", f"127.0.0.1:{self.port}",
            "--log-format", "json", "--log-level", "info",
        ]
        if config is not None:
            argv += ["--config-file", str(self.config_path)]
        argv += list(args)
        super().__init__(name, argv, workdir)
        self.config = config

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.config is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        super().start()

    def start_and_wait(self, *, bundles: bool = True, timeout_s: float = OPA_READY_TIMEOUT_S) -> None:
        """Start, then wait for /health (with ?bundles when ``bundles``: all activated)."""
        self.start()
        query = "?bundles" if bundles else ""
        self.wait_ready(lambda: http_ok(f"{self.url}/health{query}"), timeout_s)
