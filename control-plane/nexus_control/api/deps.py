"""Authentication, authorisation and body limits shared by every router."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from nexus_control.api.errors import ApiError
from nexus_control.service import ControlPlane
from nexus_control.tokens import Principal, Role, authenticate

_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")
MAX_ENFORCER_ID = 128


def control_plane(request: Request) -> ControlPlane:
    plane: ControlPlane = request.app.state.control_plane
    return plane


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthenticated", "a bearer token is required")
    return token.strip()


def require(*roles: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency that authenticates the caller and checks its role is one of ``roles``."""
    allowed = frozenset(roles)

    async def dependency(request: Request) -> Principal:
        token = _bearer(request)
        plane = control_plane(request)
        with plane.db.session() as session:
            principal = authenticate(session, token)
        if principal is None:
            raise ApiError(401, "unauthenticated", "unknown or revoked token")
        if principal.role not in allowed:
            names = ", ".join(sorted(r.value for r in allowed))
            raise ApiError(
                403, "forbidden", f"role {principal.role.value} may not do this ({names} may)"
            )
        request.state.principal = principal
        return principal

    dependency.__name__ = "require_" + "_or_".join(sorted(r.value for r in allowed))
    dependency.roles = allowed  # type: ignore[attr-defined]
    return dependency


def route_roles(dependant: Any) -> frozenset[Role] | None:
    """The roles a route's ``require`` dependency admits (None: the route has none)."""
    for sub in dependant.dependencies:
        roles = getattr(sub.call, "roles", None)
        if roles is not None:
            return frozenset(roles)
        nested = route_roles(sub)
        if nested is not None:
            return nested
    return None


def enforcer_identity(request: Request, principal: Principal, region: str | None) -> str:
    """The calling enforcer's id (header ``x-nexus-enforcer``), checked against its token."""
    enforcer_id = request.headers.get("x-nexus-enforcer", "")
    if not enforcer_id or len(enforcer_id) > MAX_ENFORCER_ID or not set(enforcer_id) <= _ID_CHARS:
        raise ApiError(400, "invalid_enforcer", "header x-nexus-enforcer must be a lower-case id")
    if principal.enforcer_id is not None and principal.enforcer_id != enforcer_id:
        raise ApiError(403, "forbidden", "this token belongs to another enforcer")
    if region is not None and principal.region != region:
        raise ApiError(403, "forbidden", f"this token is not valid for region {region}")
    return enforcer_id


async def read_body(request: Request, limit: int, *, allow_gzip: bool = False) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (after decompression too)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"body is larger than {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"body is larger than {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if allow_gzip and request.headers.get("content-encoding", "").lower() == "gzip":
        body = gunzip_limited(body, limit)
    return body


Model = TypeVar("Model", bound=BaseModel)


def parse_body(model: type[Model], body: bytes, code: str) -> Model:
    """Validate a JSON body; a 400 names the first field at fault and why."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise ApiError(400, code, f"{where}: {first['msg']}") from None


def gunzip_limited(data: bytes, limit: int) -> bytes:
    """Decompress gzip, refusing (413) output past ``limit`` and (400) anything malformed."""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(data, limit + 1)
        if len(out) > limit or decompressor.unconsumed_tail:
            raise ApiError(413, "too_large", f"decompressed body is larger than {limit} bytes")
        if not decompressor.eof:
            raise ApiError(400, "invalid_gzip", "gzip stream is truncated")
    except (zlib.error, gzip.BadGzipFile) as exc:
        raise ApiError(400, "invalid_gzip", f"body is not valid gzip: {exc}") from None
    return out
