"""The admission middleware, driven as ASGI: what it answers before the app reads a body."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import orjson

from nexus_runtime.admission import PRINCIPAL_STATE_KEY, Admission, AdmissionLimits

Message = MutableMapping[str, Any]
LIMITS = AdmissionLimits(
    max_body_bytes=1000, anonymous_body_bytes=10, large_body_bytes=100, max_large_uploads=1
)


class App:
    """Reads the whole body, answers 200 with its length; ``gate`` holds it mid-request."""

    def __init__(self) -> None:
        self.reads = 0
        self.gate: asyncio.Event | None = None
        self.principal: object = None

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        self.principal = scope.get("state", {}).get(PRINCIPAL_STATE_KEY)
        if self.gate is not None:
            await self.gate.wait()
        size = 0
        while True:
            message = await receive()
            self.reads += 1
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(size).encode()})


async def authenticate(token: str) -> object | None:
    return {"who": "alice"} if token == "good" else None


def _scope(path: str, headers: dict[str, str]) -> Message:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }


async def _call(
    middleware: Admission, path: str, headers: dict[str, str], chunks: list[bytes]
) -> tuple[int, dict[str, str], bytes]:
    pending = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await middleware(_scope(path, headers), receive, send)
    start = sent[0]
    answer = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], answer, b"".join(m.get("body", b"") for m in sent[1:])


def test_a_body_without_a_token_is_refused_unread() -> None:
    app = App()
    middleware = Admission(app, authenticate, limits=LIMITS)
    status, headers, body = asyncio.run(
        _call(middleware, "/v1/usage", {"content-length": "5"}, [b"{bad}"])
    )
    assert status == 401
    assert app.reads == 0
    assert headers["connection"] == "close"
    assert orjson.loads(body)["error"]["code"] == "unauthenticated"


def test_an_unknown_token_is_refused_unread_and_a_good_one_is_handed_on() -> None:
    app = App()
    middleware = Admission(app, authenticate, limits=LIMITS)
    bad = {"content-length": "2", "authorization": "Bearer bad"}
    assert asyncio.run(_call(middleware, "/x", bad, [b"{}"]))[0] == 401
    assert app.reads == 0
    good = {"content-length": "2", "authorization": "Bearer good"}
    assert asyncio.run(_call(middleware, "/x", good, [b"{}"]))[:1] == (200,)
    assert app.principal == {"who": "alice"}


def test_a_declared_length_past_the_limit_is_413_before_reading() -> None:
    app = App()
    middleware = Admission(app, authenticate, limits=LIMITS)
    headers = {"content-length": "5000", "authorization": "Bearer good"}
    status, _, _ = asyncio.run(_call(middleware, "/x", headers, [b"x"]))
    assert status == 413
    assert app.reads == 0


def test_a_chunked_body_is_cut_at_the_limit_while_it_streams() -> None:
    app = App()
    middleware = Admission(app, authenticate, limits=LIMITS)
    headers = {"transfer-encoding": "chunked", "authorization": "Bearer good"}
    status, _, body = asyncio.run(_call(middleware, "/x", headers, [b"x" * 600] * 5))
    assert status == 413
    assert b"too_large" in body
    assert app.reads == 2, "the app saw the first chunk and then a disconnect, nothing more"


def test_open_paths_take_a_small_body_without_a_token() -> None:
    middleware = Admission(App(), authenticate, open_prefixes=("/console",), limits=LIMITS)
    small = asyncio.run(_call(middleware, "/console/login", {"content-length": "3"}, [b"a=b"]))
    assert small[0] == 200
    big = asyncio.run(_call(middleware, "/console/login", {"content-length": "11"}, [b"x" * 11]))
    assert big[0] == 413


def test_a_lying_content_length_is_400() -> None:
    middleware = Admission(App(), authenticate, limits=LIMITS)
    headers = {"content-length": "-1", "authorization": "Bearer good"}
    assert asyncio.run(_call(middleware, "/x", headers, [b""]))[0] == 400


def test_large_uploads_past_the_cap_get_503_with_retry_after() -> None:
    async def scenario() -> tuple[int, dict[str, str], int]:
        app = App()
        app.gate = asyncio.Event()
        middleware = Admission(app, authenticate, limits=LIMITS)
        headers = {"content-length": "500", "authorization": "Bearer good"}
        first = asyncio.create_task(_call(middleware, "/x", headers, [b"x" * 500]))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        status, answer, _ = await _call(middleware, "/x", headers, [b"x" * 500])
        app.gate.set()
        done = await first
        return status, answer, done[0]

    status, headers, first_status = asyncio.run(scenario())
    assert status == 503
    assert headers["retry-after"] == "2"
    assert first_status == 200
