"""The CLI's client for the control plane's HTTP API.

Every call sends the caller's bearer token, has explicit timeouts, and turns
the API's uniform error body into :class:`ApiCallError` with its status.
"""

from __future__ import annotations

from typing import Any

import httpx

from nexus_contract.errors import NexusError
from nexus_contract.wire import EXPECTED_REVISION_HEADER, SOURCES_CONTENT_TYPE

__all__ = ["DEFAULT_TIMEOUT", "ApiCallError", "ControlPlaneClient"]

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)


class ApiCallError(NexusError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class ControlPlaneClient:
    def __init__(
        self, base_url: str, token: str | None, *, timeout: httpx.Timeout = DEFAULT_TIMEOUT
    ) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ControlPlaneClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiCallError(0, "unreachable", f"{self._http.base_url}: {exc}") from exc
        if response.is_error:
            try:
                error = response.json()["error"]
                raise ApiCallError(response.status_code, error["code"], error["message"])
            except (ValueError, KeyError, TypeError):
                raise ApiCallError(
                    response.status_code, "http_error", response.text[:300]
                ) from None
        if not response.content:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.content

    def get(self, path: str, **params: Any) -> Any:
        return self._call("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None) -> Any:
        return self._call("POST", path, json=body)

    def delete(self, path: str) -> Any:
        return self._call("DELETE", path)

    def publish(self, sources: bytes, *, expected_revision: str | None = None) -> dict[str, Any]:
        """Send a bundle's sources (`nexus_control.authoring.sources.pack_sources`)."""
        headers = {"content-type": SOURCES_CONTENT_TYPE}
        if expected_revision is not None:
            headers[EXPECTED_REVISION_HEADER] = expected_revision
        result: dict[str, Any] = self._call("POST", "/v1/bundles", content=sources, headers=headers)
        return result

    def fleet(self, region: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.get("/v1/fleet", region=region)
        return result
