"""Decision-log intake: OPA's decision_logs uploads turned into leaves and sealed payloads.

OPA's plugin POSTs a gzip-compressed JSON array of events to
``<service url>/logs`` and retries the whole upload on any non-2xx answer,
so delivery is at least once. A batch is all or nothing: the first problem
in any event rejects it with the event's position (0-based, as in the array)
and field, and nothing is appended; a decision id already logged, or repeated
within the batch, is a duplicate and adds no leaf.

What is kept of a decision (see `nexus_audit.entry`): the leaf gets the
compact entry and its controls, the union of ``result.reasons[].controls``
and ``rule_labels[].controls``, every one of which must be in the catalogs.
The payload, the (already masked) ``input`` and ``result`` exactly as OPA
sent them, is stored encrypted under the data key of the request's tenant
(header ``x-nexus-tenant``), or of its subject when the request names one
(header ``x-nexus-subject``), so a subject's payloads can be erased alone.
The leaf keeps the HTTP path with record and subject ids replaced by
``{id}`` and no query string: leaves are kept forever, and the exact path
is in the erasable payload.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import ErrorDetails

from nexus_audit.catalog import Catalogs
from nexus_audit.entry import SALT_SIZE, commitment
from nexus_audit.entry import decision_entry as build_decision_entry
from nexus_audit.payloads import MAX_SUBJECT_LENGTH, MAX_TENANT_LENGTH, scope_name
from nexus_audit.storage import NewLeaf
from nexus_contract.canonical import CanonicalJsonError, canonical_json
from nexus_contract.errors import NexusError
from nexus_contract.wire import SUBJECT_HEADER, TENANT_HEADER

__all__ = [
    "TEMPLATED_COLLECTIONS",
    "BatchTooLargeError",
    "DecisionEvent",
    "DecisionResult",
    "EnforcerMismatchError",
    "IntakeError",
    "IntakeLimits",
    "InvalidEventError",
    "MalformedBatchError",
    "PreparedDecision",
    "UnknownControlInEventError",
    "decode_upload",
    "parse_events",
    "prepare_decisions",
]

TEMPLATED_COLLECTIONS = frozenset({"chats", "subjects"})
"""Path segments whose next segment is an id kept out of the leaf (``/v1/chats/{id}``)."""


class IntakeError(NexusError):
    """An upload was refused as a whole; ``code`` is the API's error code."""

    code = "invalid_batch"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedBatchError(IntakeError):
    """The body is not gzip, not JSON, or not a JSON array."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class BatchTooLargeError(IntakeError):
    """The body, compressed or decompressed, or its event count is over the limit."""

    code = "too_large"


class InvalidEventError(IntakeError):
    """One event breaks the decision-log contract; ``index`` and ``field`` say where."""

    code = "invalid_event"

    def __init__(self, index: int, field: str, problem: str, decision_id: str | None) -> None:
        which = f"event {index}" + (f" (decision {decision_id})" if decision_id else "")
        super().__init__(f"{which}: {field}: {problem}")
        self.index = index
        self.field = field


class UnknownControlInEventError(IntakeError):
    """An event names a control id the catalogs do not have."""

    code = "unknown_control"

    def __init__(self, index: int, decision_id: str, control: str, field: str) -> None:
        super().__init__(
            f"event {index} (decision {decision_id}): {field} names unknown control "
            f"{control!r}; fix the rule's METADATA labels or add the control to the catalogs"
        )
        self.index = index
        self.control = control


class EnforcerMismatchError(IntakeError):
    """An event claims a region or enforcer other than the caller's credentials are bound to."""

    code = "forbidden"


@dataclass(frozen=True)
class IntakeLimits:
    max_bytes: int
    """Largest body, compressed and decompressed."""
    max_events: int


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class OpaLabels(_Lenient):
    id: StrictStr
    region: StrictStr = Field(min_length=1)
    enforcer: StrictStr | None = None
    version: StrictStr | None = None


class BundleRevision(_Lenient):
    revision: StrictStr = ""


class RuleLabels(_Lenient):
    controls: list[StrictStr] = []


class DecisionEvent(_Lenient):
    """One event of OPA's decision_logs plugin, as far as the audit log relies on it."""

    decision_id: StrictStr = Field(min_length=1, max_length=128)
    labels: OpaLabels
    bundles: dict[str, BundleRevision] = {}
    path: StrictStr = Field(min_length=1, max_length=512)
    input: Any = None
    result: Any = None
    error: Any = None
    """Set instead of ``result`` when OPA's evaluation failed (e.g. eval_cancel_error)."""
    timestamp: AwareDatetime
    rule_labels: list[RuleLabels] | None = None


class Reason(_Lenient):
    rule: StrictStr | None = None
    controls: list[StrictStr] = []


class DecisionResult(_Lenient):
    """The decision contract (DESIGN.md): ``allowed``, ``http_status``, ``reasons``."""

    allowed: StrictBool
    http_status: int | None = Field(default=None, ge=100, le=599)
    reasons: list[Reason] = []


_EVENTS = TypeAdapter(list[DecisionEvent])


@dataclass(frozen=True)
class PreparedDecision:
    """A validated decision: its leaf, and the payload to seal once the leaf has an index."""

    leaf: NewLeaf
    tenant: str
    subject: str | None
    payload: bytes
    salt: bytes


def decode_upload(body: bytes, content_encoding: str | None, limits: IntakeLimits) -> bytes:
    """The JSON bytes of an upload: gunzipped when ``Content-Encoding: gzip``, size-checked."""
    if len(body) > limits.max_bytes:
        raise BatchTooLargeError(f"the upload is larger than {limits.max_bytes} bytes")
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding != "gzip":
        raise MalformedBatchError(
            "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported; use gzip"
        )
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(body, limits.max_bytes + 1)
    except zlib.error as exc:
        raise MalformedBatchError("invalid_gzip", f"the body is not valid gzip: {exc}") from None
    if len(out) > limits.max_bytes or decompressor.unconsumed_tail:
        raise BatchTooLargeError(f"the decompressed upload is larger than {limits.max_bytes} bytes")
    if not decompressor.eof:
        raise MalformedBatchError("invalid_gzip", "the gzip stream is truncated")
    return out


def parse_events(raw: bytes, limits: IntakeLimits) -> list[DecisionEvent]:
    """Validate a JSON array of decision events; the first problem rejects the batch.

    The standard library parses (integers of any size stay exact, and
    ``NaN``/``Infinity`` are refused) and pydantic validates the objects.
    """
    try:
        document = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise MalformedBatchError("invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(document, list):
        raise MalformedBatchError(
            "invalid_json", "the body must be a JSON array of decision-log events"
        )
    if len(document) > limits.max_events:
        raise BatchTooLargeError(
            f"the upload holds {len(document)} events; at most {limits.max_events} are accepted"
        )
    try:
        return _EVENTS.validate_python(document)
    except ValidationError as exc:
        raise _event_error(exc, document) from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def prepare_decisions(
    events: Sequence[DecisionEvent],
    catalogs: Catalogs,
    *,
    region: str | None = None,
    enforcer: str | None = None,
) -> list[PreparedDecision]:
    """Check every event and build its leaf and payload.

    ``region`` / ``enforcer``, when given, are what the uploader's
    credentials are bound to; an event claiming another is refused.
    """
    salts = os.urandom(SALT_SIZE * len(events))
    known: dict[str, bool] = {}
    prepared = []
    for index, event in enumerate(events):
        result = _result(index, event)
        event_enforcer = event.labels.enforcer or event.labels.id
        if region is not None and event.labels.region != region:
            raise EnforcerMismatchError(
                f"event {index} (decision {event.decision_id}) is from region "
                f"{event.labels.region!r}, but the uploader's credentials are for {region!r}"
            )
        if enforcer is not None and event_enforcer != enforcer:
            raise EnforcerMismatchError(
                f"event {index} (decision {event.decision_id}) is from enforcer "
                f"{event_enforcer!r}, but the uploader's credentials are for {enforcer!r}"
            )
        controls = _controls(index, event, result, catalogs, known)
        http = _http_request(event.input)
        headers = http.get("headers")
        headers = headers if isinstance(headers, dict) else {}
        tenant = scope_name(_string(headers.get(TENANT_HEADER)), MAX_TENANT_LENGTH)
        subject = _string(headers.get(SUBJECT_HEADER)) or None
        if subject is not None:
            subject = scope_name(subject, MAX_SUBJECT_LENGTH)
        try:
            payload = canonical_json(
                {"input": event.input, "result": event.result, "error": event.error}
                if event.error is not None
                else {"input": event.input, "result": event.result}
            )
        except CanonicalJsonError as exc:
            raise InvalidEventError(index, "input", str(exc), event.decision_id) from None
        salt = salts[index * SALT_SIZE : (index + 1) * SALT_SIZE]
        allowed = result if isinstance(result, bool) else result.allowed
        http_status = None if isinstance(result, bool) else result.http_status
        entry = build_decision_entry(
            decision_id=event.decision_id,
            time=event.timestamp,
            tenant=tenant,
            region=event.labels.region,
            enforcer=event_enforcer,
            bundles={name: bundle.revision for name, bundle in event.bundles.items()},
            path=event.path,
            method=_string(http.get("method")),
            http_path=_leaf_path(_string(http.get("path"))),
            allowed=allowed,
            http_status=http_status,
            controls=controls,
            payload_commitment=commitment(salt, payload),
            error=_error_code(event),
        )
        leaf = NewLeaf(
            entry=entry,
            kind="decision",
            time=event.timestamp,
            decision_id=event.decision_id,
            tenant=tenant,
            allowed=allowed,
            controls=controls,
        )
        prepared.append(PreparedDecision(leaf, tenant, subject, payload, salt))
    return prepared


def _error_code(event: DecisionEvent) -> str | None:
    """The error an event carries: a failed evaluation, or a refusal the plugin made itself.

    The ext_authz plugin refuses some requests before the policy runs (a
    malformed target, a body with duplicate keys) and logs them with both a
    result (the 400 it answered) and an error naming why; the code is kept
    either way, so those refusals are told apart from the policy's.
    """
    if event.error is None:
        return None
    code = event.error.get("code") if isinstance(event.error, dict) else None
    return code if isinstance(code, str) and code else "evaluation_error"


def _result(index: int, event: DecisionEvent) -> DecisionResult | bool:
    if event.result is None and _error_code(event) is not None:
        # The ext_authz plugin answered Envoy with an error: Envoy refused it.
        return DecisionResult(allowed=False)
    if event.result is None:
        raise InvalidEventError(
            index, "result", "Field required (or an error from OPA)", event.decision_id
        )
    if isinstance(event.result, bool):
        return event.result
    if not isinstance(event.result, dict):
        raise InvalidEventError(
            index,
            "result",
            "must be a decision object {allowed, http_status, reasons} or a boolean",
            event.decision_id,
        )
    try:
        return DecisionResult.model_validate(event.result)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(["result", *(str(part) for part in first["loc"])])
        raise InvalidEventError(index, field, _problem(first), event.decision_id) from None


def _controls(
    index: int,
    event: DecisionEvent,
    result: DecisionResult | bool,
    catalogs: Catalogs,
    known: dict[str, bool],
) -> tuple[str, ...]:
    found: dict[str, str] = {}
    if not isinstance(result, bool):
        for position, reason in enumerate(result.reasons):
            for control in reason.controls:
                found.setdefault(control, f"result.reasons.{position}.controls")
    for position, labels in enumerate(event.rule_labels or ()):
        for control in labels.controls:
            found.setdefault(control, f"rule_labels.{position}.controls")
    for control, field in found.items():
        is_known = known.get(control)
        if is_known is None:
            is_known = known[control] = catalogs.is_known(control)
        if not is_known:
            raise UnknownControlInEventError(index, event.decision_id, control, field)
    return tuple(sorted(found))


def _http_request(document: Any) -> Mapping[str, Any]:
    """``input.attributes.request.http`` of an ext_authz input, or an empty mapping."""
    node = document
    for key in ("attributes", "request", "http"):
        if not isinstance(node, dict):
            return {}
        node = node.get(key)
    return node if isinstance(node, dict) else {}


def _leaf_path(path: str) -> str:
    segments = path.split("?", 1)[0].split("/")
    for position in range(1, len(segments)):
        if segments[position - 1] in TEMPLATED_COLLECTIONS and segments[position]:
            segments[position] = "{id}"
    return "/".join(segments)


def _string(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _event_error(exc: ValidationError, document: list[Any]) -> IntakeError:
    first = exc.errors()[0]
    location = first["loc"]
    index = location[0] if location and isinstance(location[0], int) else 0
    field = ".".join(str(part) for part in location[1:]) or "event"
    event = document[index] if index < len(document) else None
    decision_id = event.get("decision_id") if isinstance(event, dict) else None
    named = decision_id if isinstance(decision_id, str) and decision_id else None
    return InvalidEventError(index, field, _problem(first), named)


def _problem(error: ErrorDetails) -> str:
    return str(error["msg"])
