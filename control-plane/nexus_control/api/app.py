"""Builds the control plane's FastAPI application (and, co-located, the audit service's routes)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from nexus_audit.api import ERROR_STATUS as AUDIT_ERROR_STATUS
from nexus_audit.api import decisions_router
from nexus_audit.api import router as audit_router
from nexus_audit.api.routes import ErasureRequest
from nexus_audit.facts import ConfigFacts
from nexus_audit.service import AuditLog
from nexus_control import __version__
from nexus_control.api import (
    alerts,
    approvals,
    budgets,
    bundles,
    evaluations,
    events,
    fleet,
    health,
    keys,
    metrics,
    replays,
    rollouts,
    shadow,
    usage,
)
from nexus_control.api import opa as opa_protocol
from nexus_control.api.approvals import ToolApprovalRequest
from nexus_control.api.deps import ReaderDep, authenticate_token, authorize, route_roles
from nexus_control.api.errors import STATUS_OF
from nexus_control.api.models import ReplayRequest
from nexus_control.authoring.opa import Opa
from nexus_control.budgets.spend import SpendStore, make_spend_store
from nexus_control.budgets.usage import UsageReport
from nexus_control.console import pages as console_pages
from nexus_control.console import routes as console
from nexus_control.health.reports import HealthReport
from nexus_control.plane import ControlPlane
from nexus_control.quality.evaluations import EvaluationResult
from nexus_control.rollout.rollouts import NoPolicyInForceError
from nexus_control.serving.enforcers import StatusReport
from nexus_control.settings import ControlSettings
from nexus_control.store import outbox
from nexus_control.store.database import control_database
from nexus_runtime.admission import Admission
from nexus_runtime.database import Database
from nexus_runtime.http import ERROR_RESPONSES, install_domain_errors, install_error_handlers
from nexus_runtime.toolchain import find_opa

__all__ = ["create_app", "create_control_plane"]

ROUTERS = (
    opa_protocol,
    usage,
    budgets,
    bundles,
    rollouts,
    approvals,
    fleet,
    keys,
    events,
    metrics,
    replays,
    alerts,
    evaluations,
    shadow,
    health,
)
BODY_MODELS: tuple[type[BaseModel], ...] = (
    UsageReport,
    ReplayRequest,
    ToolApprovalRequest,
    StatusReport,
    ErasureRequest,
    EvaluationResult,
    HealthReport,
)
"""Bodies routes parse themselves (bounded reads): their schemas join the OpenAPI document."""


def create_control_plane(
    settings: ControlSettings, *, spend: SpendStore | None = None, opa: Opa | None = None
) -> ControlPlane:
    """The control plane for ``settings``, its database migrated."""
    if settings.database_url.startswith("sqlite:///"):
        Path(settings.database_url.removeprefix("sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True
        )
    db = control_database(settings.database_url)
    db.migrate()
    return ControlPlane(
        settings,
        db,
        opa or Opa(find_opa(settings.opa_bin)),
        spend or make_spend_store(settings.redis_url),
    )


def _config_in_force(plane: ControlPlane) -> Callable[[], Mapping[str, Any] | None]:
    """The compiled config in force for the audit log (tenants, legal holds), or None."""

    def config() -> Mapping[str, Any] | None:
        try:
            return plane.rollouts.config_in_force()
        except NoPolicyInForceError:
            return None

    return config


def _openapi(app: FastAPI, routers: list[APIRouter]) -> None:
    """Each route's bearer requirement, its admitted roles (``x-nexus-roles``), every body."""
    roles_by_operation: dict[tuple[str, str], list[str]] = {}
    for router in routers:
        for route in router.routes:
            if isinstance(route, APIRoute) and route.include_in_schema:
                roles = sorted(route_roles(route.dependant) or ())
                for method in route.methods or ():
                    roles_by_operation[(route.path_format, method.lower())] = roles

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {})
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        schemas = components.setdefault("schemas", {})
        for model in BODY_MODELS:
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(body.pop("$defs", {}))
            schemas[model.__name__] = body
        for (path, method), roles in roles_by_operation.items():
            operation = schema["paths"][path][method]
            operation["security"] = [{"bearer": []}]
            operation["x-nexus-roles"] = roles
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(plane: ControlPlane, audit: AuditLog | None = None) -> FastAPI:
    """The control plane's API; with ``audit``, the audit service's routes too.

    With a co-located audit log, control-plane events drain from the outbox
    into it, and enforcers ship decision logs to the same base URL.
    """

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        if audit is not None:
            audit.start()
        loops = [asyncio.create_task(plane.run(stop, audit))]
        if audit is not None:
            loops.append(asyncio.create_task(console_pages.index_loop(stop, audit)))
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*loops)
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
        responses=ERROR_RESPONSES,
        # The document is served below, to a bearer of any role; no unauthenticated UI.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.control_plane = plane
    app.state.authorize = authorize
    # Outermost of the app's own middleware: no body is read before the token is checked.
    app.add_middleware(
        Admission, authenticate=authenticate_token(plane), open_prefixes=(console.CONSOLE_PREFIX,)
    )
    install_error_handlers(app)
    errors = {**STATUS_OF, **AUDIT_ERROR_STATUS}
    install_domain_errors(app, errors)
    routers = [module.router for module in ROUTERS]
    if audit is not None:
        app.state.audit_log = audit
        audit.use_facts(ConfigFacts(_config_in_force(plane)))
        audit.use_outbox(lambda: outbox.count_pending(plane.db))
        routers += [audit_router, decisions_router]
    for router in routers:
        app.include_router(router)
    _openapi(app, routers)
    console.install(app, plane, errors, routers)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_document(_: ReaderDep) -> JSONResponse:
        """The OpenAPI document, to people's tokens only: it maps every admin route."""
        return JSONResponse(app.openapi())

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        """Liveness for load balancers: no token, no data."""
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        """Readiness: every database this process writes to answers a query (no token, no data).

        A replica that cannot reach its database is taken out of the load balancer rather
        than accepting polls, status and decision logs it could not record.
        """
        databases = [plane.db] + ([audit.db] if audit is not None else [])
        unreachable = await asyncio.to_thread(_unreachable, databases)
        if unreachable:
            return JSONResponse({"status": "unavailable", "unreachable": unreachable}, 503)
        return JSONResponse({"status": "ready"})

    return app


def _unreachable(databases: list[Database]) -> list[str]:
    """The schemas (by version table) whose database does not answer ``SELECT 1``."""
    failed = []
    for db in databases:
        try:
            with db.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError:
            failed.append(db.version_table)
    return failed
