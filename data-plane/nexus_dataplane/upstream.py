"""A small HTTP server that stands in for the LLM gateway behind Envoy.

It answers every request with 200 and a JSON echo of what reached it: the
method, the path and the headers, so tests can see what Envoy forwarded
(the routed model, the decision id, that the credential was removed).
Like an LLM that writes every token it may, it reports a chat request's
``max_tokens`` as the tokens it used (``x-nexus-usage-tokens``), which is what
settles a tokens-per-minute bucket.
With ``--otlp-endpoint`` each request is a server span, child of the
``traceparent`` Envoy forwarded, carrying the decision id it was given.
With ``--status`` it answers that status instead of 200 (a failing provider,
for outlier detection to eject); every answer names the port that served it
(``x-upstream-port``), so a test sees which endpoint Envoy picked. With
``--delay-s`` it answers that much later (a slow provider, whose requests pile up
against Envoy's circuit breakers).
Run as ``python -m nexus_dataplane.upstream --port N [--status S] [--delay-s D]
[--otlp-endpoint URL]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from nexus_contract.wire import DECISION_ID_HEADER, USAGE_TOKENS_HEADER
from nexus_dataplane.process import ManagedProcess, ProcessError, free_port, wait_for_port
from nexus_runtime.tracing import TracingSettings, configure_tracing

__all__ = ["MAX_BODY_BYTES", "UPSTREAM_PORT_HEADER", "Upstream", "main", "serve"]

MAX_BODY_BYTES = 1024 * 1024
UPSTREAM_PORT_HEADER = "x-upstream-port"


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nexus-upstream/1"
    # Headers and body go out in separate writes; with Nagle's algorithm on,
    # the body waits for the peer's delayed ACK (~40 ms per response).
    disable_nagle_algorithm = True

    tracing = False
    status = 200
    delay_s = 0.0

    def _span(self) -> AbstractContextManager[Any]:
        if not self.tracing:
            return nullcontext()
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        parent = TraceContextTextMapPropagator().extract(
            {k.lower(): v for k, v in self.headers.items()}
        )
        return trace.get_tracer(__name__).start_as_current_span(
            f"upstream {self.command}",
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes={
                "http.request.method": self.command,
                "url.path": self.path.split("?", 1)[0],
                "nexus.decision_id": self.headers.get(DECISION_ID_HEADER) or "",
            },
        )

    def _answer(self) -> None:
        with self._span():
            self._echo()

    def _echo(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if 0 < length <= MAX_BODY_BYTES else b""
        used = _max_tokens(raw)
        if self.delay_s:
            time.sleep(self.delay_s)
        body = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
            }
        ).encode()
        self.send_response(self.status)
        self.send_header("content-type", "application/json")
        self.send_header(UPSTREAM_PORT_HEADER, str(self.connection.getsockname()[1]))
        self.send_header("content-length", str(len(body)))
        if used is not None:
            self.send_header(USAGE_TOKENS_HEADER, str(used))
        self.end_headers()
        self.wfile.write(body)

    # http.server dispatches on these names.
    do_GET = _answer  # noqa: N815
    do_POST = _answer  # noqa: N815
    do_DELETE = _answer  # noqa: N815
    do_PUT = _answer  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:
        return


def _max_tokens(raw: bytes) -> int | None:
    try:
        value = json.loads(raw).get("max_tokens") if raw else None
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and value >= 0 else None


def serve(
    host: str, port: int, *, otlp_endpoint: str | None = None, status: int = 200,
    delay_s: float = 0.0,
) -> None:  # fmt: skip
    _Echo.status = status
    _Echo.delay_s = delay_s
    _Echo.tracing = configure_tracing(
        "nexus-upstream", TracingSettings(otlp_endpoint=otlp_endpoint)
    )
    server = ThreadingHTTPServer((host, port), _Echo)
    server.daemon_threads = True
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--otlp-endpoint", help="OTLP/HTTP collector base URL: trace requests")
    parser.add_argument("--status", type=int, default=200, help="The status every answer has")
    parser.add_argument("--delay-s", type=float, default=0.0, help="Seconds before each answer")
    args = parser.parse_args()
    serve(
        args.host,
        args.port,
        otlp_endpoint=args.otlp_endpoint,
        status=args.status,
        delay_s=args.delay_s,
    )


class Upstream(ManagedProcess):
    """The stand-in LLM gateway (nexus_dataplane.upstream) in its own process."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        name: str = "upstream",
        otlp_endpoint: str | None = None,
        status: int = 200,
        delay_s: float = 0.0,
    ) -> None:
        self.port = port or free_port()
        argv = [sys.executable, "-m", "nexus_dataplane.upstream", "--port", str(self.port)]
        if otlp_endpoint:
            argv += ["--otlp-endpoint", otlp_endpoint]
        if status != 200:
            argv += ["--status", str(status)]
        if delay_s:
            argv += ["--delay-s", str(delay_s)]
        super().__init__(name, argv, workdir)

    def start_and_wait(self, timeout_s: float = 15.0) -> None:
        self.start()
        if not wait_for_port("127.0.0.1", self.port, timeout_s):
            raise ProcessError(f"upstream did not listen on {self.port}\n{self.log_tail()}")


if __name__ == "__main__":
    main()
