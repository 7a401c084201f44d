"""Shadow evaluation: the operator puts a published revision in shadow for a region, and
that region's enforcers download it (signed, like any bundle) beside the active one.

The enforcer side follows OPA's bundle protocol with plain polling (ETag = revision,
``If-None-Match`` → 304): the candidate is judged on a sample, so a change reaching
it a poll later costs nothing, and it holds no request open.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from nexus_audit.service import AuditLog
from nexus_contract.wire import BUNDLE_CONTENT_TYPE, OPA_API_PREFIX, POLICY_BUNDLE, SHADOW_BUNDLE
from nexus_control.api.deps import EnforcerDep, OperatorDep, PlaneDep, ReaderDep, enforcer_identity
from nexus_control.api.models import (
    GateResultModel,
    Reason,
    ShadowList,
    ShadowReportView,
    ShadowRequest,
    ShadowView,
)
from nexus_control.authoring.spec import RiskLevel
from nexus_control.plane import ControlPlane
from nexus_control.replay.candidate import load_revision
from nexus_control.replay.gatekeeper import risk_judge
from nexus_control.replay.gates import judge
from nexus_control.replay.shadowreport import shadow_report
from nexus_control.rollout.shadow import (
    ShadowTarget,
    UnknownShadowError,
    assign_shadow,
    clear_shadow,
    shadow_targets,
)
from nexus_control.serving.protocol import held_revision
from nexus_runtime.http import ApiError

__all__ = [
    "end_shadow",
    "get_shadow_bundle",
    "get_shadow_report",
    "list_shadows",
    "put_in_shadow",
    "router",
    "shadow_report_of",
]

router = APIRouter(tags=["shadow"])

RegionPath = Annotated[str, Path(max_length=64, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


@router.get("/v1/shadow", response_model=ShadowList)
async def list_shadows(plane: PlaneDep, _: ReaderDep) -> ShadowList:
    """Every region's shadow candidate, and the revision it is compared with."""

    def read() -> ShadowList:
        with plane.db.session() as session:
            return ShadowList.model_validate({"shadows": shadow_targets(session)})

    return await asyncio.to_thread(read)


def shadow_report_of(plane: ControlPlane, audit: AuditLog, region: str) -> ShadowReportView:
    """The report of ``region``'s shadow candidate since it began, judged by the shadow gates."""
    with plane.db.session() as session:
        target = next((t for t in shadow_targets(session) if t.region == region), None)
    if target is None:
        raise UnknownShadowError(f"region {region!r} has no shadow candidate")
    since = target.since if target.since.tzinfo else target.since.replace(tzinfo=UTC)
    report = shadow_report(
        audit, region=region, candidate=target.revision, since=since, until=datetime.now(UTC)
    )
    gates = plane.fleet.shadow_gates
    results: list[GateResultModel] = []
    passed = None
    if gates is not None:
        verdict = judge(gates, report, _risk(plane, target))
        results = [GateResultModel(**r.as_dict()) for r in verdict.results]
        passed = verdict.passed and report.total > 0
    return ShadowReportView(
        region=region,
        candidate=target.revision,
        active_revision=target.active_revision,
        since=since,
        report=report.body.decode(),
        digest=report.digest,
        gates_passed=passed,
        gates=results,
    )


def _risk(plane: ControlPlane, target: ShadowTarget) -> Callable[[str], RiskLevel | None]:
    candidate = load_revision(plane.registry, plane.keyring, plane.opa, target.revision)
    active = (
        load_revision(plane.registry, plane.keyring, plane.opa, target.active_revision)
        if target.active_revision is not None
        else None
    )
    return risk_judge(candidate, active)


@router.get("/v1/shadow/{region}/report", response_model=ShadowReportView)
async def get_shadow_report(
    region: RegionPath, request: Request, plane: PlaneDep, _: ReaderDep
) -> ShadowReportView:
    """The region's shadow outcomes for its candidate, counted from the audit log in the
    replay report's buckets, and the shadow gates' verdict (when the fleet declares them)."""
    audit = getattr(request.app.state, "audit_log", None)
    if not isinstance(audit, AuditLog):
        raise ApiError(
            409, "no_audit_log", "a shadow report needs the audit log served with the plane"
        )
    return await asyncio.to_thread(shadow_report_of, plane, audit, region)


@router.post("/v1/shadow", response_model=ShadowView, status_code=201)
async def put_in_shadow(body: ShadowRequest, plane: PlaneDep, principal: OperatorDep) -> ShadowView:
    """Put a published, signed revision in shadow for one region (audited).

    Refused (422) for a region the fleet does not know, a revision not in the
    registry or not yet signed, and the revision the region already runs.
    """
    regions = plane.known_regions()

    def assign() -> ShadowView:
        with plane.db.session() as session:
            target = assign_shadow(
                session, regions, body.region, body.revision, principal.name, body.reason
            )
            return ShadowView.model_validate(target)

    return await asyncio.to_thread(assign)


@router.post("/v1/shadow/{region}/end", status_code=204, response_class=Response)
async def end_shadow(
    region: RegionPath, body: Reason, plane: PlaneDep, principal: OperatorDep
) -> Response:
    """End a region's shadow evaluation (audited); its enforcers then get 404 and keep none."""

    def clear() -> None:
        with plane.db.session() as session:
            clear_shadow(session, region, principal.name, body.reason)

    await asyncio.to_thread(clear)
    return Response(status_code=204)


@router.get(
    OPA_API_PREFIX + "/shadow/{region}/{bundle}",
    response_class=Response,
    responses={200: {"content": {BUNDLE_CONTENT_TYPE: {}}}, 304: {"description": "Not modified"}},
)
async def get_shadow_bundle(
    region: str, bundle: str, request: Request, plane: PlaneDep, principal: EnforcerDep
) -> Response:
    """Serve a region's shadow candidate to one of its enforcers (signed, as any bundle)."""
    if bundle != POLICY_BUNDLE:
        raise ApiError(404, "not_found", f"only the {POLICY_BUNDLE} bundle has a shadow")
    if not _REGION.match(region):
        raise ApiError(400, "invalid_region", "region must be a lower-case id")
    enforcer_identity(request, principal, region)
    revision = await asyncio.to_thread(plane.serving.served_revision, region, SHADOW_BUNDLE)
    if revision is None:
        raise ApiError(404, "no_shadow", f"region {region} has no shadow candidate")
    headers = {
        "etag": f'"{revision}"',
        "content-type": BUNDLE_CONTENT_TYPE,
        "cache-control": "no-store",
    }
    if held_revision(request.headers.get("if-none-match")) == revision:
        return Response(status_code=304, headers=headers)
    archive = await asyncio.to_thread(plane.registry.archive, revision)
    return Response(content=archive, status_code=200, headers=headers)
