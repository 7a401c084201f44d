"""Decision-log intake: OPA's decision_logs uploads, checked and turned into leaves.

OPA POSTs a gzip-compressed JSON array of events and retries an upload that
failed, so delivery is at least once. A batch is all or nothing: the first
problem in any event rejects it with the event's position (0-based, as in the
array) and field, and nothing is appended; a decision id already logged with
the same content, or repeated within the batch, is a duplicate and adds no
leaf. The same decision id with *other* content is refused
(`DecisionConflictError`, 409): a decision, once logged, cannot be restated.

The upload is decoded as a stream (`read_events`): gzip is inflated a chunk at
a time, events are parsed one by one, and the event count, the inflated
bytes and each event's size are checked while decoding, so a small upload
that inflates to millions of events is refused after the first one over the
limit, in bounded memory. A second gzip member or any byte after the array is
refused: what was counted must be all there is.

Only true decisions enter the log (`IntakeRules`): the uploader's
credential, its ``x-nexus-enforcer`` header and each event's
``labels.enforcer`` / ``labels.region`` must agree; a decision time outside
the window around the audit service's clock is refused or flagged (stored with
the receive time, the claimed time kept in the entry).

What is kept of a decision (see `nexus_audit.entry`): the leaf gets the
compact entry and its controls, the union of ``result.reasons[].controls``
and ``rule_labels[].controls``, every one of which must be in the catalogs.
Leaves are kept forever, so nothing a client controls reaches them
verbatim: the tenant is a known tenant id or the `UNKNOWN_TENANT` marker
with a salted hash of the claim, and the HTTP path is percent-decoded, then
every segment that is not a known route word is replaced by ``{id}``. The
payload, the (already masked) ``input`` and ``result`` exactly as OPA sent
them, is stored encrypted under the data key of the request's tenant (header
``x-nexus-tenant``), or of its subject when the request names one (header
``x-nexus-subject``), so a subject's payloads can be erased alone.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import urllib.parse
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from nexus_audit.catalog import Catalogs
from nexus_audit.entry import SALT_SIZE, commitment
from nexus_audit.entry import decision_entry as build_decision_entry
from nexus_audit.payloads import MAX_SUBJECT_LENGTH, MAX_TENANT_LENGTH, scope_name
from nexus_audit.storage import NewLeaf
from nexus_audit.tiles import MAX_ENTRY_SIZE
from nexus_contract.canonical import CanonicalJsonError, canonical_json
from nexus_contract.errors import NexusError
from nexus_contract.wire import SHED_REASONS, SUBJECT_HEADER, TENANT_HEADER

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "LEAF_PATH_WORDS",
    "UNKNOWN_TENANT",
    "BatchTooLargeError",
    "DecisionConflictError",
    "DecisionEvent",
    "DecisionResult",
    "EnforcerMismatchError",
    "IntakeError",
    "IntakeLimits",
    "IntakeRules",
    "InvalidEventError",
    "MalformedBatchError",
    "PreparedDecision",
    "TimeOutsideWindowError",
    "TimeSkewAction",
    "UnknownControlInEventError",
    "Uploader",
    "check_event_source",
    "check_uploader",
    "decode_upload",
    "leaf_path",
    "parse_events",
    "prepare_decisions",
    "read_events",
]

SHED_UNSPECIFIED = "unspecified"
"""The leaf's shed reason when an older enforcer logged only that it shed (``shed: true``)."""
UNKNOWN_TENANT = "unknown"
"""The leaf's tenant when the claimed tenant is not one of the policy in force."""

LEAF_PATH_WORDS = frozenset(
    {
        "v1", "v2", "chat", "completions", "chats", "subjects", "tools", "invoke", "models",
        "embeddings", "messages", "files", "responses", "usage", "prompts", "agents", "runs",
        "threads", "audio", "images", "moderations", "batches", "erase", "export",
    }
)  # fmt: skip
"""Path segments kept in a leaf; every other segment becomes ``{id}`` (after decoding)."""

DEFAULT_MAX_EVENT_BYTES = 1 << 20
_CHUNK = 256 * 1024
_WHITESPACE = frozenset(" \t\r\n")


class IntakeError(NexusError):
    """An upload was refused as a whole; ``code`` is the API's error code."""

    code = "invalid_batch"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedBatchError(IntakeError):
    """The body is not gzip, not JSON, or not a JSON array (or has bytes after it)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class BatchTooLargeError(IntakeError):
    """The body, compressed or inflated, one event, or the event count is over the limit."""

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
    """The credential, the ``x-nexus-enforcer`` header and an event's labels disagree."""

    code = "forbidden"

    def __init__(self, message: str, *, claimed: str | None = None) -> None:
        super().__init__(message)
        self.claimed = claimed


def check_event_source(
    index: int, what: str, event: DecisionEvent, region: str | None, enforcer: str | None
) -> str:
    """The enforcer ``event`` claims to come from; `EnforcerMismatchError` unless it is the
    uploader's (its credentials' region and enforcer, when they name one). ``what`` names
    the event in the message (a decision, a receipt)."""
    claimed = event.labels.enforcer or event.labels.id
    if region is not None and event.labels.region != region:
        raise EnforcerMismatchError(
            f"event {index} ({what} {event.decision_id}) is from region "
            f"{event.labels.region!r}, but the uploader's credentials are for {region!r}",
            claimed=claimed,
        )
    if enforcer is not None and claimed != enforcer:
        raise EnforcerMismatchError(
            f"event {index} ({what} {event.decision_id}) is from enforcer {claimed!r}, but the "
            f"upload is by {enforcer!r}",
            claimed=claimed,
        )
    return claimed


class TimeOutsideWindowError(IntakeError):
    """A decision's time is too far from the audit service's clock (when refusing)."""

    code = "time_outside_window"


class DecisionConflictError(IntakeError):
    """A decision id already logged (or repeated in the batch) with other content."""

    code = "decision_conflict"

    def __init__(self, decision_id: str, message: str) -> None:
        super().__init__(message)
        self.decision_id = decision_id


@dataclass(frozen=True)
class IntakeLimits:
    max_bytes: int
    """Largest body as received (compressed)."""
    max_events: int
    max_inflated_bytes: int | None = None
    """Largest inflated body, counted while inflating; default 8 x ``max_bytes``."""
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    """Largest single event's JSON text."""

    @property
    def inflated_limit(self) -> int:
        return self.max_inflated_bytes or 8 * self.max_bytes


class TimeSkewAction(StrEnum):
    REFUSE = "refuse"
    FLAG = "flag"


@dataclass(frozen=True)
class IntakeRules:
    """What makes a decision true enough to log, beyond its shape."""

    max_age: timedelta = timedelta(days=1)
    """A decision older than this (by its own timestamp) is outside the window."""
    max_ahead: timedelta = timedelta(seconds=60)
    """A decision ahead of the audit clock by more than this is outside the window."""
    time_skew: TimeSkewAction = TimeSkewAction.FLAG
    require_bound_credentials: bool = False
    """Refuse uploads by region-wide credentials (every enforcer gets its own token)."""


@dataclass(frozen=True)
class Uploader:
    """Who uploads: the credential's binding and the ``x-nexus-enforcer`` header it sent."""

    region: str | None
    enforcer_id: str | None
    header: str | None


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class OpaLabels(_Lenient):
    id: StrictStr
    region: StrictStr = Field(min_length=1, max_length=128)
    enforcer: StrictStr | None = Field(default=None, max_length=128)
    version: StrictStr | None = None


class BundleRevision(_Lenient):
    revision: StrictStr = Field(default="", max_length=128)


class RuleLabels(_Lenient):
    controls: list[StrictStr] = []


class DecisionEvent(_Lenient):
    """One event of OPA's decision_logs plugin, as far as the audit log relies on it."""

    decision_id: StrictStr = Field(min_length=1, max_length=128)
    labels: OpaLabels
    bundles: dict[str, BundleRevision] = Field(default={}, max_length=16)
    path: StrictStr = Field(min_length=1, max_length=512)
    input: Any = None
    result: Any = None
    error: Any = None
    """Set instead of ``result`` when OPA's evaluation failed (e.g. eval_cancel_error)."""
    timestamp: AwareDatetime
    rule_labels: list[RuleLabels] | None = None
    nd_builtin_cache: dict[str, Any] | None = None
    """OPA's non-deterministic built-in results (``decision_logs.nd_builtin_cache``), masked."""
    erased: list[StrictStr] | None = Field(default=None, max_length=256)
    """Paths ``system.log.mask`` removed from the event."""
    masked: list[StrictStr] | None = Field(default=None, max_length=256)
    """Paths ``system.log.mask`` replaced in the event."""


class Reason(_Lenient):
    rule: StrictStr | None = None
    controls: list[StrictStr] = []


class DecisionResult(_Lenient):
    """The decision contract (DESIGN.md): ``allowed``, ``http_status``, ``reasons``."""

    allowed: StrictBool
    http_status: int | None = Field(default=None, ge=100, le=599)
    reasons: list[Reason] = []
    shed: StrictStr | None = None
    """Set by the ext_authz plugin when it refused without asking the policy: the reason
    (`SHED_REASONS`). ``true`` is what enforcers built before the reason was logged sent;
    it is read as ``unspecified``, so a rolling upgrade refuses none of their decisions."""

    @field_validator("shed", mode="before")
    @classmethod
    def _shed_reason(cls, value: Any) -> Any:
        if value is False:
            return None
        if value is True:
            return SHED_UNSPECIFIED
        if isinstance(value, str) and value not in SHED_REASONS:
            raise ValueError(f"shed must be one of {', '.join(SHED_REASONS)}")
        return value

    @model_validator(mode="after")
    def _shed_is_a_refusal(self) -> DecisionResult:
        if self.shed is not None and self.allowed:
            raise ValueError("a shed request cannot be allowed")
        return self


@dataclass(frozen=True)
class ParsedEvent:
    """A validated event and the canonical bytes of what was sent (for content MACs)."""

    event: DecisionEvent
    content: bytes


@dataclass(frozen=True)
class PreparedDecision:
    """A validated decision: its leaf, and the payload to seal once the leaf has an index."""

    leaf: NewLeaf
    tenant: str
    subject: str | None
    payload: bytes
    salt: bytes
    content_mac: bytes | None = None
    flags: tuple[str, ...] = field(default=())


# --- the uploader ---------------------------------------------------------------------


def check_uploader(uploader: Uploader, rules: IntakeRules) -> str:
    """The enforcer id the upload speaks for; raise `EnforcerMismatchError` if they disagree."""
    header = uploader.header
    if not header:
        raise EnforcerMismatchError(
            "the upload names no enforcer: OPA must send the x-nexus-enforcer header"
        )
    if uploader.enforcer_id is not None and uploader.enforcer_id != header:
        raise EnforcerMismatchError(
            f"the credential belongs to enforcer {uploader.enforcer_id!r}, but the upload "
            f"says it is {header!r}",
            claimed=header,
        )
    if uploader.enforcer_id is None and rules.require_bound_credentials:
        raise EnforcerMismatchError(
            "region-wide credentials may not upload decisions: give every enforcer its own "
            "token (bound to its id)",
            claimed=header,
        )
    return header


# --- decoding, as a stream ----------------------------------------------------------


def read_events(
    body: bytes, content_encoding: str | None, limits: IntakeLimits
) -> list[ParsedEvent]:
    """Inflate, parse and validate an upload event by event, limits checked as it decodes."""
    if len(body) > limits.max_bytes:
        raise BatchTooLargeError(f"the upload is larger than {limits.max_bytes} bytes")
    encoding = (content_encoding or "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise MalformedBatchError(
            "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported; use gzip"
        )
    chunks = _inflate(body, limits) if encoding == "gzip" else _slices(body)
    parsed: list[ParsedEvent] = []
    for index, document in enumerate(_array_items(chunks, limits)):
        if index >= limits.max_events:
            raise BatchTooLargeError(
                f"the upload holds more than {limits.max_events} events; at most "
                f"{limits.max_events} are accepted per upload"
            )
        parsed.append(_validated(index, document))
    return parsed


def decode_upload(body: bytes, content_encoding: str | None, limits: IntakeLimits) -> bytes:
    """The inflated bytes of an upload (whole; for tools and tests, not the intake path)."""
    if (content_encoding or "identity").strip().lower() == "gzip":
        return b"".join(_inflate(body, limits))
    if len(body) > limits.max_bytes:
        raise BatchTooLargeError(f"the upload is larger than {limits.max_bytes} bytes")
    return body


def parse_events(raw: bytes, limits: IntakeLimits) -> list[DecisionEvent]:
    """Validate a JSON array of decision events (uncompressed); the first problem rejects it."""
    return [parsed.event for parsed in read_events(raw, None, limits)]


def _slices(body: bytes) -> Iterator[bytes]:
    for start in range(0, len(body), _CHUNK):
        yield body[start : start + _CHUNK]


def _inflate(body: bytes, limits: IntakeLimits) -> Iterator[bytes]:
    """One gzip member, inflated a chunk at a time; trailing bytes or a second member refused."""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    total = 0
    pending = body
    while True:
        try:
            out = decompressor.decompress(pending, _CHUNK)
        except zlib.error as exc:
            raise MalformedBatchError(
                "invalid_gzip", f"the body is not valid gzip: {exc}"
            ) from None
        pending = decompressor.unconsumed_tail
        total += len(out)
        if total > limits.inflated_limit:
            raise BatchTooLargeError(
                f"the decompressed upload is larger than {limits.inflated_limit} bytes"
            )
        if out:
            yield out
        if decompressor.eof:
            if decompressor.unused_data:
                raise MalformedBatchError(
                    "invalid_gzip",
                    "bytes follow the gzip member (a second member or trailing data); "
                    "an upload is exactly one gzip member",
                )
            return
        if not pending and not out:
            raise MalformedBatchError("invalid_gzip", "the gzip stream is truncated")


def _array_items(chunks: Iterator[bytes], limits: IntakeLimits) -> Iterator[Any]:
    """The items of the JSON array the chunks spell, parsed one at a time."""
    decoder = json.JSONDecoder(parse_constant=_refuse_constant)
    text_decoder = codecs.getincrementaldecoder("utf-8")()
    buffer = ""
    position = 0
    exhausted = False

    def more() -> bool:
        nonlocal buffer, position, exhausted
        if exhausted:
            return False
        try:
            chunk = next(chunks)
        except StopIteration:
            exhausted = True
            try:
                buffer = buffer[position:] + text_decoder.decode(b"", final=True)
            except UnicodeDecodeError as exc:
                raise MalformedBatchError("invalid_json", f"the body is not UTF-8: {exc}") from None
            position = 0
            return True
        try:
            buffer = buffer[position:] + text_decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            raise MalformedBatchError("invalid_json", f"the body is not UTF-8: {exc}") from None
        position = 0
        return True

    def skip_whitespace() -> str | None:
        nonlocal position
        while True:
            while position < len(buffer) and buffer[position] in _WHITESPACE:
                position += 1
            if position < len(buffer):
                return buffer[position]
            if not more():
                return None

    if skip_whitespace() != "[":
        raise MalformedBatchError(
            "invalid_json", "the body must be a JSON array of decision-log events"
        )
    position += 1
    expect_item = True
    first = True
    while True:
        char = skip_whitespace()
        if char is None:
            raise MalformedBatchError(
                "invalid_json", "the body is not valid JSON: unterminated array"
            )
        if char == "]" and (first or not expect_item):
            position += 1
            break
        if not expect_item:
            if char != ",":
                raise MalformedBatchError(
                    "invalid_json", f"the body is not valid JSON: expected ',' or ']', got {char!r}"
                )
            position += 1
            expect_item = True
            continue
        while True:
            try:
                item, end = decoder.raw_decode(buffer, position)
            except RecursionError:
                raise MalformedBatchError("invalid_json", "the body nests too deeply") from None
            except json.JSONDecodeError as exc:
                if len(buffer) - position > limits.max_event_bytes:
                    raise BatchTooLargeError(
                        f"an event is larger than {limits.max_event_bytes} bytes"
                    ) from None
                if not more():
                    raise MalformedBatchError(
                        "invalid_json", f"the body is not valid JSON: {exc}"
                    ) from None
                continue
            except ValueError as exc:
                raise MalformedBatchError(
                    "invalid_json", f"the body is not valid JSON: {exc}"
                ) from None
            if end - position > limits.max_event_bytes:
                raise BatchTooLargeError(f"an event is larger than {limits.max_event_bytes} bytes")
            position = end
            break
        yield item
        first = False
        expect_item = False
    if skip_whitespace() is not None:
        raise MalformedBatchError(
            "invalid_json", "bytes follow the JSON array; an upload is exactly one array"
        )


def _validated(index: int, document: Any) -> ParsedEvent:
    try:
        event = DecisionEvent.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        field_name = ".".join(str(part) for part in first["loc"]) or "event"
        decision_id = document.get("decision_id") if isinstance(document, dict) else None
        named = decision_id if isinstance(decision_id, str) and decision_id else None
        raise InvalidEventError(index, field_name, _problem(first), named) from None
    try:
        content = canonical_json(document)
    except CanonicalJsonError as exc:
        where = "event"
        if isinstance(document, dict):
            for key in ("input", "result", "error"):
                try:
                    canonical_json(document.get(key))
                except CanonicalJsonError:
                    where = key
                    break
        raise InvalidEventError(index, where, str(exc), event.decision_id) from None
    return ParsedEvent(event, content)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# --- preparing leaves ------------------------------------------------------------------


def prepare_decisions(
    events: Sequence[DecisionEvent | ParsedEvent],
    catalogs: Catalogs,
    *,
    region: str | None = None,
    enforcer: str | None = None,
    now: datetime | None = None,
    rules: IntakeRules | None = None,
    known_tenants: frozenset[str] | None = None,
    known_tools: frozenset[str] = frozenset(),
    tenant_hash: Callable[[str], str] | None = None,
    content_mac: Callable[[bytes], bytes] | None = None,
    positions: Sequence[int] | None = None,
) -> list[PreparedDecision]:
    """Check every event and build its leaf and payload.

    ``region`` / ``enforcer``, when given, are what the uploader's credential
    and header say; an event claiming another is refused. ``now`` and
    ``rules`` decide the time window; ``known_tenants`` (None: keep the claim,
    for callers without a policy) and ``tenant_hash`` the leaf's tenant. ``positions`` are
    the events' places in the upload (for messages) when they are not 0, 1, 2...
    """
    rules = rules or IntakeRules()
    salts = os.urandom(SALT_SIZE * len(events))
    known: dict[str, bool] = {}
    prepared = []
    for position, item in enumerate(events):
        index = position if positions is None else positions[position]
        event = item.event if isinstance(item, ParsedEvent) else item
        content = item.content if isinstance(item, ParsedEvent) else None
        result = _result(index, event)
        event_enforcer = check_event_source(index, "decision", event, region, enforcer)
        flags: list[str] = []
        time = event.timestamp
        claimed_time = None
        if now is not None and not now - rules.max_age <= event.timestamp <= now + rules.max_ahead:
            if rules.time_skew is TimeSkewAction.REFUSE:
                raise TimeOutsideWindowError(
                    f"event {index} (decision {event.decision_id}): its time "
                    f"{event.timestamp.isoformat()} is outside the window of "
                    f"{rules.max_age} before and {rules.max_ahead} after the audit clock"
                )
            flags.append("time_outside_window")
            claimed_time = event.timestamp
            time = now
        controls = _controls(index, event, result, catalogs, known)
        http = _http_request(event.input)
        headers = http.get("headers")
        headers = headers if isinstance(headers, dict) else {}
        claimed_tenant = _string(headers.get(TENANT_HEADER))
        leaf_tenant, tenant_digest, scope = _tenant(claimed_tenant, known_tenants, tenant_hash)
        if tenant_digest is not None:
            flags.append("unknown_tenant")
        subject = _string(headers.get(SUBJECT_HEADER)) or None
        if subject is not None:
            subject = scope_name(subject, MAX_SUBJECT_LENGTH)
        try:
            payload = canonical_json(_payload_of(event))
        except CanonicalJsonError as exc:
            raise InvalidEventError(index, "input", str(exc), event.decision_id) from None
        salt = salts[position * SALT_SIZE : (position + 1) * SALT_SIZE]
        allowed = result if isinstance(result, bool) else result.allowed
        http_status = None if isinstance(result, bool) else result.http_status
        shed = None if isinstance(result, bool) else result.shed
        entry = build_decision_entry(
            decision_id=event.decision_id,
            time=time,
            tenant=leaf_tenant,
            region=event.labels.region,
            enforcer=event_enforcer,
            bundles={name: bundle.revision for name, bundle in event.bundles.items()},
            path=event.path,
            method=_method(http.get("method")),
            http_path=leaf_path(_string(http.get("path")), known_tools),
            allowed=allowed,
            http_status=http_status,
            controls=controls,
            payload_commitment=commitment(salt, payload),
            error=_error_code(event),
            shed=shed,
            tenant_hash=tenant_digest,
            claimed_time=claimed_time,
            flags=tuple(flags),
        )
        if len(entry) > MAX_ENTRY_SIZE:
            raise InvalidEventError(
                index,
                "event",
                f"its log entry would be {len(entry)} bytes, more than {MAX_ENTRY_SIZE}",
                event.decision_id,
            )
        mac = None if content is None or content_mac is None else content_mac(content)
        leaf = NewLeaf(
            entry=entry,
            kind="decision",
            time=time,
            decision_id=event.decision_id,
            tenant=leaf_tenant,
            allowed=allowed,
            controls=controls,
            content_mac=mac,
        )
        prepared.append(PreparedDecision(leaf, scope, subject, payload, salt, mac, tuple(flags)))
    return prepared


def _payload_of(event: DecisionEvent) -> dict[str, Any]:
    """What replay needs besides the input: the built-in cache and what masking took out."""
    payload: dict[str, Any] = {"input": event.input, "result": event.result}
    if event.error is not None:
        payload["error"] = event.error
    if event.nd_builtin_cache is not None:
        payload["nd_builtin_cache"] = event.nd_builtin_cache
    if event.erased:
        payload["erased"] = event.erased
    if event.masked:
        payload["masked"] = event.masked
    return payload


def _tenant(
    claimed: str,
    known_tenants: frozenset[str] | None,
    tenant_hash: Callable[[str], str] | None,
) -> tuple[str, str | None, str]:
    """(leaf tenant, salted hash of an unknown claim, data-key scope)."""
    if known_tenants is None:
        name = scope_name(claimed, MAX_TENANT_LENGTH)
        return name, None, name
    if claimed in known_tenants:
        return claimed, None, claimed
    digest = (
        tenant_hash(claimed)
        if tenant_hash is not None
        else hashlib.sha256(claimed.encode()).hexdigest()[:32]
    )
    return UNKNOWN_TENANT, digest, f"{UNKNOWN_TENANT}:{digest}"


def leaf_path(path: str, tools: frozenset[str] = frozenset()) -> str:
    """The request path as a leaf keeps it: no query, decoded, ids replaced by ``{id}``.

    A tool id of the policy's catalog (``tools``) is kept after ``tools``: it is
    an author's word, and the console finds decisions by tool through it.
    """
    raw = path.split("?", 1)[0].split("#", 1)[0]
    decoded = raw
    for _ in range(3):  # %252F decodes twice; stop once stable
        again = urllib.parse.unquote(decoded)
        if again == decoded:
            break
        decoded = again
    out: list[str] = []
    for segment in decoded.split("/"):
        if not segment:
            out.append(segment)
            continue
        name, colon, verb = segment.partition(":")
        after_tools = bool(out) and out[-1] == "tools"
        kept = name if name in LEAF_PATH_WORDS or (after_tools and name in tools) else "{id}"
        if colon:
            kept += ":" + (verb if verb in LEAF_PATH_WORDS else "{id}")
        out.append(kept)
    return "/".join(out)


def _method(value: Any) -> str:
    method = _string(value).upper()
    return method if method.isalpha() and len(method) <= 16 else ""


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
    if isinstance(code, str) and code and len(code) <= 64 and code.replace("_", "").isalnum():
        return code
    return "evaluation_error"


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
        field_name = ".".join(["result", *(str(part) for part in first["loc"])])
        raise InvalidEventError(index, field_name, _problem(first), event.decision_id) from None


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
    for control, field_name in found.items():
        is_known = known.get(control)
        if is_known is None:
            is_known = known[control] = catalogs.is_known(control)
        if not is_known:
            raise UnknownControlInEventError(index, event.decision_id, control, field_name)
    return tuple(sorted(found))


def _http_request(document: Any) -> Mapping[str, Any]:
    """``input.attributes.request.http`` of an ext_authz input, or an empty mapping."""
    node = document
    for key in ("attributes", "request", "http"):
        if not isinstance(node, dict):
            return {}
        node = node.get(key)
    return node if isinstance(node, dict) else {}


def _string(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _problem(error: ErrorDetails) -> str:
    return str(error["msg"])
