"""Record tokens: the record store's signed word on a record's tenant, class and age.

Retention decides on a record's data class and creation time. A client must
not be able to state them, so the store that holds the record (the chat
store) signs them in a short-lived ES256 JWS the caller forwards in
``x-nexus-record-token``; the policy verifies it against the store's public
JWKS, compiled into the bundle from the Identity spec's ``recordSigners``,
and checks its audience, lifetime, tenant and that ``sub`` is the record id
of the path. This module is the store's side (for the SDK, the demo and
tests): it signs, and writes a development key with its overlay.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from nexus_runtime.keys.algorithms import Algorithm, public_jwk
from nexus_runtime.keys.files import FileKey, load_private_key
from nexus_runtime.keys.jws import sign_compact
from nexus_runtime.keys.provider import SigningKey
from nexus_runtime.secretfile import write_secret

__all__ = [
    "DEFAULT_TTL_S",
    "DEV_RECORD_ISSUER",
    "RECORD_AUDIENCE",
    "RECORD_KEY_FILE",
    "RECORD_OVERLAY_FILE",
    "RecordFacts",
    "RecordSigner",
    "create_dev_record_signer",
]

RECORD_AUDIENCE = "nexus-gateway"
DEV_RECORD_ISSUER = "https://chat-store.dev.nexus.example"
DEFAULT_TTL_S = 60
"""A record token is minted per request; a minute covers the hop to the gateway."""
MAX_TTL_S = 300
RECORD_KEY_FILE = "record-signer.pem"
RECORD_OVERLAY_FILE = "record-signers.yaml"


@dataclass(frozen=True)
class RecordFacts:
    """What the store knows about one record."""

    record_id: str
    tenant: str
    data_class: str
    created_at: datetime


@dataclass(frozen=True)
class RecordSigner:
    """Signs record tokens with the store's ES256 key."""

    key: SigningKey
    kid: str
    issuer: str
    audience: str = RECORD_AUDIENCE

    @classmethod
    def from_file(cls, path: Path, *, issuer: str, kid: str) -> RecordSigner:
        key = load_private_key(path, "record signing key")
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError(f"{path}: a record signing key is an EC P-256 key (ES256)")
        return cls(FileKey(path.name, Algorithm.ES256, key), kid, issuer)

    def jwks(self) -> dict[str, Any]:
        """The public JWKS the policy verifies record tokens with."""
        return {
            "keys": [public_jwk(self.key.public_key(), kid=self.kid, algorithm=Algorithm.ES256)]
        }

    def token(
        self, facts: RecordFacts, *, ttl_s: int = DEFAULT_TTL_S, now: int | None = None
    ) -> str:
        """A compact JWS stating ``facts``, valid for ``ttl_s`` seconds from ``now``."""
        if not 1 <= ttl_s <= MAX_TTL_S:
            raise ValueError(f"a record token lives 1 to {MAX_TTL_S} s, not {ttl_s}")
        if facts.created_at.tzinfo is None:
            raise ValueError("created_at needs a time zone")
        issued = int(time.time()) if now is None else now
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "iat": issued,
            "exp": issued + ttl_s,
            "sub": facts.record_id,
            "nexus_tenant": facts.tenant,
            "data_class": facts.data_class,
            "created_at": int(facts.created_at.timestamp()),
        }
        payload = json.dumps(claims, sort_keys=True, separators=(",", ":")).encode()
        return sign_compact(self.key, self.kid, payload)


def create_dev_record_signer(
    directory: Path,
    tenants: Sequence[str],
    *,
    issuer: str = DEV_RECORD_ISSUER,
    kid: str = "chat-store-dev",
) -> RecordSigner:
    """A fresh development key (0600, written atomically) and the overlay trusting it.

    The overlay (an Identity spec with one ``recordSigners`` entry for ``tenants``)
    joins a build or publish with ``--overlay directory``; only its public key is in it.
    """
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key_path = directory / RECORD_KEY_FILE
    write_secret(key_path, pem)
    signer = RecordSigner(FileKey(key_path.name, Algorithm.ES256, private), kid, issuer)
    spec = {
        "apiVersion": "policy.nexus.ai/v1",
        "kind": "Identity",
        "recordSigners": [
            {
                "issuer": issuer,
                "audience": RECORD_AUDIENCE,
                "tenants": sorted(set(tenants)),
                "maxTtlSeconds": MAX_TTL_S,
                "jwks": signer.jwks(),
            }
        ],
    }
    header = "# A development record store's public key (its private key is 0600 beside it).\n"
    (directory / RECORD_OVERLAY_FILE).write_text(header + yaml.safe_dump(spec, sort_keys=False))
    return signer
