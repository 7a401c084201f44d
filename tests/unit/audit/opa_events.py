"""Decision-log events shaped as OPA's decision_logs plugin sends them, for the audit tests."""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from nexus_contract.wire import DECISION_PATH, RECEIPT_PATH, RECEIPT_SHED_DELIVERED, SHADOW_PATH

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def decision_event(
    *,
    decision_id: str | None = None,
    tenant: str = "acme",
    subject: str | None = None,
    allowed: bool = False,
    controls: tuple[str, ...] = ("SOC2:CC6.1", "ISO27001:A.5.15"),
    rule_labels: tuple[str, ...] | None = None,
    method: str = "POST",
    path: str = "/v1/chat/completions",
    time: datetime = T0,
    region: str = "eu-west-1",
    enforcer: str = "eu-west-1-a",
) -> dict[str, Any]:
    """One event: a denial lists ``controls`` in its reason, an allowed one in rule_labels."""
    headers = {"authorization": "sha256:3608bca1e44ea6c4", "x-nexus-tenant": tenant}
    if subject is not None:
        headers["x-nexus-subject"] = subject
    reasons = (
        []
        if allowed
        else [
            {
                "rule": "nexus.rbac.permission_denied",
                "message": "apikey:acme-prod-1 lacks permission",
                "controls": list(controls),
            }
        ]
    )
    labels = rule_labels if rule_labels is not None else (controls if allowed else ())
    event: dict[str, Any] = {
        "decision_id": decision_id or str(uuid.uuid4()),
        "labels": {
            "id": "0f6b7c4e-1d6e-4c36-9d5b-3c1f4f5ad001",
            "region": region,
            "enforcer": enforcer,
            "version": "1.22.2",
        },
        "bundles": {"nexus": {"revision": "1b74bc1b0c4a"}},
        "path": DECISION_PATH,
        "input": {
            "attributes": {
                "request": {"http": {"method": method, "path": path, "headers": headers}}
            },
            "parsed_path": [part for part in path.split("?")[0].split("/") if part],
        },
        "result": {
            "allowed": allowed,
            "http_status": 200 if allowed else 403,
            "headers": {"content-type": "application/json"},
            "body": "" if allowed else json.dumps({"error": "denied", "reasons": reasons}),
            "reasons": reasons,
        },
        "requested_by": "127.0.0.1:50312",
        "req_id": 7,
        "timestamp": time.isoformat().replace("+00:00", "Z"),
        "metrics": {"timer_rego_query_eval_ns": 2731812},
    }
    if labels:
        event["rule_labels"] = [{"controls": list(labels)}]
    return event


def events(count: int, *, start: datetime = T0, **kwargs: Any) -> list[dict[str, Any]]:
    """``count`` events a second apart, alternating allowed and denied unless told."""
    out = []
    for n in range(count):
        options = {"allowed": n % 2 == 0, **kwargs}
        out.append(decision_event(time=start + timedelta(seconds=n), **options))
    return out


def gzip_batch(batch: list[dict[str, Any]]) -> bytes:
    return gzip.compress(json.dumps(batch).encode())


def shed_event(event: dict[str, Any], reason: object) -> dict[str, Any]:
    """The event as the ext_authz plugin logs a Check it shed: a 503 with its reason."""
    event["result"] = {
        "allowed": False,
        "http_status": 503,
        "reasons": [
            {
                "rule": "nexus.admission",
                "message": "the caller gave up while the request was evaluated",
                "controls": ["SOC2:A1.1", "ISO27001:A.8.6"],
            }
        ],
        "shed": reason,
    }
    return event


def receipt_event(
    decision_id: str,
    *,
    reason: str = "ext_authz_error",
    allowed: bool = True,
    time: datetime = T0,
    region: str = "eu-west-1",
    enforcer: str = "eu-west-1-a",
    receipt_id: str | None = None,
) -> dict[str, Any]:
    """A delivery receipt as the ext_authz plugin logs it: Envoy answered its ext_authz
    failure (503) instead of the decision the plugin sent; with ``reason``
    `RECEIPT_SHED_DELIVERED`, Envoy applied the shed refusal the plugin presumed lost."""
    answered: dict[str, Any] = {"allowed": allowed}
    envoy = {"response_code": 503, "details": "ext_authz_error", "flags": ["UAEX"]}
    if reason == RECEIPT_SHED_DELIVERED:
        answered = {"allowed": False, "http_status": 503}
        envoy = {"response_code": 503, "details": "ext_authz_denied", "flags": ["UAEX"]}
    elif not allowed:
        answered["http_status"] = 403
    return {
        "decision_id": receipt_id or str(uuid.uuid4()),
        "labels": {
            "id": "0f6b7c4e-1d6e-4c36-9d5b-3c1f4f5ad001",
            "region": region,
            "enforcer": enforcer,
            "version": "1.22.2",
        },
        "bundles": {"nexus": {"revision": "1b74bc1b0c4a"}},
        "path": RECEIPT_PATH,
        "result": {
            "decision_id": decision_id,
            "delivered": reason == RECEIPT_SHED_DELIVERED,
            "reason": reason,
            "answered": answered,
            "envoy": envoy,
        },
        "timestamp": time.isoformat().replace("+00:00", "Z"),
    }


def shadow_event(
    decision_id: str,
    *,
    change: str = "unchanged",
    active_allowed: bool = False,
    candidate: str = "cand-0002",
    tool: str | None = None,
    time: datetime = T0,
    region: str = "eu-west-1",
    enforcer: str = "eu-west-1-a",
) -> dict[str, Any]:
    """A shadow outcome as the ext_authz plugin logs it: the candidate's answer beside the
    active one, in ``change``'s bucket."""
    flips = change in ("allow_to_deny", "deny_to_allow")
    cand_allowed = not active_allowed if flips else active_allowed

    def verdict(allowed: bool) -> dict[str, Any]:
        if allowed:
            return {"allowed": True, "http_status": 200, "reasons": []}
        return {"allowed": False, "http_status": 403,
                "reasons": [{"rule": "tools.denied", "controls": ["SOC2:CC6.1"]}]}  # fmt: skip

    result: dict[str, Any] = {
        "decision_id": decision_id,
        "candidate_revision": candidate,
        "active_revision": "1b74bc1b0c4a",
        "change": change,
        "active": verdict(active_allowed),
        "route": "/v1/chat/completions" if tool is None else f"/v1/tools/{tool}:invoke",
        "eval_ns": 41000,
    }
    if tool is not None:
        result["tool"] = tool
    if change == "error":
        result["error"] = "envoyauth_result_error"
    else:
        result["candidate"] = verdict(cand_allowed)
    return {
        "decision_id": str(uuid.uuid4()),
        "labels": {
            "id": "0f6b7c4e-1d6e-4c36-9d5b-3c1f4f5ad001",
            "region": region,
            "enforcer": enforcer,
            "version": "1.22.2",
        },
        "bundles": {"nexus": {"revision": "1b74bc1b0c4a"}},
        "path": SHADOW_PATH,
        "result": result,
        "timestamp": time.isoformat().replace("+00:00", "Z"),
    }
