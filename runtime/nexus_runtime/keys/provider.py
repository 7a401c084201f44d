"""The key-provider interface: create a key, open it by reference, sign, show the public key.

Invariants every provider keeps:
- a private key never leaves the provider: there is no call that returns it,
  and a provider that can (a file) keeps it readable by its owner only;
- ``sign`` returns the signature in its JWS form (see
  `nexus_runtime.keys.algorithms`), and the provider hashes nothing it was not
  asked to: RS256/PS256/EdDSA sign the message, ES256 hashes it with SHA-256
  locally and has the provider sign the digest (plain ECDSA), as tokens do.
"""

from __future__ import annotations

from typing import Protocol

from nexus_contract.errors import NexusError
from nexus_runtime.keys.algorithms import Algorithm, PublicKey

__all__ = ["KeyNotFoundError", "KeyProvider", "KeyProviderError", "SigningKey"]


class KeyProviderError(NexusError):
    """The key provider cannot do what was asked (token absent, wrong PIN, no such mechanism)."""


class KeyNotFoundError(KeyProviderError):
    """No key with that reference in the provider."""


class SigningKey(Protocol):
    """An opened key: it signs and shows its public half."""

    @property
    def reference(self) -> str:
        """Where the provider keeps it (a file name, a token object's label)."""
        ...

    @property
    def algorithm(self) -> Algorithm: ...

    def public_key(self) -> PublicKey: ...

    def sign(self, message: bytes) -> bytes:
        """The JWS-form signature of ``message`` with this key's algorithm."""
        ...


class KeyProvider(Protocol):
    """Where signing keys live."""

    @property
    def kind(self) -> str:
        """``file`` or ``pkcs11``: recorded beside every key the control plane registers."""
        ...

    def generate(self, reference: str, algorithm: Algorithm) -> SigningKey:
        """Create a new key under ``reference``; KeyProviderError if one exists there."""
        ...

    def open(self, reference: str, algorithm: Algorithm) -> SigningKey:
        """The key under ``reference``; KeyNotFoundError if there is none."""
        ...

    def exists(self, reference: str) -> bool: ...
