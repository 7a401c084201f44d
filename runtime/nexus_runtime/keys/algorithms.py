"""The JWS signature algorithms our keys sign with, and what each needs of a key.

Signatures are in JWS form (RFC 7515/7518): RS256 and PS256 as the RSA
signature bytes, ES256 as the 64 bytes ``r || s`` (not DER), EdDSA as the
64-byte Ed25519 signature (RFC 8037). :func:`verify` checks one with a public
key and raises on any mismatch.
"""

from __future__ import annotations

import base64
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from nexus_contract.errors import NexusError

__all__ = [
    "BUNDLE_ALGORITHMS",
    "ES256_COORDINATE_BYTES",
    "MIN_RSA_BITS",
    "PSS_SALT_BYTES",
    "Algorithm",
    "PublicKey",
    "SignatureError",
    "der_to_raw_ecdsa",
    "load_public_pem",
    "public_jwk",
    "public_pem",
    "raw_to_der_ecdsa",
    "verify",
]

MIN_RSA_BITS = 2048
ES256_COORDINATE_BYTES = 32
PSS_SALT_BYTES = 32
"""PS256 uses a salt as long as the SHA-256 digest (RFC 7518 §3.5)."""

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class SignatureError(NexusError):
    """A signature does not verify, or a key cannot sign with the algorithm asked for."""


class Algorithm(StrEnum):
    RS256 = "RS256"
    PS256 = "PS256"
    ES256 = "ES256"
    EDDSA = "EdDSA"

    def check_key(self, key: PublicKey) -> None:
        """Raise SignatureError unless ``key`` is of the kind this algorithm signs with."""
        if self in (Algorithm.RS256, Algorithm.PS256):
            if not isinstance(key, rsa.RSAPublicKey) or key.key_size < MIN_RSA_BITS:
                raise SignatureError(f"{self} needs an RSA key of {MIN_RSA_BITS} bits or more")
        elif self is Algorithm.ES256:
            if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
                key.curve, ec.SECP256R1
            ):
                raise SignatureError("ES256 needs an EC P-256 key")
        elif not isinstance(key, ed25519.Ed25519PublicKey):
            raise SignatureError("EdDSA needs an Ed25519 key")


BUNDLE_ALGORITHMS = frozenset({Algorithm.RS256, Algorithm.PS256, Algorithm.ES256})
"""What OPA's bundle ``keys`` verify (its config refuses ``EdDSA``)."""


def der_to_raw_ecdsa(der: bytes) -> bytes:
    r, s = decode_dss_signature(der)
    return r.to_bytes(ES256_COORDINATE_BYTES, "big") + s.to_bytes(ES256_COORDINATE_BYTES, "big")


def raw_to_der_ecdsa(raw: bytes) -> bytes:
    if len(raw) != 2 * ES256_COORDINATE_BYTES:
        raise SignatureError(f"an ES256 signature is 64 bytes, not {len(raw)}")
    half = ES256_COORDINATE_BYTES
    r, s = int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
    return encode_dss_signature(r, s)


def verify(key: PublicKey, algorithm: Algorithm, data: bytes, signature: bytes) -> None:
    """Check a JWS-form ``signature`` over ``data``; raise SignatureError if it is not valid."""
    algorithm.check_key(key)
    try:
        if algorithm is Algorithm.RS256:
            assert isinstance(key, rsa.RSAPublicKey)
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif algorithm is Algorithm.PS256:
            assert isinstance(key, rsa.RSAPublicKey)
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=PSS_SALT_BYTES)
            key.verify(signature, data, pss, hashes.SHA256())
        elif algorithm is Algorithm.ES256:
            assert isinstance(key, ec.EllipticCurvePublicKey)
            key.verify(raw_to_der_ecdsa(signature), data, ec.ECDSA(hashes.SHA256()))
        else:
            assert isinstance(key, ed25519.Ed25519PublicKey)
            key.verify(signature, data)
    except InvalidSignature:
        raise SignatureError(f"the {algorithm} signature does not verify") from None


def public_pem(key: PublicKey) -> str:
    """The key as a PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo): what OPA's ``keys`` config reads."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public_pem(pem: str | bytes) -> PublicKey:
    """A PEM public key; SignatureError if it is not one of the kinds we sign with."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise SignatureError("not a PEM public key") from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise SignatureError(f"unsupported public key type {type(key).__name__}")
    return key


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(key: PublicKey, *, kid: str, algorithm: Algorithm) -> dict[str, Any]:
    """The public key as a JWK (RFC 7517) with its ``kid``, ``alg`` and ``use: sig``."""
    jwk: dict[str, Any]
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        jwk = {
            "kty": "RSA",
            "n": _b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
            "e": _b64url(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
        }
    elif isinstance(key, ec.EllipticCurvePublicKey):
        point = key.public_numbers()
        jwk = {
            "kty": "EC",
            "crv": "P-256",
            "x": _b64url(point.x.to_bytes(ES256_COORDINATE_BYTES, "big")),
            "y": _b64url(point.y.to_bytes(ES256_COORDINATE_BYTES, "big")),
        }
    else:
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw)}
    jwk.update({"kid": kid, "alg": algorithm.value, "use": "sig"})
    return jwk
