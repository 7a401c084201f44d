"""Approval tokens: the control plane's argument digest equals the one the real OPA computes."""

from __future__ import annotations

import json
from subprocess import run
from typing import Any

import jwt
import pytest

from nexus_control.access.approvals import (
    ApprovalError,
    arguments_digest,
    canonical_arguments,
    issue_approval,
)
from nexus_control.access.signing_keys import KeyPaths, load_approval_key
from nexus_control.authoring.opa import Opa

pytestmark = pytest.mark.opa

ARGUMENTS: list[dict[str, Any]] = [
    {"paymentId": "pay_1", "amountCents": 1999, "currency": "EUR"},
    {"source": "print('<&>')", "language": "python", "timeoutSeconds": 5},
    {"nested": {"b": [1, 2, {"z": None, "a": True}], "a": "é ü ß 中文 😀"}, "empty": {}},
    {"line": "a\u2028b\u2029c", "tab": "x\ty\nz", "quote": 'say "hi" \\ bye', "ctl": "\x01\x1f"},
    {"big": 12345678901234567, "neg": -42, "zero": 0, "list": []},
]


@pytest.mark.parametrize("arguments", ARGUMENTS)
def test_digest_matches_opa_json_marshal(opa: Opa, arguments: dict[str, Any]) -> None:
    result = run(
        [str(opa.binary), "eval", "--format", "raw", "--stdin-input", "json.marshal(input)"],
        input=json.dumps(arguments),
        capture_output=True,
        text=True,
        check=True,
    )
    assert canonical_arguments(arguments) == result.stdout.strip().encode()
    digest = run(
        [
            str(opa.binary),
            "eval",
            "--format",
            "raw",
            "--stdin-input",
            "crypto.sha256(json.marshal(input))",
        ],
        input=json.dumps(arguments),
        capture_output=True,
        text=True,
        check=True,
    )
    assert arguments_digest(arguments) == digest.stdout.strip()


def test_token_carries_the_bound_claims(session_keys: KeyPaths) -> None:
    key = load_approval_key(session_keys.approval)
    approval = issue_approval(
        key,
        tenant="acme",
        tool="payment-refund",
        arguments=ARGUMENTS[0],
        approver="bob",
        subject="service:support-agent",
        max_ttl_s=900,
        ttl_s=60,
        now=1_700_000_000,
    )
    claims = jwt.decode(
        approval.token,
        key.public_key(),
        algorithms=["ES256"],
        audience="nexus-gateway",
        options={"verify_exp": False},
    )
    assert claims["tenant"] == "acme"
    assert claims["tool"] == "payment-refund"
    assert claims["args_sha256"] == arguments_digest(ARGUMENTS[0])
    assert claims["exp"] - claims["iat"] == 60
    assert claims["subject"] == "service:support-agent"
    assert isinstance(claims["jti"], str) and claims["jti"] == approval.token_id
    assert jwt.get_unverified_header(approval.token)["alg"] == "ES256"


@pytest.mark.parametrize(("ttl", "cap"), [(0, 900), (3601, 3600), (901, 900), (1801, 1800)])
def test_ttl_is_capped_by_the_risk_level(session_keys: KeyPaths, ttl: int, cap: int) -> None:
    with pytest.raises(ApprovalError, match=f"between 1 and {cap} seconds for critical"):
        issue_approval(
            load_approval_key(session_keys.approval),
            tenant="a",
            tool="t",
            arguments={},
            approver="b",
            subject="apikey:a",
            max_ttl_s=cap,
            risk="critical",
            ttl_s=ttl,
        )


def test_default_ttl_never_exceeds_the_cap(session_keys: KeyPaths) -> None:
    key = load_approval_key(session_keys.approval)
    short = issue_approval(
        key, tenant="a", tool="t", arguments={}, approver="b", subject="apikey:a", max_ttl_s=60
    )
    assert short.expires_at - short.issued_at == 60
    usual = issue_approval(
        key, tenant="a", tool="t", arguments={}, approver="b", subject="apikey:a", max_ttl_s=900
    )
    assert usual.expires_at - usual.issued_at == 300


@pytest.mark.parametrize("subject", ["", "   ", "x" * 301])
def test_an_approval_names_its_caller(session_keys: KeyPaths, subject: str) -> None:
    with pytest.raises(ApprovalError, match="subject"):
        issue_approval(
            load_approval_key(session_keys.approval),
            tenant="a",
            tool="t",
            arguments={},
            approver="b",
            subject=subject,
            max_ttl_s=900,
        )
