"""Recorded decisions as replay sees them: an input to re-evaluate, or why there is none.

A record is *not replayable* when the policy could not re-evaluate it
faithfully: its payload was erased or purged, masking removed or replaced a
field the policy reads, OPA's non-deterministic built-in cache is missing (or
holds a built-in replay cannot feed back), the recorded evaluation failed, or
(found later, by the service) the revision that made it is unknown or does not
reproduce its recorded outcome. Such a record is counted apart, never as a
difference.

Masking is judged by what ``system.log.mask`` lists in the event's
``erased`` / ``masked`` paths: every path is blind unless it is one the
policy never reads (`POLICY_UNREAD_PATHS`), so a new mask rule makes records
not replayable rather than silently different. The bearer token, replaced by
its fingerprint (given back as ``Bearer <fingerprint>``), is no loss when the
plugin's ``nexus.credential_sha256`` is in the input: the identity rules look
API keys up by it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from nexus_audit.payloads import OpenedPayload, PayloadStatus
from nexus_audit.storage import StoredLeaf

__all__ = [
    "AUTHORIZATION_PATH",
    "POLICY_UNREAD_PATHS",
    "REPLAYED_BUILTINS",
    "REPLAY_SUBSTITUTED_PATHS",
    "NotReplayable",
    "ReplayRecord",
    "record_of",
    "tool_of_route",
]

_HTTP = "/input/attributes/request/http"
AUTHORIZATION_PATH = f"{_HTTP}/headers/authorization"
POLICY_UNREAD_PATHS = frozenset(
    {
        f"{_HTTP}/body",
        f"{_HTTP}/raw_body",
        f"{_HTTP}/rawBody",
        f"{_HTTP}/headerMap",
        f"{_HTTP}/header_map",
        f"{_HTTP}/headers/cookie",
        f"{_HTTP}/headers/x-api-key",
        f"{_HTTP}/path",
        "/input/parsed_query",
        "/input/parsed_body",
    }
)
"""Mask paths whose removal costs replay nothing: the policy reads ``parsed_path``, not the
path; a tool call's body, which masking keeps; and of a chat's body only its size (Envoy's
``size``, kept) and its output bounds, to which masking reduces ``parsed_body``."""
REPLAY_SUBSTITUTED_PATHS = frozenset(
    {"/nd_builtin_cache/opa.runtime", "/nd_builtin_cache/json.match_schema"}
)
"""Cache entries masking removes that replay does without: ``json.match_schema`` is a pure
function of its arguments, and of ``opa.runtime()`` the policy reads only
``config.labels.region``, which replay gives from the leaf's (checked) region."""
REPLAYED_BUILTINS = frozenset({"time.now_ns", "opa.runtime", "json.match_schema"})
"""Built-ins replay answers: ``time.now_ns`` with the recorded value, the others as above."""


class NotReplayable(StrEnum):
    PAYLOAD_ERASED = "payload_erased"
    PAYLOAD_PURGED = "payload_purged"
    MASKED_FIELD = "masked_field"
    MISSING_ND_BUILTIN_CACHE = "missing_nd_builtin_cache"
    UNREPLAYED_BUILTIN = "unreplayed_builtin"
    RECORDED_ERROR = "recorded_error"
    MISSING_REVISION = "missing_revision"
    BASELINE_NOT_REPRODUCED = "baseline_not_reproduced"
    HEALTH_ROUTED = "health_routed"
    """The decision routed around an unhealthy model: the health it saw was in the state
    bundle, which the record does not carry, so the baseline would route elsewhere."""
    SHED = "shed"
    """The enforcer refused without the policy's answer (overload, a deadline, a budget
    reservation): what it refused on was the enforcer's load, not the policy, so a
    revision cannot change it."""


@dataclass(frozen=True)
class ReplayRecord:
    """One recorded decision; ``blocked`` says why it cannot be replayed (None: it can)."""

    index: int
    decision_id: str
    time: datetime
    tenant: str
    region: str
    route: str
    tool: str | None
    revision: str | None
    """The ``nexus`` bundle revision that made the decision (None: not recorded)."""
    allowed: bool
    http_status: int | None
    input: Any
    result: Mapping[str, Any] | None
    now_ns: int
    """``time.now_ns()`` as the decision saw it (its cache, else the decision's time)."""
    blocked: NotReplayable | None
    detail: str | None = None


def tool_of_route(route: str) -> str | None:
    prefix, suffix = "/v1/tools/", ":invoke"
    if route.startswith(prefix) and route.endswith(suffix):
        tool = route[len(prefix) : -len(suffix)]
        return tool if tool and "/" not in tool else None
    return None


def record_of(leaf: StoredLeaf, opened: OpenedPayload, *, bundle: str = "nexus") -> ReplayRecord:
    """The replay view of one decision leaf and its payload."""
    entry = orjson.loads(leaf.entry)
    outcome = entry.get("outcome") or {}
    route = str(entry.get("http_path", ""))
    revisions = entry.get("bundles") or {}
    revision = revisions.get(bundle) or None
    time_ns = int(leaf.time.timestamp()) * 1_000_000_000 + leaf.time.microsecond * 1000
    base = ReplayRecord(
        index=leaf.index,
        decision_id=str(entry["decision_id"]),
        time=leaf.time,
        tenant=str(entry.get("tenant", "")),
        region=str(entry.get("region", "")),
        route=route,
        tool=tool_of_route(route),
        revision=str(revision) if revision else None,
        allowed=bool(outcome.get("allowed")),
        http_status=outcome.get("http_status"),
        input=None,
        result=None,
        now_ns=time_ns,
        blocked=None,
    )
    if isinstance(outcome.get("shed"), str):
        return replace(base, blocked=NotReplayable.SHED, detail=outcome["shed"][:300])
    if opened.status is PayloadStatus.ERASED:
        return replace(base, blocked=NotReplayable.PAYLOAD_ERASED)
    if opened.status is not PayloadStatus.PRESENT or opened.plaintext is None:
        return replace(base, blocked=NotReplayable.PAYLOAD_PURGED)
    payload = orjson.loads(opened.plaintext)
    result = payload.get("result")
    blocked, detail, now_ns = _replayability(payload, outcome, time_ns)
    if blocked is None and isinstance(result, dict):
        blocked, detail = _health_routed(result)
    return replace(
        base,
        input=_with_bearer(payload.get("input")) if blocked is None else payload.get("input"),
        result=result if isinstance(result, dict) else None,
        now_ns=now_ns,
        blocked=blocked,
        detail=detail,
    )


def _with_bearer(input_: Any) -> Any:
    """The input with its fingerprinted credential read as a bearer token again.

    Masking writes the fingerprint without the ``Bearer`` scheme; put back, the
    identity rules see a credential (not a JWT) and find the API key by the
    plugin's hash, as the live decision did.
    """
    if not isinstance(input_, dict):
        return input_
    try:
        headers = input_["attributes"]["request"]["http"]["headers"]
    except (KeyError, TypeError):
        return input_
    value = headers.get("authorization") if isinstance(headers, dict) else None
    if not isinstance(value, str) or value.lower().startswith("bearer "):
        return input_
    http = {**input_["attributes"]["request"]["http"],
            "headers": {**headers, "authorization": f"Bearer {value}"}}  # fmt: skip
    request = {**input_["attributes"]["request"], "http": http}
    return {**input_, "attributes": {**input_["attributes"], "request": request}}


NO_FALLBACK_RULE = "nexus.routing.no_fallback"


def _health_routed(result: Mapping[str, Any]) -> tuple[NotReplayable | None, str | None]:
    fallback = result.get("fallback")
    if isinstance(fallback, dict):
        return NotReplayable.HEALTH_ROUTED, str(fallback.get("message", ""))[:300] or None
    reasons = result.get("reasons")
    if isinstance(reasons, list) and any(
        isinstance(r, dict) and r.get("rule") == NO_FALLBACK_RULE for r in reasons
    ):
        return NotReplayable.HEALTH_ROUTED, NO_FALLBACK_RULE
    return None, None


def _replayability(
    payload: Mapping[str, Any], outcome: Mapping[str, Any], time_ns: int
) -> tuple[NotReplayable | None, str | None, int]:
    if "error" in payload or outcome.get("error") is not None:
        return NotReplayable.RECORDED_ERROR, "the recorded evaluation failed", time_ns
    input_ = payload.get("input")
    facts = input_.get("nexus") if isinstance(input_, dict) else None
    has_hash = isinstance(facts, dict) and isinstance(facts.get("credential_sha256"), str)
    for path in [*(payload.get("erased") or ()), *(payload.get("masked") or ())]:
        text = str(path)
        if text in POLICY_UNREAD_PATHS or text in REPLAY_SUBSTITUTED_PATHS:
            continue
        if text == AUTHORIZATION_PATH and has_hash:
            continue
        return NotReplayable.MASKED_FIELD, text, time_ns
    cache = payload.get("nd_builtin_cache")
    if not isinstance(cache, dict):
        return NotReplayable.MISSING_ND_BUILTIN_CACHE, None, time_ns
    for name in sorted(cache):
        if name not in REPLAYED_BUILTINS:
            return NotReplayable.UNREPLAYED_BUILTIN, name, time_ns
    now = cache.get("time.now_ns")
    if isinstance(now, dict) and now:
        value = next(iter(now.values()))
        if isinstance(value, int):
            return None, None, value
    return None, None, time_ns
