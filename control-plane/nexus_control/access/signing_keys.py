"""The control plane's signing keys: bundle signing (RS256) and approvals (ES256).

Private keys are files with mode 0600, never logged and never copied into a
bundle; only public keys (a PEM for OPA's ``keys`` config, a JWKS for the
Rego approval check) leave this module.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from nexus_audit.keyfiles import init_log_key, init_master_key
from nexus_audit.settings import DEFAULT_LOG_KEY_FILE, DEFAULT_MASTER_KEY_FILE, AuditSettings
from nexus_contract.errors import NexusError
from nexus_runtime.secretfile import write_secret

__all__ = [
    "MAX_KEY_BYTES",
    "RSA_BITS",
    "AuditKeyPaths",
    "KeyPaths",
    "SigningKeyError",
    "approval_jwks",
    "approval_key_id",
    "audit_settings_in",
    "init_audit_keys",
    "init_keys",
    "load_approval_key",
    "load_signing_key",
    "public_pem",
]

RSA_BITS = 3072
MAX_KEY_BYTES = 64 * 1024


class SigningKeyError(NexusError):
    """A signing key is missing, unreadable or of the wrong type."""


@dataclass(frozen=True)
class KeyPaths:
    signing: Path
    approval: Path


def init_keys(directory: Path, *, overwrite: bool = False) -> KeyPaths:
    """Create a bundle-signing and an approval key in ``directory`` (kept if present)."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    paths = KeyPaths(directory / "bundle-signing.pem", directory / "approval-signing.pem")
    if overwrite or not paths.signing.exists():
        _write_private(paths.signing, rsa.generate_private_key(65537, RSA_BITS))
    public = directory / "bundle-signing.pub.pem"
    if overwrite or not public.exists():
        public.write_text(public_pem(load_signing_key(paths.signing)))
    if overwrite or not paths.approval.exists():
        _write_private(paths.approval, ec.generate_private_key(ec.SECP256R1()))
    return paths


@dataclass(frozen=True)
class AuditKeyPaths:
    log_key: Path
    master_key: Path


def audit_settings_in(directory: Path, settings: AuditSettings) -> AuditSettings:
    """``settings`` with its key files in ``directory`` (the keys dir) unless set elsewhere."""
    update: dict[str, Path] = {}
    if settings.log_key_file == DEFAULT_LOG_KEY_FILE:
        update["log_key_file"] = directory / DEFAULT_LOG_KEY_FILE.name
    if settings.master_key_file == DEFAULT_MASTER_KEY_FILE:
        update["master_key_file"] = directory / DEFAULT_MASTER_KEY_FILE.name
    return settings.model_copy(update=update)


def init_audit_keys(
    directory: Path, settings: AuditSettings, *, overwrite: bool = False
) -> AuditKeyPaths:
    """The audit log's checkpoint key and its payload master key (kept if present)."""
    placed = audit_settings_in(directory, settings)
    log_key, master = placed.log_key_file, placed.master_key_file
    if overwrite or not log_key.exists():
        init_log_key(log_key, settings.origin, force=True)
    if overwrite or not master.exists():
        init_master_key(master, force=True)
    return AuditKeyPaths(log_key, master)


def _write_private(path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_secret(path, pem)


def _load_private(path: Path, what: str) -> object:
    try:
        if path.stat().st_size > MAX_KEY_BYTES:
            raise SigningKeyError(f"{what} {path} is larger than 64 KiB; is it really a key?")
        data = path.read_bytes()
    except FileNotFoundError:
        raise SigningKeyError(
            f"{what} {path} does not exist; create one with `nexus-policy keys init` "
            "or point the setting at an existing key"
        ) from None
    except OSError as exc:
        raise SigningKeyError(f"{what} {path} cannot be read: {exc.strerror}") from None
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SigningKeyError(f"{what} {path} is not an unencrypted PEM private key") from None


def load_signing_key(path: Path) -> rsa.RSAPrivateKey:
    """The RSA key that signs bundles; raise SigningKeyError if unusable."""
    key = _load_private(path, "bundle signing key")
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
        raise SigningKeyError(f"bundle signing key {path} must be an RSA key of 2048 bits or more")
    return key


def load_approval_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The P-256 key that signs tool approvals; raise SigningKeyError if unusable."""
    key = _load_private(path, "approval signing key")
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SigningKeyError(f"approval signing key {path} must be an EC P-256 key")
    return key


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def approval_key_id(key: ec.EllipticCurvePrivateKey) -> str:
    """A stable id for the approval key: the start of its public key's SHA-256 (RFC 7638 style)."""
    jwk = _ec_public_jwk(key)
    thumbprint_input = json.dumps(
        {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"], "y": jwk["y"]},
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    return _b64url(sha256(thumbprint_input).digest())[:16]


def approval_jwks(key: ec.EllipticCurvePrivateKey) -> str:
    """The approval key's public JWKS as compact JSON, for ``data.nexus.config.approval``."""
    jwk = _ec_public_jwk(key)
    jwk.update({"kid": approval_key_id(key), "alg": "ES256", "use": "sig"})
    return json.dumps({"keys": [jwk]}, sort_keys=True, separators=(",", ":"))


def _ec_public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64url(numbers.x.to_bytes(32, "big")),
        "y": _b64url(numbers.y.to_bytes(32, "big")),
    }


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
