"""Compact JWS (RFC 7515) signed through a key provider, and its verification.

The header always names ``alg`` and ``kid`` (verifiers pick the key by
``kid``) and ``typ: JWT``; the payload is given as bytes, so callers decide its
exact JSON. Verification raises; it never returns a flag.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from nexus_runtime.keys.algorithms import Algorithm, PublicKey, SignatureError, verify
from nexus_runtime.keys.provider import SigningKey

__all__ = ["MAX_TOKEN_BYTES", "b64url", "b64url_decode", "sign_compact", "verify_compact"]

MAX_TOKEN_BYTES = 1024 * 1024


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise SignatureError("not base64url") from None


def sign_compact(key: SigningKey, kid: str, payload: bytes) -> str:
    """``header.payload.signature`` with ``key``'s algorithm and ``kid``."""
    header = {"alg": key.algorithm.value, "kid": kid, "typ": "JWT"}
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode()) + "." + b64url(payload)
    )
    return signing_input + "." + b64url(key.sign(signing_input.encode("ascii")))


def verify_compact(
    token: str, keys: Mapping[str, tuple[Algorithm, PublicKey]]
) -> tuple[dict[str, Any], bytes]:
    """The header and payload of ``token`` if its ``kid`` is in ``keys`` and it verifies."""
    if len(token) > MAX_TOKEN_BYTES:
        raise SignatureError("the token is too large")
    parts = token.split(".")
    if len(parts) != 3:
        raise SignatureError("a compact JWS has three parts")
    try:
        header = json.loads(b64url_decode(parts[0]))
    except ValueError:
        raise SignatureError("the JWS header is not JSON") from None
    if not isinstance(header, dict):
        raise SignatureError("the JWS header is not an object")
    kid = header.get("kid")
    if not isinstance(kid, str) or kid not in keys:
        raise SignatureError(f"no trusted key has id {kid!r}")
    algorithm, public = keys[kid]
    if header.get("alg") != algorithm.value:
        raise SignatureError(f"key {kid} signs {algorithm}, the token says {header.get('alg')!r}")
    verify(public, algorithm, f"{parts[0]}.{parts[1]}".encode("ascii"), b64url_decode(parts[2]))
    return header, b64url_decode(parts[1])
