"""The audit service's HTTP API: thin routes over `nexus_audit.service.AuditLog`.

The host application provides two things on ``app.state``: ``audit_log`` (the
`AuditLog`) and ``authorize`` (``async (request, roles) -> caller``), so
authentication stays the host's — the control plane's tokens when co-located —
and this package imports nothing from it. The caller is read through the
`Caller` protocol: ``name`` is the actor recorded for erasures and exports;
``region`` / ``enforcer_id``, when set, bind an enforcer's uploads to itself.
"""

from nexus_audit.api.app import create_audit_app
from nexus_audit.api.decisions import router as decisions_router
from nexus_audit.api.routes import ANY_ROLE, ERROR_STATUS, Authorize, Caller, require, router

__all__ = [
    "ANY_ROLE",
    "ERROR_STATUS",
    "Authorize",
    "Caller",
    "create_audit_app",
    "decisions_router",
    "require",
    "router",
]
