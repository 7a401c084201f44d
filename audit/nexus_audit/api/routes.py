"""The audit routes. Each parses, authorises, calls the log and answers; errors map by table.

========  ==============================  ================================
POST      /v1/opa/logs                    enforcer (OPA decision_logs: the
                                          plugin appends /logs to the
                                          service URL <base>/v1/opa)
GET       /v1/audit/checkpoint            any role (text/plain signed note)
GET       /v1/audit/proofs/inclusion      compliance, operator (tlog-proof)
GET       /v1/audit/proofs/consistency    compliance, operator (JSON)
GET       /v1/audit/coverage              compliance (JSON)
POST      /v1/audit/erasure               compliance (JSON)
GET       /v1/audit/evidence              compliance (application/gzip)
========  ==============================  ================================
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Protocol

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from nexus_audit import evidence
from nexus_audit.api.models import (
    AppendAnswer,
    ConsistencyProofAnswer,
    CoverageAnswer,
    ErasureAnswer,
)
from nexus_audit.catalog import UnknownControlError
from nexus_audit.coverage import UnknownFrameworkError, coverage
from nexus_audit.erasure import MAX_REFERENCE_LENGTH, erase
from nexus_audit.intake import (
    BatchTooLargeError,
    EnforcerMismatchError,
    IntakeError,
    UnknownControlInEventError,
)
from nexus_audit.merkle import MerkleError
from nexus_audit.search import InvalidQueryError
from nexus_audit.service import (
    AuditLog,
    CheckpointNotFoundError,
    LeafNotFoundError,
    LeafNotInCheckpointError,
)
from nexus_contract.errors import NexusError
from nexus_contract.wire import OPA_API_PREFIX
from nexus_runtime.http import ApiError, parse_body, read_body

__all__ = ["ANY_ROLE", "ERROR_STATUS", "Authorize", "Caller", "require", "router"]

ANY_ROLE = ("author", "approver", "operator", "compliance", "enforcer", "gateway")
"""Every role of the control plane: the checkpoint is for anyone with a token."""

MAX_ERASURE_BODY = 16 * 1024
TLOG_PROOF_MEDIA_TYPE = "text/plain; charset=utf-8"
MAX_INDEX = 2**63 - 1

ERROR_STATUS: dict[type[NexusError], tuple[int, str | None]] = {
    LeafNotFoundError: (404, "not_found"),
    CheckpointNotFoundError: (404, "not_found"),
    LeafNotInCheckpointError: (409, "not_in_checkpoint"),
    UnknownFrameworkError: (400, "unknown_framework"),
    UnknownControlError: (400, "unknown_control"),
    BatchTooLargeError: (413, None),
    UnknownControlInEventError: (422, None),
    EnforcerMismatchError: (403, None),
    IntakeError: (400, None),
    MerkleError: (400, "invalid_request"),
    InvalidQueryError: (400, "invalid_query"),
}
"""How the audit log's errors answer over HTTP (the host installs the table).

A code of None answers with the error's own ``code`` (intake errors name theirs).
"""


class Caller(Protocol):
    """Who is calling, as the host's ``authorize`` reports it."""

    @property
    def name(self) -> str: ...

    @property
    def region(self) -> str | None: ...

    @property
    def enforcer_id(self) -> str | None: ...


Authorize = Callable[[Request, frozenset[str]], Awaitable[Caller]]


def require(*roles: str) -> Callable[[Request], Awaitable[Caller]]:
    """A dependency admitting ``roles``, decided by the host's ``app.state.authorize``."""
    allowed = frozenset(roles)

    async def dependency(request: Request) -> Caller:
        authorize: Authorize = request.app.state.authorize
        return await authorize(request, allowed)

    dependency.__name__ = "require_" + "_or_".join(sorted(allowed))
    dependency.roles = allowed  # type: ignore[attr-defined]
    return dependency


def audit_log(request: Request) -> AuditLog:
    log: AuditLog = request.app.state.audit_log
    return log


LogDep = Annotated[AuditLog, Depends(audit_log)]
EnforcerDep = Annotated[Caller, Depends(require("enforcer"))]
AnyRoleDep = Annotated[Caller, Depends(require(*ANY_ROLE))]
ProverDep = Annotated[Caller, Depends(require("compliance", "operator"))]
ComplianceDep = Annotated[Caller, Depends(require("compliance"))]
Index = Annotated[int | None, Query(ge=0, le=MAX_INDEX)]

router = APIRouter(tags=["audit"])


class ErasureRequest(BaseModel):
    """Body of POST /v1/audit/erasure. ``reference`` is logged: no personal data in it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str = Field(min_length=1, max_length=512)
    subject: str | None = Field(default=None, min_length=1, max_length=4096)
    reference: str | None = Field(default=None, max_length=MAX_REFERENCE_LENGTH)


@router.post(f"{OPA_API_PREFIX}/logs", response_model=AppendAnswer)
async def opa_decision_logs(request: Request, log: LogDep, caller: EnforcerDep) -> AppendAnswer:
    """OPA decision_logs upload: a gzip JSON array of events, appended all or nothing."""
    body = await read_body(request, log.limits.max_bytes)
    result = await asyncio.to_thread(
        log.ingest_upload,
        body,
        request.headers.get("content-encoding"),
        region=caller.region or None,
        enforcer=caller.enforcer_id or None,
    )
    return AppendAnswer.model_validate(result)


@router.get(
    "/v1/audit/checkpoint",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}, "description": "A C2SP signed checkpoint"}},
)
async def checkpoint(log: LogDep, _: AnyRoleDep) -> PlainTextResponse:
    """The latest signed checkpoint (C2SP tlog-checkpoint note)."""
    signed = await asyncio.to_thread(log.latest_checkpoint)
    if signed is None:
        raise ApiError(404, "no_checkpoint", "no checkpoint has been signed yet")
    return PlainTextResponse(signed.note, media_type="text/plain; charset=utf-8")


@router.get(
    "/v1/audit/proofs/inclusion",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}, "description": "A C2SP tlog-proof"}},
)
async def inclusion_proof(
    log: LogDep,
    _: ProverDep,
    decision_id: Annotated[str | None, Query(max_length=128)] = None,
    index: Index = None,
    size: Index = None,
) -> PlainTextResponse:
    """C2SP tlog-proof of a leaf (``decision_id`` or ``index``) against checkpoint ``size``."""
    if ((decision_id or None) is None and index is None) or (decision_id and index is not None):
        raise ApiError(400, "invalid_request", "give exactly one of decision_id, index")
    proof = await asyncio.to_thread(
        log.inclusion_proof, index=index, decision_id=decision_id or None, size=size
    )
    return PlainTextResponse(proof.encode(), media_type=TLOG_PROOF_MEDIA_TYPE)


@router.get("/v1/audit/proofs/consistency", response_model=ConsistencyProofAnswer)
async def consistency_proof(
    log: LogDep, _: ProverDep, old_size: Index = None, new_size: Index = None
) -> ConsistencyProofAnswer:
    """RFC 9162 consistency proof from ``old_size`` to checkpoint ``new_size`` (or latest)."""
    if old_size is None:
        raise ApiError(400, "invalid_request", "old_size is required")
    try:
        proof = await asyncio.to_thread(log.consistency_proof, old_size, new_size)
    except LeafNotInCheckpointError as exc:
        raise ApiError(400, "invalid_request", str(exc)) from None
    return ConsistencyProofAnswer.model_validate(proof.as_dict())


@router.get("/v1/audit/coverage", response_model=CoverageAnswer)
async def coverage_report(request: Request, log: LogDep, _: ComplianceDep) -> CoverageAnswer:
    """Evidence per control of ``framework`` in ``[since, until)``; controls with none."""
    framework, since, until = _scope(request)
    report = await asyncio.to_thread(coverage, log, framework, since, until)
    return CoverageAnswer.model_validate(report.as_dict())


@router.post(
    "/v1/audit/erasure",
    response_model=ErasureAnswer,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ErasureRequest"}}
            },
        }
    },
)
async def erasure(request: Request, log: LogDep, caller: ComplianceDep) -> ErasureAnswer:
    """Crypto-shred a subject's (or a tenant's) payloads; the erasure is logged."""
    ask = parse_body(ErasureRequest, await read_body(request, MAX_ERASURE_BODY))
    result = await asyncio.to_thread(
        erase,
        log,
        tenant=ask.tenant,
        subject=ask.subject,
        actor=_actor(caller),
        reference=ask.reference,
    )
    return ErasureAnswer.model_validate(result)


@router.get(
    "/v1/audit/evidence",
    response_class=Response,
    responses={200: {"content": {"application/gzip": {}}, "description": "Evidence archive"}},
)
async def evidence_archive(
    request: Request,
    log: LogDep,
    caller: ComplianceDep,
    control: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """The evidence archive (tar.gz) for one ``control`` of ``framework`` in a period."""
    framework, since, until = _scope(request)
    if not control:
        raise ApiError(400, "invalid_request", "control is required")
    archive = await asyncio.to_thread(
        _export, log, framework, control, since, until, _actor(caller)
    )
    name = f"evidence-{framework.lower()}-{control.replace(':', '_')}.tar.gz"
    return Response(
        archive,
        media_type="application/gzip",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


def _export(
    log: AuditLog,
    framework: str,
    control: str,
    since: datetime,
    until: datetime,
    actor: str,
) -> bytes:
    with tempfile.TemporaryDirectory(prefix="nexus-evidence-") as directory:
        out = Path(directory) / "evidence.tar.gz"
        evidence.export_archive(
            log,
            framework=framework,
            control=control,
            since=since,
            until=until,
            out=out,
            actor=actor,
        )
        return out.read_bytes()


def _scope(request: Request) -> tuple[str, datetime, datetime]:
    query = request.query_params
    framework = query.get("framework")
    if not framework:
        raise ApiError(400, "invalid_request", "framework is required (soc2, iso27001, gdpr)")
    since = _time(query.get("since"), "since")
    until = _time(query.get("until"), "until")
    if until <= since:
        raise ApiError(400, "invalid_request", "until must be after since")
    return framework, since, until


def _time(value: str | None, name: str) -> datetime:
    if not value:
        raise ApiError(400, "invalid_request", f"{name} is required (RFC 3339 or YYYY-MM-DD)")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(
            400, "invalid_request", f"{name} {value!r} is not an RFC 3339 time or a date"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _actor(caller: Caller) -> str:
    return caller.name or "unknown"
