"""Keys as PEM files in one directory (mode 0700, each key 0600): the demo's provider.

A file key's private half is on the host's disk, readable by the account that
runs the control plane; production uses a token (`nexus_runtime.keys.pkcs11`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from nexus_runtime.keys.algorithms import (
    PSS_SALT_BYTES,
    Algorithm,
    PublicKey,
    der_to_raw_ecdsa,
)
from nexus_runtime.keys.provider import KeyNotFoundError, KeyProviderError
from nexus_runtime.secretfile import write_secret

__all__ = ["MAX_KEY_FILE_BYTES", "RSA_BITS", "FileKey", "FileKeyProvider", "load_private_key"]

RSA_BITS = 3072
MAX_KEY_FILE_BYTES = 64 * 1024
_REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def load_private_key(path: Path, what: str = "signing key") -> PrivateKey:
    """An unencrypted PEM private key from ``path``; KeyProviderError saying what is wrong."""
    try:
        if path.stat().st_size > MAX_KEY_FILE_BYTES:
            raise KeyProviderError(f"{what} {path} is larger than 64 KiB; is it really a key?")
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyNotFoundError(
            f"{what} {path} does not exist; create one with `nexus-policy keys init` "
            "or point the setting at an existing key"
        ) from None
    except OSError as exc:
        raise KeyProviderError(f"{what} {path} cannot be read: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyProviderError(f"{what} {path} is not an unencrypted PEM private key") from None
    if not isinstance(key, PrivateKey):
        kind = type(key).__name__
        raise KeyProviderError(f"{what} {path} is a {kind}, not RSA, P-256 or Ed25519")
    return key


@dataclass(frozen=True)
class FileKey:
    """A private key loaded from a file, signing in process."""

    reference: str
    algorithm: Algorithm
    _key: PrivateKey

    def public_key(self) -> PublicKey:
        return self._key.public_key()

    def sign(self, message: bytes) -> bytes:
        key = self._key
        if self.algorithm is Algorithm.RS256 and isinstance(key, rsa.RSAPrivateKey):
            return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        if self.algorithm is Algorithm.PS256 and isinstance(key, rsa.RSAPrivateKey):
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=PSS_SALT_BYTES)
            return key.sign(message, pss, hashes.SHA256())
        if self.algorithm is Algorithm.ES256 and isinstance(key, ec.EllipticCurvePrivateKey):
            return der_to_raw_ecdsa(key.sign(message, ec.ECDSA(hashes.SHA256())))
        if self.algorithm is Algorithm.EDDSA and isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(message)
        raise KeyProviderError(f"key {self.reference} cannot sign {self.algorithm}")


class FileKeyProvider:
    """PEM files in ``directory``; a reference is a file name there."""

    kind = "file"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, reference: str) -> Path:
        """A file name in the directory, or an absolute path to a ``.pem`` file elsewhere."""
        if Path(reference).is_absolute() and reference.endswith(".pem"):
            return Path(reference)
        if not _REFERENCE.match(reference):
            raise KeyProviderError(f"{reference!r} is not a key file name")
        return self.directory / reference

    def exists(self, reference: str) -> bool:
        return self.path(reference).is_file()

    def generate(self, reference: str, algorithm: Algorithm) -> FileKey:
        path = self.path(reference)
        if path.exists():
            raise KeyProviderError(f"a key already exists at {path}")
        key: PrivateKey
        if algorithm in (Algorithm.RS256, Algorithm.PS256):
            key = rsa.generate_private_key(65537, RSA_BITS)
        elif algorithm is Algorithm.ES256:
            key = ec.generate_private_key(ec.SECP256R1())
        else:
            key = ed25519.Ed25519PrivateKey.generate()
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_secret(path, pem, overwrite=False)
        return FileKey(reference, algorithm, key)

    def open(self, reference: str, algorithm: Algorithm) -> FileKey:
        key = load_private_key(self.path(reference))
        algorithm.check_key(key.public_key())
        return FileKey(reference, algorithm, key)
