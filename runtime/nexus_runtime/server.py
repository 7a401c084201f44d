"""Runs an ASGI app with uvicorn: in the foreground (``serve``), or on a thread (demo, tests)."""

from __future__ import annotations

import threading
import time

import uvicorn
from fastapi import FastAPI

from nexus_contract.errors import NexusError
from nexus_runtime.logs import uvicorn_log_config
from nexus_runtime.tracing import active_provider

__all__ = ["STARTUP_TIMEOUT_S", "ServerError", "ServerThread", "instrument_app", "serve_forever"]

STARTUP_TIMEOUT_S = 30.0


def instrument_app(app: FastAPI) -> None:
    """A server span per request, child of the caller's ``traceparent``; no-op when off."""
    provider = active_provider()
    if provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)


class ServerError(NexusError):
    """The server did not come up."""


class ServerThread:
    """uvicorn serving ``app`` on a background thread until :meth:`stop`."""

    def __init__(self, app: FastAPI, host: str, port: int, *, log_level: str = "warning") -> None:
        self.host = host
        self.port = port
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level=log_level,
                access_log=False,
                timeout_keep_alive=75,
                lifespan="on",
            )
        )
        self._thread = threading.Thread(
            target=self._server.run, name=f"uvicorn-{port}", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ServerError(f"server on {self.url} did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(app: FastAPI, host: str, port: int) -> None:
    """Serve ``app`` in the foreground with JSON logs until interrupted (``nexus-policy serve``)."""
    uvicorn.run(app, host=host, port=port, log_config=uvicorn_log_config())
