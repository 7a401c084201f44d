"""The audit service's own app with a test ``authorize``, as the control plane would provide."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI, Request

from nexus_audit.api import create_audit_app
from nexus_audit.service import AuditLog
from nexus_runtime.http import ApiError


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
    "compliance-2-token": Principal("second-dpo@nexus.example", "compliance"),
    "operator-token": Principal("sre@nexus.example", "operator"),
    "author-token": Principal("author@nexus.example", "author"),
}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def authorize(request: Request, roles: frozenset[str]) -> Principal:
    token = request.headers.get("authorization", "").removeprefix("Bearer ")
    principal = TOKENS.get(token)
    if principal is None:
        raise ApiError(401, "unauthenticated", "unknown or missing token")
    if principal.role not in roles:
        raise ApiError(403, "forbidden", f"role {principal.role} may not do this")
    return principal


async def authenticate(token: str) -> Principal | None:
    return TOKENS.get(token)


def create_app(log: AuditLog) -> FastAPI:
    return create_audit_app(log, authorize, authenticate)
