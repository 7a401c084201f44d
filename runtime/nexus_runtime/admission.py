"""What a request must show before the server reads a byte of its body.

`Admission` is a pure ASGI middleware every NexusAI API installs, so the rule
holds server-wide and not route by route:

- A request with a body needs a bearer token that authenticates, checked
  from the headers alone; without one it is answered 401 and its body is never
  read (``connection: close``, so the server does not drain it either). Paths
  under ``open_prefixes`` (the console's forms, which carry a session cookie
  instead) are admitted without a token, with a small body limit.
- A body larger than the limit is refused with 413: at once when its
  ``content-length`` says so, and while it streams otherwise (chunked bodies,
  lying lengths). The limit is enforced on the bytes the application
  receives, before anything can buffer them.
- At most ``max_large_uploads`` large bodies stream at once; the next one is
  answered 503 with ``retry-after``, so a burst of big uploads costs bounded
  memory even with valid tokens.

The principal the authenticator returns is left in ``scope["state"]`` under
`PRINCIPAL_STATE_KEY`, so a route's own authorisation need not look the token
up a second time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "ANONYMOUS_BODY_BYTES",
    "LARGE_BODY_BYTES",
    "MAX_BODY_BYTES",
    "MAX_LARGE_UPLOADS",
    "PRINCIPAL_STATE_KEY",
    "RETRY_AFTER_S",
    "Admission",
    "AdmissionLimits",
    "Authenticator",
]

MAX_BODY_BYTES = 65 * 1024 * 1024
"""The largest body any route takes (a 64 MiB sources archive) plus headroom for framing."""
ANONYMOUS_BODY_BYTES = 64 * 1024
"""The largest body admitted without a bearer token (the console's forms)."""
LARGE_BODY_BYTES = 1024 * 1024
"""A body above this size (or of unknown size) counts against `MAX_LARGE_UPLOADS`."""
MAX_LARGE_UPLOADS = 4
"""Large bodies streaming at once; the next one is answered 503."""
RETRY_AFTER_S = 2
PRINCIPAL_STATE_KEY = "authenticated_principal"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Authenticator = Callable[[str], Awaitable[object | None]]
"""A bearer token → its principal, or None when the token is unknown or revoked."""


@dataclass(frozen=True)
class AdmissionLimits:
    max_body_bytes: int = MAX_BODY_BYTES
    anonymous_body_bytes: int = ANONYMOUS_BODY_BYTES
    large_body_bytes: int = LARGE_BODY_BYTES
    max_large_uploads: int = MAX_LARGE_UPLOADS
    retry_after_s: int = RETRY_AFTER_S


class Admission:
    """The ASGI middleware; ``authenticate`` decides whether a bearer token is live."""

    def __init__(
        self,
        app: ASGIApp,
        authenticate: Authenticator,
        *,
        open_prefixes: tuple[str, ...] = (),
        limits: AdmissionLimits = AdmissionLimits(),
    ) -> None:
        self.app = app
        self.authenticate = authenticate
        self.open_prefixes = open_prefixes
        self.limits = limits
        self._large_in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        declared = _declared_length(headers)
        if declared is None and "transfer-encoding" not in headers:
            declared = 0
        if declared == -1:
            await _refuse(send, 400, "invalid_length", "content-length is not a byte count")
            return
        if declared == 0:
            await self.app(scope, receive, send)
            return
        limit = await self._admit(scope, headers, send)
        if limit is None:
            return
        if declared is not None and declared > limit:
            await _refuse(send, 413, "too_large", f"the body is larger than {limit} bytes")
            return
        large = declared is None or declared > self.limits.large_body_bytes
        if large and self._large_in_flight >= self.limits.max_large_uploads:
            await _refuse(
                send,
                503,
                "busy",
                f"{self.limits.max_large_uploads} large uploads are in progress; retry later",
                retry_after=self.limits.retry_after_s,
            )
            return
        if large:
            self._large_in_flight += 1
        try:
            await _Bounded(self.app, limit).run(scope, receive, send)
        finally:
            if large:
                self._large_in_flight -= 1

    async def _admit(self, scope: Scope, headers: dict[str, str], send: Send) -> int | None:
        """The body limit for this caller, or None once it has been refused."""
        token = _bearer(headers.get("authorization", ""))
        if token is None:
            path: str = scope.get("path", "")
            if any(path.startswith(prefix) for prefix in self.open_prefixes):
                return self.limits.anonymous_body_bytes
            await _refuse(send, 401, "unauthenticated", "a bearer token is required")
            return None
        principal = await self.authenticate(token)
        if principal is None:
            await _refuse(send, 401, "unauthenticated", "unknown or revoked token")
            return None
        scope.setdefault("state", {})[PRINCIPAL_STATE_KEY] = principal
        return self.limits.max_body_bytes


class _Bounded:
    """One request whose body may not pass ``limit`` bytes as it streams.

    Past the limit the client is answered 413 at once, the application is
    told the client went away, and whatever it sends afterwards is dropped.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.received = 0
        self.started = False
        self.refused = False

    async def run(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def bounded_receive() -> Message:
            if self.refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                if self.received > self.limit:
                    self.refused = True
                    if not self.started:
                        self.started = True
                        await _refuse(
                            send, 413, "too_large", f"the body is larger than {self.limit} bytes"
                        )
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if self.refused:
                return
            if message["type"] == "http.response.start":
                self.started = True
            await send(message)

        try:
            await self.app(scope, bounded_receive, guarded_send)
        except Exception:
            if not self.refused:
                raise


def _headers(scope: Scope) -> dict[str, str]:
    return {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in scope.get("headers", ())
    }


def _declared_length(headers: dict[str, str]) -> int | None:
    """The content-length (None: absent, -1: not a non-negative integer)."""
    value = headers.get("content-length")
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isdigit() and len(value) <= 20 else -1


def _bearer(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def _refuse(
    send: Send, status: int, code: str, message: str, *, retry_after: int | None = None
) -> None:
    """Answer with the uniform error body and close the connection (the body stays unread)."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
