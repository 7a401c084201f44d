"""Tool-invocation approvals: short-lived ES256 tokens the Rego policy verifies.

An approval binds one approver's decision to one tenant, one tool and the
exact arguments of one call (by the SHA-256 of their canonical JSON) and to
one caller (``subject``), so a token cannot be replayed for a different call
or by someone else; it lives no longer than the policy allows for the tool's
risk level, and its ``jti`` is spent on first use (see :mod:`.approval_uses`).
The Rego side
(``nexus.tools``) recomputes the hash with ``json.marshal``; :func:`canonical_arguments`
produces the same bytes for JSON that arrives with integers, strings, booleans,
nulls, arrays and objects (floats must be written in their shortest form).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from nexus_contract.errors import NexusError
from nexus_control.access.signing_keys import approval_key_id
from nexus_control.authoring.compiler import APPROVAL_AUDIENCE, APPROVAL_ISSUER
from nexus_runtime.keys.algorithms import Algorithm
from nexus_runtime.keys.jws import sign_compact
from nexus_runtime.keys.provider import SigningKey

__all__ = [
    "DEFAULT_TTL_S",
    "MAX_SUBJECT_CHARS",
    "MAX_TTL_S",
    "Approval",
    "ApprovalError",
    "arguments_digest",
    "canonical_arguments",
    "issue_approval",
]

DEFAULT_TTL_S = 300
MAX_TTL_S = 3600
MAX_SUBJECT_CHARS = 300

# Go's encoding/json (which OPA's json.marshal uses) escapes these; Python's does not.
_GO_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


class ApprovalError(NexusError):
    """An approval request is invalid (bad TTL, arguments that are not an object...)."""


@dataclass(frozen=True)
class Approval:
    token: str
    token_id: str
    tenant: str
    tool: str
    args_sha256: str
    approver: str
    subject: str
    issued_at: int
    expires_at: int


def canonical_arguments(arguments: dict[str, Any]) -> bytes:
    """The arguments as OPA's ``json.marshal`` writes them: sorted keys, compact, Go escapes."""
    text = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escape in _GO_ESCAPES.items():
        text = text.replace(char, escape)
    return text.encode("utf-8")


def arguments_digest(arguments: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_arguments(arguments)).hexdigest()


def issue_approval(
    key: SigningKey,
    *,
    tenant: str,
    tool: str,
    arguments: dict[str, Any],
    approver: str,
    subject: str,
    max_ttl_s: int,
    risk: str = "this",
    ttl_s: int | None = None,
    now: float | None = None,
) -> Approval:
    """Sign an approval for one call of ``tool`` by ``subject`` with exactly ``arguments``.

    ``key`` is the control plane's approval key (ES256), held by its key
    provider; the token's ``kid`` is that key's thumbprint. ``max_ttl_s`` is
    the policy's cap for the tool's ``risk`` level (``approval.max_ttl_s``);
    ``ttl_s`` defaults to the shorter of five minutes and that cap.
    """
    if key.algorithm is not Algorithm.ES256:
        raise ApprovalError(f"approvals are signed with ES256, not {key.algorithm}")
    if not isinstance(arguments, dict):
        raise ApprovalError("arguments must be a JSON object")
    if not isinstance(subject, str) or not subject.strip() or len(subject) > MAX_SUBJECT_CHARS:
        raise ApprovalError(
            f"an approval names the one caller it is for: subject must be 1-{MAX_SUBJECT_CHARS} "
            "characters (e.g. apikey:acme-agent or service:support-agent)"
        )
    cap = min(max_ttl_s, MAX_TTL_S)
    if ttl_s is None:
        ttl_s = min(DEFAULT_TTL_S, cap)
    if not 1 <= ttl_s <= cap:
        raise ApprovalError(
            f"ttl must be between 1 and {cap} seconds for {risk} risk tools (the policy's cap)"
        )
    issued = int(now if now is not None else time.time())
    digest = arguments_digest(arguments)
    token_id = str(uuid.uuid4())
    claims: dict[str, Any] = {
        "iss": APPROVAL_ISSUER,
        "aud": APPROVAL_AUDIENCE,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_s,
        "jti": token_id,
        "tenant": tenant,
        "tool": tool,
        "args_sha256": digest,
        "approver": approver,
        "subject": subject,
    }
    payload = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
    token = sign_compact(key, approval_key_id(key), payload)
    return Approval(
        token, token_id, tenant, tool, digest, approver, subject, issued, issued + ttl_s
    )
