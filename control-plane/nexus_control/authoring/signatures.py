"""OPA's bundle signatures, written here: ``.signatures.json`` over each file's hash.

A bundle signed through a key provider cannot go through ``opa build
--signing-key`` (the private key stays in its token), so this module writes
what OPA would: one compact JWS whose payload lists every file of the bundle
but ``.signatures.json`` as ``{"name", "hash", "algorithm": "SHA-256"}``.

How OPA hashes a file (its ``bundle`` package), reproduced by
:func:`file_hash`:
- ``data.json``, ``data.yaml``, ``.manifest`` (structured files) are parsed
  and hashed in a canonical form: objects as ``{`` + ``"key":value`` pairs in
  byte order of their keys, joined by ``,`` + ``}``; arrays as ``[`` + values
  joined by ``,`` + ``]``; strings as Go's JSON encoder writes them with HTML
  escaping off (``<>&`` verbatim, U+2028/U+2029 escaped, ``\\b``/``\\f``
  short forms, other control characters as ``\\u00XX``); numbers exactly as
  written in the file (OPA decodes them as ``json.Number``); ``true``,
  ``false``, ``null``;
- every other file is hashed as its bytes.

Names are the file's path in the bundle without a leading ``/``. The JWS
header names ``alg`` and ``kid``; enforcers choose the verification key by
``kid``, so several keys can be trusted during a rotation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from nexus_contract.errors import NexusError
from nexus_runtime.keys.algorithms import Algorithm, PublicKey, SignatureError
from nexus_runtime.keys.jws import sign_compact, verify_compact
from nexus_runtime.keys.provider import SigningKey

__all__ = [
    "HASH_ALGORITHM",
    "MANIFEST_FILE",
    "SIGNATURES_FILE",
    "STRUCTURED_NAMES",
    "BundleSignatureError",
    "file_hash",
    "sign_bundle_files",
    "verify_bundle_files",
]

SIGNATURES_FILE = ".signatures.json"
MANIFEST_FILE = ".manifest"
HASH_ALGORITHM = "SHA-256"
STRUCTURED_NAMES = frozenset({"data.json", "data.yaml", MANIFEST_FILE, SIGNATURES_FILE})
"""Base names OPA parses before hashing; every other file is hashed as bytes."""


class BundleSignatureError(NexusError):
    """A bundle's signature is missing, does not verify, or does not cover its files."""


class _Number(str):
    """A JSON number kept as the literal text it was written as."""


def _reject_constant(name: str) -> Any:
    raise BundleSignatureError(f"{name} is not JSON")


def _go_string(text: str) -> str:
    out = ['"']
    for char in text:
        code = ord(char)
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif char == "\b":
            out.append("\\b")
        elif char == "\f":
            out.append("\\f")
        elif code < 0x20 or char in "\u2028\u2029":
            out.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\ufffd")  # Go writes invalid UTF-8 (a lone surrogate) as U+FFFD
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _walk(value: Any, write: Callable[[bytes], Any]) -> None:
    if isinstance(value, dict):
        write(b"{")
        for i, key in enumerate(sorted(value, key=lambda k: k.encode("utf-8", "surrogatepass"))):
            if i:
                write(b",")
            write(_go_string(key).encode("utf-8"))
            write(b":")
            _walk(value[key], write)
        write(b"}")
    elif isinstance(value, list):
        write(b"[")
        for i, item in enumerate(value):
            if i:
                write(b",")
            _walk(item, write)
        write(b"]")
    elif isinstance(value, _Number):
        write(str.__str__(value).encode("ascii"))
    elif isinstance(value, str):
        write(_go_string(value).encode("utf-8"))
    elif value is True:
        write(b"true")
    elif value is False:
        write(b"false")
    elif value is None:
        write(b"null")
    else:  # pragma: no cover - json.loads yields nothing else
        raise BundleSignatureError(f"cannot hash {type(value).__name__}")


def _is_structured(name: str) -> bool:
    return name.rsplit("/", 1)[-1] in STRUCTURED_NAMES


def file_hash(name: str, content: bytes) -> str:
    """The SHA-256 OPA computes for the bundle file ``name`` holding ``content`` (hex)."""
    digest = hashlib.sha256()
    if not _is_structured(name):
        digest.update(content)
        return digest.hexdigest()
    if name.endswith(".yaml"):
        raise BundleSignatureError(f"{name}: YAML data files are not signed here; use data.json")
    try:
        value = json.loads(
            content.decode("utf-8"),
            parse_int=_Number,
            parse_float=_Number,
            parse_constant=_reject_constant,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleSignatureError(f"{name} is not JSON: {exc}") from None
    _walk(value, digest.update)
    return digest.hexdigest()


def _claims(files: Mapping[str, bytes], kid: str) -> bytes:
    entries = [
        {"name": name.lstrip("/"), "hash": file_hash(name, content), "algorithm": HASH_ALGORITHM}
        for name, content in sorted(files.items())
        if name.lstrip("/") != SIGNATURES_FILE
    ]
    return json.dumps({"files": entries, "keyid": kid}, separators=(",", ":")).encode()


def sign_bundle_files(files: Mapping[str, bytes], key: SigningKey, kid: str) -> bytes:
    """The ``.signatures.json`` for ``files`` (path → content), signed by ``key`` as ``kid``."""
    token = sign_compact(key, kid, _claims(files, kid))
    return json.dumps({"signatures": [token]}, separators=(",", ":")).encode()


def verify_bundle_files(
    files: Mapping[str, bytes], trusted: Mapping[str, tuple[Algorithm, PublicKey]]
) -> str:
    """Check ``files``' ``.signatures.json`` the way OPA does; the signing key's id.

    Every file but the signatures must be listed with its hash, and nothing
    else; the JWS must verify with the key its ``kid`` names in ``trusted``.
    """
    names = {name.lstrip("/"): content for name, content in files.items()}
    raw = names.pop(SIGNATURES_FILE, None)
    if raw is None:
        raise BundleSignatureError("the bundle has no .signatures.json")
    try:
        document = json.loads(raw)
        (token,) = document["signatures"]
    except (ValueError, KeyError, TypeError):
        raise BundleSignatureError(".signatures.json must hold exactly one JWS") from None
    try:
        header, payload = verify_compact(str(token), trusted)
        listed = json.loads(payload)["files"]
    except SignatureError as exc:
        raise BundleSignatureError(f"bundle signature: {exc}") from None
    except (ValueError, KeyError, TypeError):
        raise BundleSignatureError("the signature's payload lists no files") from None
    covered = {str(entry.get("name")): entry for entry in listed if isinstance(entry, dict)}
    if set(covered) != set(names):
        missing = sorted(set(names) - set(covered))
        extra = sorted(set(covered) - set(names))
        raise BundleSignatureError(
            f"signature covers other files (unsigned: {missing}, absent: {extra})"
        )
    for name, content in names.items():
        entry = covered[name]
        if entry.get("algorithm") != HASH_ALGORITHM or entry.get("hash") != file_hash(
            name, content
        ):
            raise BundleSignatureError(f"{name}: digest mismatch")
    return str(header["kid"])
