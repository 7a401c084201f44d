"""Who is calling, and may they: the dependencies every router declares.

`require(*roles)` authenticates the bearer token and admits only ``roles``;
its ``roles`` attribute is what the OpenAPI document lists per route
(``x-nexus-roles``). The annotated aliases (`AuthorDep`, `OperatorDep`, …) are
what routes name, so a route reads as who may call it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from nexus_contract.wire import ENFORCER_HEADER
from nexus_control.access.tokens import Principal, Role, authenticate
from nexus_control.plane import ControlPlane
from nexus_runtime.admission import PRINCIPAL_STATE_KEY
from nexus_runtime.http import ApiError

__all__ = [
    "ApproverDep",
    "AuthorDep",
    "BudgetReaderDep",
    "EnforcerDep",
    "EvaluatorDep",
    "EventReaderDep",
    "FleetReaderDep",
    "GatewayDep",
    "HealthReaderDep",
    "OperatorDep",
    "PlaneDep",
    "ProbeDep",
    "ReaderDep",
    "RemediatorDep",
    "SpendReaderDep",
    "authenticate_token",
    "authorize",
    "enforcer_identity",
    "require",
    "route_roles",
    "spend_scope",
]

_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")
MAX_ENFORCER_ID = 128


def control_plane(request: Request) -> ControlPlane:
    plane: ControlPlane = request.app.state.control_plane
    return plane


PlaneDep = Annotated[ControlPlane, Depends(control_plane)]


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthenticated", "a bearer token is required")
    return token.strip()


def authenticate_token(plane: ControlPlane) -> Callable[[str], Awaitable[Principal | None]]:
    """The admission middleware's check: a bearer token → its live principal, or None."""

    async def check(token: str) -> Principal | None:
        def lookup() -> Principal | None:
            with plane.db.session() as session:
                return authenticate(session, token)

        return await asyncio.to_thread(lookup)

    return check


async def authorize(request: Request, roles: frozenset[str]) -> Principal:
    """The caller's principal if its token is live and its role is one of ``roles``.

    A request with a body was authenticated by the admission middleware
    before its body was read; its principal is reused, not looked up again.
    """
    token = _bearer(request)
    admitted = request.scope.get("state", {}).get(PRINCIPAL_STATE_KEY)
    if isinstance(admitted, Principal):
        principal: Principal | None = admitted
    else:
        principal = await authenticate_token(control_plane(request))(token)
    if principal is None:
        raise ApiError(401, "unauthenticated", "unknown or revoked token")
    if principal.role.value not in roles:
        names = ", ".join(sorted(roles))
        raise ApiError(
            403, "forbidden", f"role {principal.role.value} may not do this ({names} may)"
        )
    request.state.principal = principal
    return principal


def require(*roles: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency that authenticates the caller and checks its role is one of ``roles``."""
    allowed = frozenset(role.value for role in roles)

    async def dependency(request: Request) -> Principal:
        return await authorize(request, allowed)

    dependency.__name__ = "require_" + "_or_".join(sorted(allowed))
    dependency.roles = allowed  # type: ignore[attr-defined]
    return dependency


def route_roles(dependant: Any) -> frozenset[str] | None:
    """The roles a route's ``require`` dependency admits (None: the route has none)."""
    for sub in dependant.dependencies:
        roles = getattr(sub.call, "roles", None)
        if roles is not None:
            return frozenset(roles)
        nested = route_roles(sub)
        if nested is not None:
            return nested
    return None


AuthorDep = Annotated[Principal, Depends(require(Role.AUTHOR))]
ApproverDep = Annotated[Principal, Depends(require(Role.APPROVER))]
OperatorDep = Annotated[Principal, Depends(require(Role.OPERATOR))]
EnforcerDep = Annotated[Principal, Depends(require(Role.ENFORCER))]
GatewayDep = Annotated[Principal, Depends(require(Role.GATEWAY))]
ReaderDep = Annotated[
    Principal, Depends(require(Role.AUTHOR, Role.APPROVER, Role.OPERATOR, Role.COMPLIANCE))
]
"""Bundles and rollouts: anyone who works on changes or evidences them."""
FleetReaderDep = Annotated[Principal, Depends(require(Role.OPERATOR, Role.APPROVER, Role.AUTHOR))]
EventReaderDep = Annotated[Principal, Depends(require(Role.COMPLIANCE, Role.OPERATOR))]
RemediatorDep = Annotated[Principal, Depends(require(Role.REMEDIATOR, Role.OPERATOR))]
"""Alertmanager's webhook: a remediator token (that may do nothing else), or an operator's."""
EvaluatorDep = Annotated[Principal, Depends(require(Role.EVALUATOR))]
ProbeDep = Annotated[Principal, Depends(require(Role.PROBE))]
HealthReaderDep = Annotated[
    Principal, Depends(require(Role.OPERATOR, Role.COMPLIANCE, Role.PROBE, Role.AUTHOR))
]
"""Evaluation results: an evaluator token only, so no person posts the evidence their own
change is gated on."""
BudgetReaderDep = Annotated[Principal, Depends(require(Role.OPERATOR, Role.COMPLIANCE))]
"""Spend against caps: who runs the platform and who evidences it."""
SpendReaderDep = Annotated[Principal, Depends(require(Role.OPERATOR, Role.COMPLIANCE, Role.FINOPS))]
"""The cost API: operators and compliance read every tenant's spend; a finops token only
the spend of the tenants it names (`spend_scope`)."""


def spend_scope(principal: Principal) -> frozenset[str] | None:
    """The tenants whose spend ``principal`` may read; None: every tenant."""
    return frozenset(principal.tenants) if principal.role is Role.FINOPS else None


def enforcer_identity(request: Request, principal: Principal, region: str | None) -> str:
    """The calling enforcer's id (its ``x-nexus-enforcer`` header), checked against its token.

    An enforcer token speaks for its own enforcer id and region only; a
    region-wide token (from before tokens were bound per enforcer) speaks for none.
    """
    enforcer_id = request.headers.get(ENFORCER_HEADER, "")
    if not enforcer_id or len(enforcer_id) > MAX_ENFORCER_ID or not set(enforcer_id) <= _ID_CHARS:
        raise ApiError(400, "invalid_enforcer", f"header {ENFORCER_HEADER} must be a lower-case id")
    if principal.enforcer_id is None:
        raise ApiError(
            403,
            "forbidden",
            "region-wide enforcer tokens speak for no enforcer: mint one token per enforcer "
            "(nexus-policy tokens create --role enforcer --enforcer ID --region REGION)",
        )
    if principal.enforcer_id != enforcer_id:
        raise ApiError(
            403,
            "forbidden",
            f"this token belongs to enforcer {principal.enforcer_id}, not {enforcer_id}",
        )
    if region is not None and principal.region != region:
        raise ApiError(
            403, "forbidden", f"this token is for region {principal.region}, not {region}"
        )
    return enforcer_id
