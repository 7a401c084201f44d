"""The audit routes. Each parses, authorises, calls the log and answers; errors map by table.

========  ==================================  ================================
POST      /v1/opa/logs                        enforcer (OPA decision_logs: the
                                              plugin appends /logs to the
                                              service URL <base>/v1/opa)
GET       /v1/audit/checkpoint                any role (text/plain signed note)
GET       /v1/audit/log/checkpoint            any role (C2SP tlog-tiles prefix
GET       /v1/audit/log/tile/...              /v1/audit/log: checkpoint, tiles,
                                              entry bundles; immutable)
GET       /v1/audit/log/checkpoints           any role (the journal, JSON lines)
GET       /v1/audit/proofs/inclusion          compliance, operator (tlog-proof)
GET       /v1/audit/proofs/consistency        compliance, operator (JSON)
GET       /v1/audit/coverage                  compliance (JSON)
POST      /v1/audit/erasure                   compliance (a request, JSON)
GET       /v1/audit/erasure                   compliance (the requests)
POST      /v1/audit/erasure/{id}/approve      compliance, another principal
GET       /v1/audit/evidence                  compliance (application/gzip)
GET       /v1/audit/metrics                   operator (Prometheus text)
========  ==================================  ================================
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Protocol

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from nexus_audit import evidence, tiles
from nexus_audit.api.models import (
    AppendAnswer,
    ConsistencyProofAnswer,
    CoverageAnswer,
    ErasureAnswer,
    ErasureRequestAnswer,
    ErasureRequestsAnswer,
)
from nexus_audit.catalog import UnknownControlError
from nexus_audit.coverage import UnknownFrameworkError, coverage
from nexus_audit.enforcer_records import EnforcerRecordRefusedError
from nexus_audit.erasure import (
    MAX_REFERENCE_LENGTH,
    ErasureError,
    ErasureNotFoundError,
    LegalHoldError,
    ReservedScopeError,
    SamePersonError,
    approve_erasure,
    erasure_requests,
    request_erasure,
)
from nexus_audit.evidence.export import EvidenceScopeError
from nexus_audit.intake import (
    BatchTooLargeError,
    DecisionConflictError,
    EnforcerMismatchError,
    IntakeError,
    TimeOutsideWindowError,
    UnknownControlInEventError,
    Uploader,
)
from nexus_audit.log_gauges import LogGauges
from nexus_audit.merkle import MerkleError
from nexus_audit.metrics import REFUSED_BUSY, AuditCollector
from nexus_audit.search import InvalidQueryError
from nexus_audit.service import (
    AuditLog,
    CheckpointNotFoundError,
    LeafNotFoundError,
    LeafNotInCheckpointError,
    QuorumUnavailableError,
)
from nexus_audit.signer import CheckpointChainError, SignerUnavailableError
from nexus_audit.uploads import UploadsBusyError
from nexus_contract.errors import NexusError
from nexus_contract.wire import ENFORCER_HEADER, OPA_API_PREFIX
from nexus_runtime.http import ApiError, parse_body, read_body

__all__ = [
    "ALL_TENANTS_ROLES",
    "ANY_ROLE",
    "ERROR_STATUS",
    "TILES_PREFIX",
    "Authorize",
    "Caller",
    "require",
    "router",
]

ANY_ROLE = ("author", "approver", "operator", "compliance", "enforcer", "gateway")
"""Every role of the control plane: the checkpoint is for anyone with a token."""
ALL_TENANTS_ROLES = frozenset({"compliance"})
"""Roles whose callers may export evidence of every tenant at once (``all_tenants``)."""

MAX_ERASURE_BODY = 16 * 1024
TLOG_PROOF_MEDIA_TYPE = "text/plain; charset=utf-8"
TILES_PREFIX = "/v1/audit/log"
TILE_CACHE = "private, max-age=31536000, immutable"
CHECKPOINT_CACHE = "no-cache, max-age=0"
MAX_INDEX = 2**63 - 1
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")
_MAX_ENFORCER_ID = 128

ERROR_STATUS: dict[type[NexusError], tuple[int, str | None]] = {
    LeafNotFoundError: (404, "not_found"),
    CheckpointNotFoundError: (404, "not_found"),
    LeafNotInCheckpointError: (409, "not_in_checkpoint"),
    UnknownFrameworkError: (400, "unknown_framework"),
    UnknownControlError: (400, "unknown_control"),
    BatchTooLargeError: (413, None),
    UnknownControlInEventError: (422, None),
    EnforcerMismatchError: (403, None),
    DecisionConflictError: (409, None),
    TimeOutsideWindowError: (422, None),
    EnforcerRecordRefusedError: (422, None),
    IntakeError: (400, None),
    MerkleError: (400, "invalid_request"),
    InvalidQueryError: (400, "invalid_query"),
    LegalHoldError: (409, "legal_hold"),
    ReservedScopeError: (422, "reserved_scope"),
    SamePersonError: (403, "same_person"),
    ErasureNotFoundError: (404, "not_found"),
    ErasureError: (400, "invalid_request"),
    EvidenceScopeError: (403, "forbidden"),
    tiles.TileNotFoundError: (404, "not_found"),
    tiles.TilePathError: (404, "not_found"),
    QuorumUnavailableError: (503, "quorum_unavailable"),
    CheckpointChainError: (503, "chain_broken"),
    SignerUnavailableError: (503, "signer_unavailable"),
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
OperatorDep = Annotated[Caller, Depends(require("operator"))]
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
    """OPA decision_logs upload: a gzip JSON array of events, appended all or nothing.

    Admitted before the body is read: past the per-enforcer or total cap of
    uploads in flight, 429 with Retry-After.
    """
    header = request.headers.get(ENFORCER_HEADER, "")
    if not header or len(header) > _MAX_ENFORCER_ID or not set(header) <= _ID_CHARS:
        raise ApiError(
            400, "invalid_enforcer", f"header {ENFORCER_HEADER} must name the enforcer (lower case)"
        )
    try:
        admitted = log.uploads.admit(header)
        admitted.__enter__()
    except UploadsBusyError as exc:
        log.metrics.count("uploads_refused", REFUSED_BUSY)
        raise ApiError(
            429, "busy", str(exc), headers={"retry-after": str(exc.retry_after_s)}
        ) from None
    try:
        log.metrics.set("uploads_in_flight", log.uploads.in_flight)
        body = await read_body(request, log.limits.max_bytes)
        uploader = Uploader(caller.region or None, caller.enforcer_id or None, header)
        try:
            result = await asyncio.to_thread(
                log.ingest_upload, body, request.headers.get("content-encoding"), uploader
            )
        except IntakeError as exc:
            log.metrics.count("uploads_refused", exc.code)
            raise
    finally:
        admitted.__exit__(None, None, None)
        log.metrics.set("uploads_in_flight", log.uploads.in_flight)
    return AppendAnswer.model_validate(result)


@router.get(
    "/v1/audit/checkpoint",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}, "description": "A C2SP signed checkpoint"}},
)
async def checkpoint(log: LogDep, _: AnyRoleDep) -> PlainTextResponse:
    """The latest signed checkpoint (C2SP tlog-checkpoint note, with cosignatures)."""
    signed = await asyncio.to_thread(log.latest_checkpoint)
    if signed is None:
        raise ApiError(404, "no_checkpoint", "no checkpoint has been signed yet")
    return PlainTextResponse(
        signed.published_note,
        media_type="text/plain; charset=utf-8",
        headers={"cache-control": CHECKPOINT_CACHE},
    )


@router.get(
    f"{TILES_PREFIX}/checkpoint",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}, "description": "tlog-tiles checkpoint"}},
)
async def tiles_checkpoint(log: LogDep, caller: AnyRoleDep) -> PlainTextResponse:
    """The tiled log's ``checkpoint``: the latest signed checkpoint with its cosignatures."""
    return await checkpoint(log, caller)


@router.get(
    f"{TILES_PREFIX}/checkpoints",
    response_class=Response,
    responses={200: {"content": {"application/jsonl": {}}, "description": "The journal"}},
)
async def checkpoint_journal(log: LogDep, _: AnyRoleDep) -> Response:
    """Every signed checkpoint, as the journal outside the database holds it (JSON lines).

    Mirror it, or keep any line: `audit verify --trusted` proves the log extends it.
    """
    journal = log.journal
    if not journal.exists():
        raise ApiError(404, "no_checkpoint", "no checkpoint has been signed yet")
    return FileResponse(
        journal.path, media_type="application/jsonl", headers={"cache-control": CHECKPOINT_CACHE}
    )


@router.get(
    TILES_PREFIX + "/tile/{tile_path:path}",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "A tile"}},
)
async def tile(tile_path: str, log: LogDep, _: AnyRoleDep) -> Response:
    """``tile/<L>/<N>[.p/<W>]`` (hashes) or ``tile/entries/<N>[.p/<W>]`` (entry bundles)."""
    parsed = tiles.parse_tile_path("tile/" + tile_path)

    def read() -> bytes:
        signed = log.latest_checkpoint()
        if signed is None:
            raise tiles.TileNotFoundError("no checkpoint has been signed yet")
        with log.db.session() as session:
            if parsed.level is None:
                return tiles.entry_bundle(session, parsed, signed.size)
            return tiles.read_tile(session, parsed, signed.size)

    data = await asyncio.to_thread(read)
    return Response(
        data, media_type="application/octet-stream", headers={"cache-control": TILE_CACHE}
    )


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
    response_model=ErasureRequestAnswer,
    status_code=202,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ErasureRequest"}}
            },
        }
    },
)
async def erasure(request: Request, log: LogDep, caller: ComplianceDep) -> ErasureRequestAnswer:
    """Request the erasure of a subject's (or a tenant's) payloads; a second person approves."""
    ask = parse_body(ErasureRequest, await read_body(request, MAX_ERASURE_BODY))
    view = await asyncio.to_thread(
        request_erasure,
        log,
        tenant=ask.tenant,
        subject=ask.subject,
        requested_by=_actor(caller),
        requester_id=_principal_id(caller),
        reference=ask.reference,
    )
    return ErasureRequestAnswer.model_validate(view)


@router.get("/v1/audit/erasure", response_model=ErasureRequestsAnswer)
async def erasure_list(
    log: LogDep,
    _: ComplianceDep,
    state: Annotated[str | None, Query(max_length=16)] = None,
) -> ErasureRequestsAnswer:
    """Erasure requests (``state``: pending, executed, refused)."""
    views = await asyncio.to_thread(erasure_requests, log, state=state)
    return ErasureRequestsAnswer(
        requests=[ErasureRequestAnswer.model_validate(view) for view in views]
    )


@router.post("/v1/audit/erasure/{request_id}/approve", response_model=ErasureAnswer)
async def erasure_approve(
    request_id: Annotated[str, PathParam(max_length=36)], log: LogDep, caller: ComplianceDep
) -> ErasureAnswer:
    """Approve and run an erasure someone else requested; irreversible."""
    result = await asyncio.to_thread(
        approve_erasure,
        log,
        request_id,
        approved_by=_actor(caller),
        approver_id=_principal_id(caller),
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
    tenant: Annotated[str | None, Query(max_length=160)] = None,
    all_tenants: bool = False,
) -> Response:
    """The evidence archive (tar.gz) for one ``control`` of ``framework`` in a period.

    Scoped to ``tenant`` (its decisions, and control-plane events); every
    tenant only with ``all_tenants=true``, for the roles allowed to see them.
    """
    framework, since, until = _scope(request)
    if not control:
        raise ApiError(400, "invalid_request", "control is required")
    if (tenant is None) == (not all_tenants):
        raise ApiError(400, "invalid_request", "give tenant, or all_tenants=true")
    if all_tenants and _role(caller) not in ALL_TENANTS_ROLES:
        raise ApiError(403, "forbidden", "this role may not export every tenant's evidence")
    archive = await asyncio.to_thread(
        _export, log, framework, control, since, until, _actor(caller), tenant
    )
    name = f"evidence-{framework.lower()}-{control.replace(':', '_')}.tar.gz"
    return Response(
        archive,
        media_type="application/gzip",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


@router.get(
    "/v1/audit/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
async def audit_metrics(log: LogDep, _: OperatorDep) -> Response:
    """The audit service's counters (security events, dead letters, witnesses, uploads) and
    the log's state (size, latest checkpoint, outbox backlog)."""
    registry = CollectorRegistry()
    registry.register(AuditCollector(log.metrics))
    registry.register(LogGauges(log.db, lambda: log.now().timestamp(), log.outbox_pending))
    body = await asyncio.to_thread(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _export(
    log: AuditLog,
    framework: str,
    control: str,
    since: datetime,
    until: datetime,
    actor: str,
    tenant: str | None,
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
            tenant=tenant,
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


def _role(caller: Caller) -> str:
    role = getattr(caller, "role", None)
    return str(getattr(role, "value", role) or "")


def _principal_id(caller: Caller) -> str | None:
    found = getattr(caller, "token_id", None)
    return found if isinstance(found, str) else None
