"""A gateway request, and the input document OPA's ext_authz plugin builds from it.

The plugin (data-plane/opa/extauthz) turns Envoy's CheckRequest into
``input.attributes`` plus ``parsed_path``, ``parsed_query`` and
``parsed_body``. :meth:`GatewayRequest.to_opa_input` builds the same document,
so the SDK and the tests ask OPA's REST API exactly what Envoy would; a parity
test through real Envoy keeps the two equal (tests/e2e/test_input_parity.py).
Like Envoy, it carries the body only on routes whose policy reads it, and it
decides on the path as Envoy's listener canonicalises it
(`nexus_dataplane.envoy.PATH_NORMALISATION`): :func:`canonical_path`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from nexus_dataplane.spec import DEFAULT_BODY_LIMITS

__all__ = [
    "DEFAULT_HOST",
    "GatewayRequest",
    "RefusedRequestError",
    "canonical_path",
    "credential_sha256",
    "parsed_path",
]

DEFAULT_HOST = "gateway.nexus.local"

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPED_BY_ENVOY = frozenset(' "<>`{}|^')
"""Characters Envoy's path normalisation percent-encodes (with control and non-ASCII ones)."""
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_MALFORMED_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ESCAPED_SLASH = re.compile(r"%(2f|5c)", re.IGNORECASE)
_METHOD = re.compile(r"[A-Z]+")


class RefusedRequestError(ValueError):
    """A request Envoy's listener refuses with 400 before any decision is made."""


def canonical_path(target: str) -> str:
    """The request target as Envoy's listener forwards it, to ext_authz and upstream.

    Envoy runs with ``normalize_path`` (RFC 3986 section 6: escapes of unreserved
    characters decoded, a backslash read as "/", dot segments removed),
    ``merge_slashes`` and ``path_with_escaped_slashes_action: REJECT_REQUEST``;
    the query string is left as it is. Raises :class:`RefusedRequestError` for what
    Envoy refuses: a fragment, an escaped slash or backslash, a target that
    is not an absolute path.
    """
    if "#" in target:
        raise RefusedRequestError(f"{target!r}: a request target has no fragment")
    path, sep, query = target.partition("?")
    if not path.startswith("/"):
        raise RefusedRequestError(f"{target!r}: the request target is not an absolute path")
    if _ESCAPED_SLASH.search(path):
        raise RefusedRequestError(f"{target!r}: an escaped slash or backslash in the path")
    path = _ESCAPE.sub(_decode_unreserved, path.replace("\\", "/"))
    path = "".join(_escape_for_envoy(c) for c in path)
    path = re.sub("/{2,}", "/", _remove_dot_segments(path))
    return path + sep + query


def _decode_unreserved(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else match.group(0)


def _escape_for_envoy(char: str) -> str:
    if char in _ESCAPED_BY_ENVOY or ord(char) < 0x20 or ord(char) >= 0x7F:
        return "".join(f"%{byte:02X}" for byte in char.encode())
    return char


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 on an absolute path: "." and ".." segments resolved."""
    out: list[str] = []
    segments = path.split("/")[1:]
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        elif segment == ".":
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


@dataclass(frozen=True)
class GatewayRequest:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None

    def header_map(self) -> dict[str, str]:
        """Headers as Envoy passes them: lower-case names."""
        headers = {k.lower(): v for k, v in self.headers.items()}
        if self.body is not None:
            headers.setdefault("content-type", "application/json")
        return headers

    def body_text(self) -> str:
        return json.dumps(self.body, separators=(",", ":")) if self.body is not None else ""

    def to_opa_input(
        self, body_limits: tuple[tuple[str, int], ...] = DEFAULT_BODY_LIMITS
    ) -> dict[str, Any]:
        """The input document; ``body_limits`` are the Envoy routes that forward bodies.

        The path is :func:`canonical_path` of ``self.path``, as the plugin
        receives it; :class:`RefusedRequestError` where Envoy would answer 400
        itself (and for a method not in upper case: HTTP methods are
        case-sensitive and Envoy's HTTP/1 codec refuses "post"), or where the
        plugin refuses the target (a malformed escape, a ";" in the query).
        """
        if not _METHOD.fullmatch(self.method):
            raise RefusedRequestError(f"{self.method!r}: a method is upper-case letters")
        target = canonical_path(self.path)
        query = target.partition("?")[2]
        if _MALFORMED_ESCAPE.search(target) or ";" in query:
            # The plugin's refusal (400, nexus.request.target_invalid), before the policy.
            raise RefusedRequestError(f"{self.path!r}: a malformed percent-escape or a ';'")
        split = urlsplit(target)
        forwards_body = any(split.path.startswith(prefix) for prefix, _ in body_limits)
        headers = self.header_map()
        host = headers.get("host", DEFAULT_HOST)
        # Envoy passes HTTP/2-style pseudo-headers to ext_authz beside the real ones.
        headers.update(
            {
                ":method": self.method,
                ":path": target,
                ":scheme": "http",
                ":authority": host,
            }
        )
        http: dict[str, Any] = {
            "method": self.method,
            "path": target,
            "headers": headers,
            "host": host,
            "scheme": "http",
            "protocol": "HTTP/1.1",
        }
        body = self.body_text() if forwards_body else ""
        if body:
            http["body"] = body
            http["size"] = str(len(body.encode()))
        return {
            "attributes": {"request": {"http": http}},
            "parsed_path": parsed_path(split.path),
            "parsed_query": dict(parse_qs(split.query, keep_blank_values=True)),
            "parsed_body": self.body if forwards_body else None,
            "truncated_body": False,
            "nexus": _nexus_fields(headers),
            "version": {"encoding": "protojson", "ext_authz": "v3"},
        }


def parsed_path(path: str) -> list[str]:
    """The path's segments as the plugin (and upstream opa-envoy-plugin) splits them.

    Percent-decoded, leading slashes trimmed, every other empty segment kept:
    ``/v1/chats/`` is ``["v1", "chats", ""]`` and ``/`` is ``[""]``.
    """
    return unquote(path).lstrip("/").split("/")


def credential_sha256(authorization: str | None) -> str | None:
    """SHA-256 (hex) of a bearer credential, read as the policy reads it; None without one."""
    if authorization is None or authorization[:7].lower() != "bearer ":
        return None
    token = authorization[7:].strip()
    return hashlib.sha256(token.encode()).hexdigest() if token else None


def _nexus_fields(headers: dict[str, str]) -> dict[str, str]:
    """``input.nexus``: what the plugin derives from the request for the policy."""
    digest = credential_sha256(headers.get("authorization"))
    return {"credential_sha256": digest} if digest else {}
