"""A FastAPI app hosting the audit router with a test ``require``, as the control plane would."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from nexus_audit.api import create_router, error_body
from nexus_audit.service import AuditLog


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    region: str | None = None
    enforcer_id: str | None = None


TOKENS = {
    "enforcer-token": Principal("enforcer eu-west-1-a", "enforcer", "eu-west-1", "eu-west-1-a"),
    "region-token": Principal("enforcers eu-west-1", "enforcer", "eu-west-1"),
    "compliance-token": Principal("dpo@nexus.example", "compliance"),
    "operator-token": Principal("sre@nexus.example", "operator"),
    "author-token": Principal("author@nexus.example", "author"),
}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def require(*roles: str) -> Callable[[Request], Awaitable[Principal]]:
    allowed = frozenset(roles)

    async def dependency(request: Request) -> Principal:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        principal = TOKENS.get(token)
        if principal is None:
            raise HTTPException(401, "unknown or missing token")
        if principal.role not in allowed:
            raise HTTPException(403, f"role {principal.role} may not do this")
        return principal

    return dependency


def create_app(log: AuditLog) -> FastAPI:
    app = FastAPI()
    app.include_router(create_router(log, require))

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        code = {401: "unauthenticated", 403: "forbidden"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code)

    return app
