"""A thin typed client for OPA's REST API, for in-process policy checks.

The agent engine asks "may this tool call run?" before it runs it; this
client asks the enforcer's OPA the same question Envoy asks, and returns a
typed :class:`Decision`. Sync and async flavours share one request builder.

Deliberately small: explicit timeouts on every call, a CA bundle and a client
certificate for mutual TLS, and no retries. A decision query is cheap to
repeat but its decision log entry is not free, so a retry is the caller's call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from nexus_contract.decision import Reason
from nexus_contract.errors import NexusError
from nexus_contract.wire import DECISION_PATH
from nexus_dataplane.request import GatewayRequest

__all__ = [
    "DEFAULT_DECISION_PATH",
    "DEFAULT_TIMEOUT",
    "AsyncOpaClient",
    "ClientOptions",
    "Decision",
    "OpaClient",
    "OpaClientError",
    "Reason",
    "UndefinedDecisionError",
]

DEFAULT_DECISION_PATH = DECISION_PATH
DEFAULT_TIMEOUT = httpx.Timeout(2.0, connect=1.0)


class OpaClientError(NexusError):
    """OPA could not be asked or gave no usable answer."""


class UndefinedDecisionError(OpaClientError):
    """The policy gave no result for the path: no bundle active, or a wrong path."""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    http_status: int
    headers: dict[str, str]
    response_headers: dict[str, str]
    reasons: tuple[Reason, ...]
    decision_id: str | None
    raw: dict[str, Any]

    @classmethod
    def from_result(cls, result: Any, decision_id: str | None) -> Decision:
        if isinstance(result, bool):
            return cls(result, 200 if result else 403, {}, {}, (), decision_id, {"allowed": result})
        if not isinstance(result, dict) or not isinstance(result.get("allowed"), bool):
            raise OpaClientError(f"decision is not a decision object: {result!r:.200}")
        reasons = tuple(
            Reason(
                rule=str(r.get("rule", "")),
                message=str(r.get("message", "")),
                controls=tuple(str(c) for c in r.get("controls", [])),
            )
            for r in result.get("reasons", [])
            if isinstance(r, dict)
        )
        return cls(
            allowed=result["allowed"],
            http_status=int(result.get("http_status", 200 if result["allowed"] else 403)),
            headers={str(k): str(v) for k, v in result.get("headers", {}).items()},
            response_headers={
                str(k): str(v) for k, v in result.get("response_headers_to_add", {}).items()
            },
            reasons=reasons,
            decision_id=decision_id,
            raw=result,
        )


@dataclass(frozen=True)
class ClientOptions:
    base_url: str
    token: str | None = None
    ca_bundle: Path | None = None
    client_cert: tuple[Path, Path] | None = None
    timeout: httpx.Timeout = field(default_factory=lambda: DEFAULT_TIMEOUT)
    decision_path: str = DEFAULT_DECISION_PATH

    def client_kwargs(self) -> dict[str, Any]:
        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        kwargs: dict[str, Any] = {
            "base_url": self.base_url,
            "headers": headers,
            "timeout": self.timeout,
            "verify": str(self.ca_bundle) if self.ca_bundle else True,
        }
        if self.client_cert:
            kwargs["cert"] = (str(self.client_cert[0]), str(self.client_cert[1]))
        return kwargs


def _decision_url(path: str) -> str:
    return "/v1/data/" + path.strip("/")


def _parse(response: httpx.Response) -> Decision:
    if response.status_code != httpx.codes.OK:
        raise OpaClientError(f"OPA answered {response.status_code}: {response.text[:300]}")
    try:
        body = response.json()
    except ValueError as exc:
        raise OpaClientError("OPA answered with invalid JSON") from exc
    if "result" not in body:
        raise UndefinedDecisionError("the policy gave no decision (is a bundle active?)")
    return Decision.from_result(body["result"], body.get("decision_id"))


class OpaClient:
    """Synchronous client; use as a context manager or call :meth:`close`."""

    def __init__(self, options: ClientOptions) -> None:
        self.options = options
        self._http = httpx.Client(**options.client_kwargs())

    def decide(self, request: GatewayRequest) -> Decision:
        """Ask the gateway decision for ``request``, as Envoy would."""
        return self.evaluate(request.to_opa_input())

    def evaluate(self, input_doc: dict[str, Any], path: str | None = None) -> Decision:
        try:
            response = self._http.post(
                _decision_url(path or self.options.decision_path), json={"input": input_doc}
            )
        except httpx.HTTPError as exc:
            raise OpaClientError(f"cannot reach OPA at {self.options.base_url}: {exc}") from exc
        return _parse(response)

    def healthy(self, *, bundles: bool = True) -> bool:
        try:
            response = self._http.get("/health", params={"bundles": "true"} if bundles else None)
        except httpx.HTTPError:
            return False
        return response.status_code == httpx.codes.OK

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OpaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncOpaClient:
    """Asynchronous client with the same surface as :class:`OpaClient`."""

    def __init__(self, options: ClientOptions) -> None:
        self.options = options
        self._http = httpx.AsyncClient(**options.client_kwargs())

    async def decide(self, request: GatewayRequest) -> Decision:
        return await self.evaluate(request.to_opa_input())

    async def evaluate(self, input_doc: dict[str, Any], path: str | None = None) -> Decision:
        try:
            response = await self._http.post(
                _decision_url(path or self.options.decision_path), json={"input": input_doc}
            )
        except httpx.HTTPError as exc:
            raise OpaClientError(f"cannot reach OPA at {self.options.base_url}: {exc}") from exc
        return _parse(response)

    async def healthy(self, *, bundles: bool = True) -> bool:
        try:
            response = await self._http.get(
                "/health", params={"bundles": "true"} if bundles else None
            )
        except httpx.HTTPError:
            return False
        return response.status_code == httpx.codes.OK

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncOpaClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
