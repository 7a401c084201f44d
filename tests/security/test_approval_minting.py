"""No author or CI job can mint tool approvals: builds carry only the public JWKS.

Against the running stack (SQLite and PostgreSQL, real Envoy + OPA): a build
succeeds with no approval private key anywhere near it; an approval the
builder signs with a key of their own, however well-formed (the control
plane's kid, ten years of validity), is refused; one the control plane
issues through the API for the same call is honoured.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path

import pytest

from nexus_cli.client import ControlPlaneClient
from nexus_control.access.approvals import arguments_digest
from nexus_control.access.signing_keys import KeyPaths, SigningKeyError, read_approval_jwks
from nexus_control.authoring.bundle import BuildOptions, build_bundle
from nexus_control.authoring.compiler import APPROVAL_AUDIENCE, APPROVAL_ISSUER
from nexus_runtime.keys.algorithms import Algorithm
from nexus_runtime.keys.files import FileKeyProvider
from nexus_runtime.keys.jws import sign_compact
from tests.conftest import GATEWAY
from tests.fixtures.environment import Environment

pytestmark = [pytest.mark.opa, pytest.mark.envoy]

DB_WRITE = "/v1/tools/db-write:invoke"
ARGUMENTS = {"database": "billing", "statement": "UPDATE invoices SET paid = true"}
TEN_YEARS_S = 10 * 365 * 86_400


def reasons(response: object) -> list[str]:
    return [r["rule"] for r in response.json()["reasons"]]  # type: ignore[attr-defined]


def test_builder_cannot_mint_tool_approvals(
    stack: Environment, session_keys: KeyPaths, tmp_path: Path
) -> None:
    # The build machine holds a public JWKS (from `nexus-policy keys jwks`) and nothing else.
    with ControlPlaneClient(stack.url, stack.tokens["author"]) as api:
        published_keys = api.get("/v1/keys")
    ci = tmp_path / "ci"
    ci.mkdir()
    (ci / "approval.jwks.json").write_text(published_keys["approval_jwks"])
    shutil.copy(session_keys.signing, ci / "dev-signing.pem")
    built = build_bundle(
        GATEWAY,
        stack.opa,
        BuildOptions(ci / "dev-signing.pem", "dev", ci / "approval.jwks.json", ci / "dist"),
    )
    assert built.path.exists()
    assert not any("approval-signing.pem" in p.name for p in ci.rglob("*"))
    with pytest.raises(SigningKeyError, match="private key"):
        read_approval_jwks(session_keys.approval)

    # The builder's own key, dressed as the control plane's.
    (kid,) = [k["kid"] for k in json.loads(published_keys["approval_jwks"])["keys"]]
    forger = FileKeyProvider(tmp_path / "forger").generate("mine.pem", Algorithm.ES256)
    now = int(time.time())
    claims = {
        "iss": APPROVAL_ISSUER,
        "aud": APPROVAL_AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + TEN_YEARS_S,
        "jti": str(uuid.uuid4()),
        "tenant": "acme",
        "tool": "db-write",
        "args_sha256": arguments_digest(ARGUMENTS),
        "approver": "bob",
        "subject": "apikey:acme-agent",
    }
    minted = sign_compact(forger, kid, json.dumps(claims).encode())
    refused = stack.call(
        "acme-agent",
        "acme",
        "POST",
        DB_WRITE,
        body={"arguments": ARGUMENTS},
        headers={"x-nexus-approval": minted},
    )
    assert refused.status_code == 403, refused.text
    assert "nexus.tools.approval_invalid" in reasons(refused)

    with ControlPlaneClient(stack.url, stack.tokens["approver"]) as api:
        issued = api.post(
            "/v1/approvals/tools",
            {
                "tenant": "acme",
                "tool": "db-write",
                "arguments": ARGUMENTS,
                "subject": "apikey:acme-agent",
                "ttl_seconds": 60,
            },
        )
    honoured = stack.call(
        "acme-agent",
        "acme",
        "POST",
        DB_WRITE,
        body={"arguments": ARGUMENTS},
        headers={"x-nexus-approval": issued["token"]},
    )
    assert honoured.status_code == 200, honoured.text
