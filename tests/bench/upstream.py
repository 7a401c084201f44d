"""A fast stand-in upstream for the latency benchmark: a raw asyncio HTTP/1.1 responder.

The data plane's stand-in (``nexus_dataplane.upstream``) is a
``ThreadingHTTPServer`` that echoes every header as JSON: right for tests,
but at a few thousand requests per second it is the bottleneck, and a
benchmark of Envoy would measure Python threads. This one parses just enough
HTTP/1.1 (request line, headers, Content-Length or chunked body), answers
every request with the same small JSON body, keeps connections alive, and
does nothing else. Both Envoys of the benchmark use the same one.

Run as ``python tests/bench/upstream.py --port N`` (binds 127.0.0.1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from nexus_dataplane.process import ManagedProcess, free_port
from nexus_dataplane.upstream import Upstream

BODY = b'{"id":"bench","object":"chat.completion","choices":[{"message":{"content":"ok"}}]}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)
MAX_BUFFER = 4 * 1024 * 1024
CHUNKED_END = b"\r\n0\r\n\r\n"


class _Responder(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        answered = 0
        while True:
            consumed = _request_length(self.buffer)
            if consumed is None:
                break
            del self.buffer[:consumed]
            answered += 1
        if answered:
            self.transport.write(RESPONSE * answered)
        if len(self.buffer) > MAX_BUFFER:
            self.transport.close()


def _request_length(buffer: bytearray) -> int | None:
    """Bytes of the first complete request in ``buffer``, or None if it is not complete."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).lower()
    start = end + 4
    marker = head.find(b"\r\ncontent-length:")
    if marker >= 0:
        line_end = head.find(b"\r\n", marker + 2)
        value = head[marker + 17 : line_end if line_end >= 0 else len(head)]
        length = int(value.strip() or b"0")
        return start + length if len(buffer) >= start + length else None
    if b"\r\ntransfer-encoding:" in head and b"chunked" in head:
        if buffer[start : start + 5] == b"0\r\n\r\n":
            return start + 5
        tail = buffer.find(CHUNKED_END, start)
        return tail + len(CHUNKED_END) if tail >= 0 else None
    return start


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Responder, host, port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


class FastUpstream(Upstream):
    """This responder in its own process, where the stack expects an ``Upstream``."""

    def __init__(self, workdir: Path, *, port: int | None = None, name: str = "upstream") -> None:
        self.port = port or free_port()
        argv = [sys.executable, str(Path(__file__).resolve()), "--port", str(self.port)]
        ManagedProcess.__init__(self, name, argv, workdir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
