"""A gateway request, and the input document OPA's ext_authz plugin builds from it.

The plugin (data-plane/opa/extauthz) turns Envoy's CheckRequest into
``input.attributes`` plus ``parsed_path``, ``parsed_query`` and
``parsed_body``. :meth:`GatewayRequest.to_opa_input` builds the same document,
so the SDK and the tests ask OPA's REST API exactly what Envoy would; a parity
test through real Envoy keeps the two equal (tests/e2e/test_input_parity.py).
Like Envoy, it carries the body only on routes whose policy reads it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from nexus_dataplane.spec import DEFAULT_BODY_LIMITS

__all__ = ["DEFAULT_HOST", "GatewayRequest", "credential_sha256", "parsed_path"]

DEFAULT_HOST = "gateway.nexus.local"


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
        """The input document; ``body_limits`` are the Envoy routes that forward bodies."""
        split = urlsplit(self.path)
        forwards_body = any(split.path.startswith(prefix) for prefix, _ in body_limits)
        headers = self.header_map()
        host = headers.get("host", DEFAULT_HOST)
        # Envoy passes HTTP/2-style pseudo-headers to ext_authz beside the real ones.
        headers.update(
            {
                ":method": self.method.upper(),
                ":path": self.path,
                ":scheme": "http",
                ":authority": host,
            }
        )
        http: dict[str, Any] = {
            "method": self.method.upper(),
            "path": self.path,
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
