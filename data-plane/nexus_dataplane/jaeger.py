"""A real Jaeger v2 (tools/jaeger, built by ``scripts/tool jaeger``) on loopback ports: the
trace store of the tests, the benchmarks and, when it is already built, the demo.

Every port it opens, the OTLP receivers and both query ports, is bound to
127.0.0.1 and chosen free; its own telemetry (metrics, self-tracing) is off,
so it opens nothing else. Traces live in memory and die with the process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

from nexus_dataplane.process import ManagedProcess, free_port, http_ok
from nexus_dataplane.spec import TracingSpec

__all__ = ["Jaeger", "jaeger_binary", "linked_jaeger"]

REPO = Path(__file__).resolve().parents[2]
"""The clone this package runs from (scripts/tool builds Jaeger there on demand)."""
READY_TIMEOUT_S = 30.0
BUILD_TIMEOUT_S = 3600
STORE = "memstore"


def linked_jaeger() -> Path | None:
    """The pinned Jaeger if scripts/bootstrap linked it into the venv (already built)."""
    linked = Path(sys.executable).with_name("jaeger")
    return linked.resolve() if linked.exists() else None


def jaeger_binary() -> Path:
    """The pinned Jaeger: the venv's link (scripts/bootstrap), else built by scripts/tool."""
    linked = linked_jaeger()
    if linked is not None:
        return linked
    out = subprocess.run(
        [str(REPO / "scripts" / "tool"), "jaeger"], capture_output=True, text=True,
        timeout=BUILD_TIMEOUT_S, check=True,
    )  # fmt: skip
    return Path(out.stdout.strip().splitlines()[-1])


def _config(grpc_port: int, http_port: int, query_port: int, query_grpc_port: int) -> Any:
    loopback = "127.0.0.1"
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["jaeger_storage_exporter"],
                }
            },
            "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "warn"}},
        },
        "extensions": {
            "jaeger_query": {
                "storage": {"traces": STORE},
                "enable_tracing": False,
                "http": {"endpoint": f"{loopback}:{query_port}"},
                "grpc": {"endpoint": f"{loopback}:{query_grpc_port}"},
            },
            "jaeger_storage": {"backends": {STORE: {"memory": {"max_traces": 10000}}}},
        },
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"{loopback}:{grpc_port}"},
                    "http": {"endpoint": f"{loopback}:{http_port}"},
                }
            }
        },
        "processors": {"batch": {"timeout": "200ms"}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": STORE}},
    }


class Jaeger(ManagedProcess):
    """Jaeger with OTLP gRPC + HTTP receivers and the query API, all on loopback."""

    def __init__(self, workdir: Path, binary: Path | None = None) -> None:
        workdir = workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        self.grpc_port, self.http_port = free_port(), free_port()
        self.query_port, self.query_grpc_port = free_port(), free_port()
        config = workdir / "jaeger.yaml"
        config.write_text(
            yaml.safe_dump(
                _config(self.grpc_port, self.http_port, self.query_port, self.query_grpc_port)
            )
        )
        command = [str(binary or jaeger_binary()), "--config", str(config)]
        super().__init__("jaeger", command, workdir)

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.query_port}"

    def tracing(self, sample_percent: float = 100.0) -> TracingSpec:
        return TracingSpec("127.0.0.1", self.grpc_port, self.http_port, sample_percent)

    def start_and_wait(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        self.start()
        self.wait_ready(lambda: http_ok(f"{self.query_url}/api/services"), timeout_s)

    def trace(self, trace_id: str) -> dict[str, Any]:
        """The trace as Jaeger's query API returns it (``data[0]``); KeyError while unknown."""
        response = httpx.get(f"{self.query_url}/api/traces/{trace_id}", timeout=5)
        if response.status_code == 404:
            raise KeyError(trace_id)
        response.raise_for_status()
        data: list[dict[str, Any]] = response.json()["data"]
        if not data:
            raise KeyError(trace_id)
        return data[0]

    def services(self) -> list[str]:
        response = httpx.get(f"{self.query_url}/api/services", timeout=5)
        response.raise_for_status()
        return list(response.json()["data"] or [])

    def operations(self, service: str) -> list[str]:
        response = httpx.get(f"{self.query_url}/api/services/{service}/operations", timeout=5)
        response.raise_for_status()
        return list(response.json()["data"] or [])
