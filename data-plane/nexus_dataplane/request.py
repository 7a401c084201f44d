"""A gateway request, and the input document OPA's ext_authz plugin builds from it.

The plugin (data-plane/opa/extauthz) turns Envoy's CheckRequest into
``input.attributes`` plus ``parsed_path``, ``parsed_query`` and
``parsed_body``. :meth:`GatewayRequest.to_opa_input` builds the same document,
so the SDK and the tests ask OPA's REST API exactly what Envoy would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit


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

    def to_opa_input(self) -> dict[str, Any]:
        split = urlsplit(self.path)
        headers = self.header_map()
        http: dict[str, Any] = {
            "method": self.method.upper(),
            "path": self.path,
            "headers": headers,
            "host": headers.get("host", "gateway.nexus.local"),
            "scheme": "http",
            "protocol": "HTTP/1.1",
        }
        body = self.body_text()
        if body:
            http["body"] = body
            http["size"] = str(len(body.encode()))
        doc: dict[str, Any] = {
            "attributes": {"request": {"http": http}},
            "parsed_path": [p for p in split.path.split("/") if p],
            "parsed_query": dict(parse_qs(split.query)),
            "truncated_body": False,
            "version": {"encoding": "protojson", "ext_authz": "v3"},
        }
        if self.body is not None:
            doc["parsed_body"] = self.body
        return doc
