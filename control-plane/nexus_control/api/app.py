"""Builds the control plane's FastAPI application."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from nexus_audit.api import create_router as create_audit_router
from nexus_audit.service import AuditLog
from nexus_control import __version__
from nexus_control.api import (
    approvals,
    bundles,
    errors,
    events,
    fleet,
    metrics,
    opa_protocol,
    rollouts,
    usage,
)
from nexus_control.api.deps import require, route_roles
from nexus_control.db import Database
from nexus_control.opa import Opa
from nexus_control.service import ControlPlane
from nexus_control.settings import ControlSettings
from nexus_control.spend import SpendStore, make_spend_store
from nexus_control.tokens import Role
from nexus_control.toolchain import find_opa


def create_control_plane(
    settings: ControlSettings, *, spend: SpendStore | None = None, opa: Opa | None = None
) -> ControlPlane:
    if settings.database_url.startswith("sqlite:///"):
        Path(settings.database_url.removeprefix("sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True
        )
    db = Database(settings.database_url)
    db.migrate()
    return ControlPlane(
        settings,
        db,
        opa or Opa(find_opa(settings)),
        spend or make_spend_store(settings.redis_url),
    )


ROUTERS = (opa_protocol, usage, bundles, rollouts, approvals, fleet, events, metrics)


def _document_roles(app: FastAPI, routers: list[APIRouter]) -> None:
    """Put each route's bearer requirement and admitted roles into the OpenAPI document."""
    roles_by_operation: dict[tuple[str, str], list[str]] = {}
    for router in routers:
        for route in router.routes:
            if isinstance(route, APIRoute) and route.include_in_schema:
                roles = sorted(r.value for r in route_roles(route.dependant) or ())
                for method in route.methods or ():
                    roles_by_operation[(route.path_format, method.lower())] = roles

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"}
        }
        for (path, method), roles in roles_by_operation.items():
            operation = schema["paths"][path][method]
            operation["security"] = [{"bearer": []}]
            operation["x-nexus-roles"] = roles
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _audit_require(*roles: str) -> Any:
    """The audit router names roles as strings; the control plane's tokens decide."""
    return require(*(Role(role) for role in roles))


def create_app(plane: ControlPlane, audit: AuditLog | None = None) -> FastAPI:
    """The control plane's API; with ``audit``, the audit service's routes too.

    With a co-located audit log, control-plane events drain from the outbox
    into it, and enforcers ship decision logs to the same base URL.
    """

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        plane.notifier.bind(asyncio.get_running_loop())
        plane.mark_state_dirty()
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(plane.state_loop(stop)),
            asyncio.create_task(plane.rollout_loop(stop)),
        ]
        if audit is not None:
            audit.start()
            tasks.append(asyncio.create_task(plane.outbox_loop(stop, audit)))
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            if audit is not None:
                audit.stop()

    app = FastAPI(
        title="NexusAI policy control plane",
        version=__version__,
        description=(
            "Bundle registry and server (OPA bundle protocol), enforcer status, "
            "live budgets. Every route needs a bearer token of the role it names."
        ),
        lifespan=lifespan,
    )
    app.state.control_plane = plane
    errors.install(app)
    routers = [module.router for module in ROUTERS]
    if audit is not None:
        routers.append(create_audit_router(audit, _audit_require))
    for router in routers:
        app.include_router(router)
    _document_roles(app, routers)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        """Liveness for load balancers: no token, no data."""
        return JSONResponse({"status": "ok"})

    return app
