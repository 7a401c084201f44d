"""Opens the key provider a service's settings name: ``file`` or ``pkcs11``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from nexus_runtime.keys.files import FileKeyProvider
from nexus_runtime.keys.pkcs11 import Pkcs11KeyProvider, read_pin
from nexus_runtime.keys.provider import KeyProvider, KeyProviderError

__all__ = ["DEFAULT_PKCS11_MODULE", "DEFAULT_TOKEN_LABEL", "ProviderKind", "open_provider"]

DEFAULT_PKCS11_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
"""Debian's SoftHSM2; an HSM or a cloud KMS ships its own PKCS#11 library."""
DEFAULT_TOKEN_LABEL = "nexus"  # noqa: S105 - a token's name, not a secret
ProviderKind = Literal["file", "pkcs11"]


def open_provider(
    kind: ProviderKind,
    *,
    directory: Path,
    pkcs11_module: Path = DEFAULT_PKCS11_MODULE,
    token_label: str = DEFAULT_TOKEN_LABEL,
    pin_file: Path | None = None,
) -> KeyProvider:
    """The provider ``kind``: PEM files in ``directory``, or the token ``token_label``."""
    if kind == "file":
        return FileKeyProvider(directory)
    if pin_file is None:
        raise KeyProviderError("a PKCS#11 key provider needs a PIN file (NEXUS_PKCS11_PIN_FILE)")
    return Pkcs11KeyProvider(pkcs11_module, token_label, read_pin(pin_file))
