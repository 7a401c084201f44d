"""The audit service's HTTP routes: thin, they parse, authorise, call the log, map errors.

`create_router` takes the `AuditLog` and the host's ``require(*roles)``
dependency factory, so authentication stays the host's (the control plane
passes its own; this module imports nothing from it). ``require`` is called
with role names as plain strings. The dependency's return value, the
principal, is read duck-typed: ``name`` is the actor recorded for erasures
and exports, and ``region`` / ``enforcer_id``, when set, bind an enforcer's
uploads to its own region and id.

Every 4xx this router produces itself is a JSONResponse with the body
``{"error": {"code", "message"}}``, the control plane's error shape; errors
raised by ``require`` are the host's to shape.

Routes:

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

import asyncio
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nexus_audit import evidence
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
from nexus_audit.service import (
    AuditLog,
    CheckpointNotFoundError,
    LeafNotFoundError,
    LeafNotInCheckpointError,
)

__all__ = ["ANY_ROLE", "MAX_ERASURE_BODY", "RequireFactory", "create_router", "error_body"]

RequireFactory = Callable[..., Callable[..., Any]]
"""``require(*roles)``: returns a FastAPI dependency that authenticates and authorises."""

ANY_ROLE = ("author", "approver", "operator", "compliance", "enforcer", "gateway")
"""Every role of the control plane: the checkpoint is for anyone with a token."""

MAX_ERASURE_BODY = 16 * 1024
TLOG_PROOF_MEDIA_TYPE = "text/plain; charset=utf-8"
_MAX_INDEX = 2**63 - 1


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(error_body(code, message), status)


class _RequestError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.response = _error(status, code, message)


class ErasureRequest(BaseModel):
    """Body of POST /v1/audit/erasure. ``reference`` is logged: no personal data in it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str = Field(min_length=1, max_length=512)
    subject: str | None = Field(default=None, min_length=1, max_length=4096)
    reference: str | None = Field(default=None, max_length=MAX_REFERENCE_LENGTH)


def create_router(service: AuditLog, require: RequireFactory) -> APIRouter:
    """The audit routes over ``service``, authorised with the host's ``require``."""
    router = APIRouter(tags=["audit"])

    @router.post("/v1/opa/logs", response_model=None)
    async def opa_decision_logs(
        request: Request, principal: Annotated[Any, Depends(require("enforcer"))]
    ) -> Response:
        """OPA decision_logs upload: a gzip JSON array of events, appended all or nothing."""
        try:
            body = await _read_body(request, service.limits.max_bytes)
            result = await asyncio.to_thread(
                service.ingest_upload,
                body,
                request.headers.get("content-encoding"),
                region=_bound(principal, "region"),
                enforcer=_bound(principal, "enforcer_id"),
            )
        except _RequestError as exc:
            return exc.response
        except IntakeError as exc:
            return _error(_intake_status(exc), exc.code, exc.message)
        return JSONResponse(result.as_dict())

    @router.get("/v1/audit/checkpoint", response_model=None)
    async def checkpoint(_: Annotated[Any, Depends(require(*ANY_ROLE))]) -> Response:
        """The latest signed checkpoint (C2SP tlog-checkpoint note)."""
        signed = await asyncio.to_thread(service.latest_checkpoint)
        if signed is None:
            return _error(404, "no_checkpoint", "no checkpoint has been signed yet")
        return PlainTextResponse(signed.note, media_type="text/plain; charset=utf-8")

    @router.get("/v1/audit/proofs/inclusion", response_model=None)
    async def inclusion_proof(
        request: Request, _: Annotated[Any, Depends(require("compliance", "operator"))]
    ) -> Response:
        """C2SP tlog-proof of a leaf (``decision_id`` or ``index``) against checkpoint ``size``."""
        try:
            query = request.query_params
            decision_id = query.get("decision_id") or None
            index = _int(query.get("index"), "index")
            if (decision_id is None) == (index is None):
                raise _RequestError(
                    400, "invalid_request", "give exactly one of decision_id, index"
                )
            size = _int(query.get("size"), "size")
            proof = await asyncio.to_thread(
                service.inclusion_proof, index=index, decision_id=decision_id, size=size
            )
        except _RequestError as exc:
            return exc.response
        except (LeafNotFoundError, CheckpointNotFoundError) as exc:
            return _error(404, "not_found", str(exc))
        except LeafNotInCheckpointError as exc:
            return _error(409, "not_in_checkpoint", str(exc))
        return PlainTextResponse(proof.encode(), media_type=TLOG_PROOF_MEDIA_TYPE)

    @router.get("/v1/audit/proofs/consistency", response_model=None)
    async def consistency_proof(
        request: Request, _: Annotated[Any, Depends(require("compliance", "operator"))]
    ) -> Response:
        """RFC 9162 consistency proof from ``old_size`` to checkpoint ``new_size`` (or latest)."""
        try:
            old_size = _int(request.query_params.get("old_size"), "old_size")
            if old_size is None:
                raise _RequestError(400, "invalid_request", "old_size is required")
            new_size = _int(request.query_params.get("new_size"), "new_size")
            proof = await asyncio.to_thread(service.consistency_proof, old_size, new_size)
        except _RequestError as exc:
            return exc.response
        except CheckpointNotFoundError as exc:
            return _error(404, "not_found", str(exc))
        except (LeafNotInCheckpointError, MerkleError) as exc:
            return _error(400, "invalid_request", str(exc))
        return JSONResponse(proof.as_dict())

    @router.get("/v1/audit/coverage", response_model=None)
    async def coverage_report(
        request: Request, _: Annotated[Any, Depends(require("compliance"))]
    ) -> Response:
        """Evidence per control of ``framework`` in ``[since, until)``; controls with none."""
        try:
            framework, since, until = _scope(request)
            report = await asyncio.to_thread(coverage, service, framework, since, until)
        except _RequestError as exc:
            return exc.response
        except UnknownFrameworkError as exc:
            return _error(400, "unknown_framework", str(exc))
        return JSONResponse(report.as_dict())

    @router.post("/v1/audit/erasure", response_model=None)
    async def erasure(
        request: Request, principal: Annotated[Any, Depends(require("compliance"))]
    ) -> Response:
        """Crypto-shred a subject's (or a tenant's) payloads; the erasure is logged."""
        try:
            body = await _read_body(request, MAX_ERASURE_BODY)
            try:
                ask = ErasureRequest.model_validate_json(body)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(part) for part in first["loc"]) or "body"
                raise _RequestError(400, "invalid_request", f"{where}: {first['msg']}") from None
            result = await asyncio.to_thread(
                erase,
                service,
                tenant=ask.tenant,
                subject=ask.subject,
                actor=_actor(principal),
                reference=ask.reference,
            )
        except _RequestError as exc:
            return exc.response
        return JSONResponse(result.as_dict())

    @router.get("/v1/audit/evidence", response_model=None)
    async def evidence_archive(
        request: Request, principal: Annotated[Any, Depends(require("compliance"))]
    ) -> Response:
        """The evidence archive (tar.gz) for one ``control`` of ``framework`` in a period."""
        try:
            framework, since, until = _scope(request)
            control = request.query_params.get("control")
            if not control:
                raise _RequestError(400, "invalid_request", "control is required")
            archive = await asyncio.to_thread(
                _export, service, framework, control, since, until, _actor(principal)
            )
        except _RequestError as exc:
            return exc.response
        except UnknownFrameworkError as exc:
            return _error(400, "unknown_framework", str(exc))
        except UnknownControlError as exc:
            return _error(400, "unknown_control", str(exc))
        name = f"evidence-{framework.lower()}-{control.replace(':', '_')}.tar.gz"
        return Response(
            archive,
            media_type="application/gzip",
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )

    return router


def _export(
    service: AuditLog,
    framework: str,
    control: str,
    since: datetime,
    until: datetime,
    actor: str,
) -> bytes:
    with tempfile.TemporaryDirectory(prefix="nexus-evidence-") as directory:
        out = Path(directory) / "evidence.tar.gz"
        evidence.export(
            service,
            framework=framework,
            control=control,
            since=since,
            until=until,
            out=out,
            actor=actor,
        )
        return out.read_bytes()


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _RequestError(413, "too_large", f"the body is larger than {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _RequestError(413, "too_large", f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _intake_status(exc: IntakeError) -> int:
    if isinstance(exc, BatchTooLargeError):
        return 413
    if isinstance(exc, UnknownControlInEventError):
        return 422
    if isinstance(exc, EnforcerMismatchError):
        return 403
    return 400


def _scope(request: Request) -> tuple[str, datetime, datetime]:
    query = request.query_params
    framework = query.get("framework")
    if not framework:
        raise _RequestError(400, "invalid_request", "framework is required (soc2, iso27001, gdpr)")
    since = _time(query.get("since"), "since")
    until = _time(query.get("until"), "until")
    if until <= since:
        raise _RequestError(400, "invalid_request", "until must be after since")
    return framework, since, until


def _time(value: str | None, name: str) -> datetime:
    if not value:
        raise _RequestError(400, "invalid_request", f"{name} is required (RFC 3339 or YYYY-MM-DD)")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _RequestError(
            400, "invalid_request", f"{name} {value!r} is not an RFC 3339 time or a date"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _int(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    if not (value.isascii() and value.isdigit()) or int(value) > _MAX_INDEX:
        raise _RequestError(400, "invalid_request", f"{name} must be an integer in 0..{_MAX_INDEX}")
    return int(value)


def _bound(principal: Any, attribute: str) -> str | None:
    value = getattr(principal, attribute, None)
    return value if isinstance(value, str) and value else None


def _actor(principal: Any) -> str:
    name = getattr(principal, "name", None)
    return name if isinstance(name, str) and name else "unknown"
