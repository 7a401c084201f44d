"""HTTP plumbing every NexusAI API shares: one error body, bounded request bodies.

Every failure answers ``{"error": {"code", "message"}}`` (`ErrorBody`): routers
raise `ApiError`, and the handlers `install_error_handlers` adds turn it, a
validation error or Starlette's own 404/405 into that body. A body is read with
`read_body`, which refuses (413) anything past its limit while it streams, and
with ``allow_gzip`` past the limit once decompressed too.
"""

from __future__ import annotations

import zlib
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from nexus_contract.errors import NexusError

__all__ = [
    "ERROR_RESPONSES",
    "ApiError",
    "ErrorBody",
    "ErrorDetail",
    "ErrorTable",
    "error_response",
    "gunzip_limited",
    "install_domain_errors",
    "install_error_handlers",
    "parse_body",
    "read_body",
]

MAX_VALIDATION_PROBLEMS = 20


class ErrorDetail(BaseModel):
    code: str
    """A stable, machine-readable code (``invalid_request``, ``not_found``, …)."""
    message: str
    """What went wrong and, where it helps, what to send instead."""


class ErrorBody(BaseModel):
    """The body of every 4xx and 5xx answer."""

    error: ErrorDetail


class ApiError(Exception):
    """Raised by a router; becomes ``status`` with the uniform error body."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(code=code, message=message))
    return JSONResponse(body.model_dump(), status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` with `ErrorBody`."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status == 401:
            headers.setdefault("www-authenticate", "Bearer")
        return error_response(exc.status, exc.code, exc.message, headers or None)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:MAX_VALIDATION_PROBLEMS]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where or 'body'}: {err.get('msg')}")
        return error_response(400, "invalid_request", "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))


async def read_body(request: Request, limit: int, *, allow_gzip: bool = False) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (after decompression too)."""
    too_large = ApiError(413, "too_large", f"the body is larger than {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:
        # The client left, or the admission middleware already answered 413.
        raise ApiError(400, "disconnected", "the client closed the request mid-body") from None
    body = b"".join(chunks)
    if allow_gzip and request.headers.get("content-encoding", "").lower() == "gzip":
        body = gunzip_limited(body, limit)
    return body


def gunzip_limited(data: bytes, limit: int) -> bytes:
    """Decompress one gzip member, refusing (413) output past ``limit`` and (400) malformed input.

    Trailing bytes after the member (a second member, junk) are refused: what
    was signed or counted must be all there is.
    """
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(data, limit + 1)
    except zlib.error as exc:
        raise ApiError(400, "invalid_gzip", f"the body is not valid gzip: {exc}") from None
    if len(out) > limit or decompressor.unconsumed_tail:
        raise ApiError(413, "too_large", f"the decompressed body is larger than {limit} bytes")
    if not decompressor.eof:
        raise ApiError(400, "invalid_gzip", "the gzip stream is truncated")
    if decompressor.unused_data:
        raise ApiError(400, "invalid_gzip", "bytes follow the gzip stream")
    return out


Model = TypeVar("Model", bound=BaseModel)


def parse_body(model: type[Model], body: bytes, code: str = "invalid_request") -> Model:
    """Validate a JSON body; a 400 names the first field at fault and why."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise ApiError(400, code, f"{where}: {first['msg']}") from None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "Malformed request"),
        (401, "No or unknown bearer token"),
        (403, "The token's role may not do this"),
        (404, "Not found"),
        (409, "Conflicts with the current state"),
        (413, "Body too large"),
        (422, "Well-formed but refused"),
    )
}
"""OpenAPI ``responses`` for the error statuses, so the document describes every answer."""


ErrorTable = dict[type[NexusError], tuple[int, str | None]]
"""Error class → (HTTP status, error code); a code of None uses the error's own ``code``."""


def install_domain_errors(app: FastAPI, table: ErrorTable) -> None:
    """Answer every `NexusError` raised in ``app`` by its entry in ``table`` (else 500).

    The most specific class listed wins: the error's MRO is walked in order.
    """

    @app.exception_handler(NexusError)
    async def _domain(_: Request, exc: NexusError) -> JSONResponse:
        for cls in type(exc).__mro__:
            if cls in table:
                status, code = table[cls]
                own = getattr(exc, "code", None)
                resolved = code or (own if isinstance(own, str) else "error")
                return error_response(status, resolved, getattr(exc, "message", str(exc)))
        return error_response(500, "internal", f"{type(exc).__name__}: {exc}")
