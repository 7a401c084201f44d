"""Local key files: the dev keys ``keys init`` writes, and the public halves builds use.

The fleet's keys live in the control plane's key ring
(`nexus_control.access.keyring`), behind a key provider; this module covers
what happens on an author's or a CI machine: a *dev* bundle-signing key that
enforcers of a fleet never trust, and the approval key's public JWKS, which
is all a build needs (builds never read an approval private key, so no
author or CI job can mint tool approvals). Private keys are files with mode
0600; only public keys leave this module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from nexus_audit.keyfiles import init_log_key, init_master_key
from nexus_audit.settings import DEFAULT_LOG_KEY_FILE, DEFAULT_MASTER_KEY_FILE, AuditSettings
from nexus_contract.errors import NexusError
from nexus_runtime.keys.algorithms import (
    Algorithm,
    PublicKey,
    SignatureError,
    load_public_pem,
    public_jwk,
)
from nexus_runtime.keys.algorithms import public_pem as _public_pem
from nexus_runtime.keys.files import FileKey, FileKeyProvider
from nexus_runtime.keys.jws import b64url
from nexus_runtime.keys.provider import KeyProviderError, SigningKey

__all__ = [
    "APPROVAL_JWKS_NAME",
    "MAX_JWKS_BYTES",
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
    "read_approval_jwks",
]

APPROVAL_JWKS_NAME = "approval-signing.jwks.json"
MAX_JWKS_BYTES = 256 * 1024


class SigningKeyError(NexusError):
    """A signing key is missing, unreadable or of the wrong type."""


@dataclass(frozen=True)
class KeyPaths:
    signing: Path
    approval: Path

    @property
    def signing_public(self) -> Path:
        return self.signing.with_name("bundle-signing.pub.pem")

    @property
    def approval_jwks(self) -> Path:
        """The approval key's public JWKS: what a build compiles into the bundle."""
        return self.approval.with_name(APPROVAL_JWKS_NAME)


def init_keys(directory: Path, *, overwrite: bool = False) -> KeyPaths:
    """Dev keys in ``directory`` (kept if present): bundle signing, approvals, public halves."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    provider = FileKeyProvider(directory)
    paths = KeyPaths(directory / "bundle-signing.pem", directory / "approval-signing.pem")
    for path, algorithm in ((paths.signing, Algorithm.RS256), (paths.approval, Algorithm.ES256)):
        if overwrite:
            path.unlink(missing_ok=True)
        if not path.exists():
            provider.generate(path.name, algorithm)
    if overwrite or not paths.signing_public.exists():
        paths.signing_public.write_text(public_pem(load_signing_key(paths.signing)))
    if overwrite or not paths.approval_jwks.exists():
        key = load_approval_key(paths.approval)
        paths.approval_jwks.write_text(approval_jwks([key.public_key()]))
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


def _open(path: Path, algorithm: Algorithm, what: str) -> FileKey:
    try:
        return FileKeyProvider(path.parent).open(path.name, algorithm)
    except KeyProviderError as exc:
        raise SigningKeyError(str(exc).replace("signing key", what, 1)) from None
    except SignatureError:
        raise SigningKeyError(f"{what} {path} is not a key for {algorithm}") from None


def load_signing_key(path: Path, algorithm: Algorithm = Algorithm.RS256) -> FileKey:
    """A bundle-signing key file (RSA of 2048 bits or more for RS256/PS256)."""
    return _open(path, algorithm, "bundle signing key")


def load_approval_key(path: Path) -> FileKey:
    """An approval key file (EC P-256, ES256): for tests and dev stacks only."""
    return _open(path, Algorithm.ES256, "approval signing key")


def _public(key: SigningKey | PublicKey) -> PublicKey:
    if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        return key
    return key.public_key()


def public_pem(key: SigningKey | PublicKey) -> str:
    """A key's public half as a PEM ``PUBLIC KEY``."""
    return _public_pem(_public(key))


def approval_key_id(key: SigningKey | PublicKey) -> str:
    """A stable id for an approval key: the start of its RFC 7638 thumbprint."""
    jwk = public_jwk(_public(key), kid="", algorithm=Algorithm.ES256)
    thumbprint_input = json.dumps(
        {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"], "y": jwk["y"]},
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    return b64url(sha256(thumbprint_input).digest())[:16]


def approval_jwks(keys: Sequence[PublicKey]) -> str:
    """The approval keys' public JWKS as compact JSON, for ``data.nexus.config.approval``."""
    entries = [public_jwk(key, kid=approval_key_id(key), algorithm=Algorithm.ES256) for key in keys]
    return json.dumps({"keys": entries}, sort_keys=True, separators=(",", ":"))


def read_approval_jwks(path: Path) -> str:
    """A public approval JWKS (or a PEM public key) from ``path``, as compact JSON.

    Refuses a file holding a private key: a build must never need one.
    """
    try:
        if path.stat().st_size > MAX_JWKS_BYTES:
            raise SigningKeyError(f"{path} is larger than 256 KiB; is it really a JWKS?")
        text = path.read_text()
    except FileNotFoundError:
        raise SigningKeyError(
            f"approval JWKS {path} does not exist: fetch the control plane's with "
            "`nexus-policy keys jwks`, or create dev keys with `nexus-policy keys init`"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SigningKeyError(f"approval JWKS {path} cannot be read: {exc}") from None
    if "PRIVATE KEY" in text or '"d"' in text:
        raise SigningKeyError(f"{path} holds a private key; a build needs only the public JWKS")
    if text.lstrip().startswith("-----BEGIN"):
        try:
            return approval_jwks([load_public_pem(text)])
        except SignatureError as exc:
            raise SigningKeyError(f"{path}: {exc}") from None
    try:
        document = json.loads(text)
        keys = document["keys"]
        if not isinstance(keys, list) or not keys:
            raise ValueError("no keys")
        for key in keys:
            if not isinstance(key, dict) or key.get("kty") != "EC" or "kid" not in key:
                raise ValueError("every key is an EC public JWK with a kid")
    except (ValueError, KeyError, TypeError) as exc:
        raise SigningKeyError(f"{path} is not a public JWKS of EC keys: {exc}") from None
    return json.dumps({"keys": keys}, sort_keys=True, separators=(",", ":"))
