"""The audit service as an application of its own, when it runs apart from the control plane."""

from __future__ import annotations

from fastapi import FastAPI

from nexus_audit.api.decisions import router as decisions_router
from nexus_audit.api.routes import ERROR_STATUS, Authorize, router
from nexus_audit.service import AuditLog
from nexus_runtime.admission import Admission, Authenticator
from nexus_runtime.http import ERROR_RESPONSES, install_domain_errors, install_error_handlers

__all__ = ["create_audit_app"]


def create_audit_app(log: AuditLog, authorize: Authorize, authenticate: Authenticator) -> FastAPI:
    """The audit routes over ``log``; ``authorize(request, roles)`` decides who may call.

    ``authenticate(token)`` is the host's check of a bearer token, run by the
    admission middleware before any body is read.
    """
    app = FastAPI(
        title="NexusAI audit service",
        responses=ERROR_RESPONSES,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.audit_log = log
    app.state.authorize = authorize
    app.add_middleware(Admission, authenticate=authenticate)
    install_error_handlers(app)
    install_domain_errors(app, ERROR_STATUS)
    app.include_router(router)
    app.include_router(decisions_router)
    return app
