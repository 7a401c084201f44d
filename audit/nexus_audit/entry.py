"""Log entries: the compact, canonical JSON a leaf hash covers.

Canonical JSON here is what ``orjson`` writes with sorted keys: no
whitespace, UTF-8 (non-ASCII not escaped), integers in decimal, floats in
their shortest round-trip form. Entries themselves hold no floats, so any
JSON library that sorts keys by code point and writes compact UTF-8 gives the
same bytes; exported records carry the exact entry text anyway.

Two kinds of entry (``v`` is the entry format version):

decision
    ``{v, kind: "decision", decision_id, time, tenant, region, enforcer,
    bundles: {name: revision}, path, method, http_path,
    outcome: {allowed, http_status[, error][, shed]}, controls: [sorted qualified ids],
    payload_commitment}``
event
    ``{v, kind: "event", event_id, type, actor, time, controls,
    payload and/or payload_commitment}``

``payload_commitment`` is hex SHA-256(salt || canonical payload) with a
random 16-byte salt: the leaf commits to the full payload without revealing
it, and once the payload and its salt are erased the commitment says nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from nexus_contract.canonical import CanonicalJsonError, canonical_json

__all__ = [
    "ENTRY_VERSION",
    "SALT_SIZE",
    "CanonicalJsonError",
    "canonical_json",
    "commitment",
    "decision_entry",
    "event_entry",
    "format_time",
]

ENTRY_VERSION = 1
SALT_SIZE = 16


def commitment(salt: bytes, payload: bytes) -> str:
    """Hex SHA-256(salt || payload): the salted commitment a leaf carries."""
    return hashlib.sha256(salt + payload).hexdigest()


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a ``Z``: one spelling per instant."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def decision_entry(
    *,
    decision_id: str,
    time: datetime,
    tenant: str,
    region: str,
    enforcer: str,
    bundles: Mapping[str, str],
    path: str,
    method: str,
    http_path: str,
    allowed: bool,
    http_status: int | None,
    controls: Iterable[str],
    payload_commitment: str,
    error: str | None = None,
    shed: str | None = None,
    tenant_hash: str | None = None,
    claimed_time: datetime | None = None,
    flags: Iterable[str] = (),
) -> bytes:
    """The canonical entry of one policy decision.

    ``error`` is OPA's error code when the evaluation failed (a cancelled
    evaluation, say): the request was refused (fail closed) with no result.
    ``shed`` is why the enforcer refused without asking the policy (one of
    `nexus_contract.wire.SHED_REASONS`); for the reasons in ``SHED_UNANSWERED``
    the refusal never reached the client, so the leaf records a request Envoy
    asked about, not a decision anyone received.
    ``tenant_hash`` is the salted hash of a claimed tenant that is not one of
    the policy's (``tenant`` is then ``unknown``); ``claimed_time`` the
    enforcer's time of a decision stored with the receive time (``time``);
    ``flags`` name what was unusual. Each is omitted when unset.
    """
    outcome: dict[str, Any] = {"allowed": allowed, "http_status": http_status}
    if error is not None:
        outcome["error"] = error
    if shed is not None:
        outcome["shed"] = shed
    extra: dict[str, Any] = {}
    if tenant_hash is not None:
        extra["tenant_hash"] = tenant_hash
    if claimed_time is not None:
        extra["claimed_time"] = format_time(claimed_time)
    flag_list = sorted(set(flags))
    if flag_list:
        extra["flags"] = flag_list
    return canonical_json(
        {
            **extra,
            "v": ENTRY_VERSION,
            "kind": "decision",
            "decision_id": decision_id,
            "time": format_time(time),
            "tenant": tenant,
            "region": region,
            "enforcer": enforcer,
            "bundles": dict(bundles),
            "path": path,
            "method": method,
            "http_path": http_path,
            "outcome": outcome,
            "controls": sorted(set(controls)),
            "payload_commitment": payload_commitment,
        }
    )


def event_entry(
    *,
    event_id: str,
    event_type: str,
    actor: str,
    time: datetime,
    controls: Iterable[str],
    payload: Mapping[str, Any] | None = None,
    payload_commitment: str | None = None,
) -> bytes:
    """The canonical entry of a control-plane or audit event.

    ``payload`` is kept inline (forever: no personal data, no free text);
    ``payload_commitment`` commits to the rest, stored encrypted. At least one.
    """
    if payload is None and payload_commitment is None:
        raise ValueError("give payload, payload_commitment or both")
    body: dict[str, Any] = {
        "v": ENTRY_VERSION,
        "kind": "event",
        "event_id": event_id,
        "type": event_type,
        "actor": actor,
        "time": format_time(time),
        "controls": sorted(set(controls)),
    }
    if payload is not None:
        body["payload"] = dict(payload)
    if payload_commitment is not None:
        body["payload_commitment"] = payload_commitment
    return canonical_json(body)
