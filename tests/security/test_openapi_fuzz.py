"""Schemathesis fuzzes every operation of the control plane's own OpenAPI document.

Against the real ``nexus-policy serve`` process, with a token of a role each
operation admits (``x-nexus-roles``), so the fuzzing reaches the handlers and
not only the 401. No answer may be a 5xx; afterwards the server's peak memory
stays under twice its idle peak.
The run is bounded by a fixed number of examples per operation, so it ends
well inside three minutes on a CI machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from nexus_contract.wire import SOURCES_CONTENT_TYPE
from tests.fixtures.plane_process import ServeProcess, rss_high_water_bytes

EXAMPLES_PER_OPERATION = 5
FIRST_CHOICE = ("operator", "approver", "author", "compliance", "enforcer", "gateway")


@schemathesis.serializer(SOURCES_CONTENT_TYPE)
def _sources(_: Any, value: Any) -> bytes:
    """The sources archive is binary: fuzzed bytes go out as they are."""
    return value if isinstance(value, bytes) else str(value).encode()


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    server = ServeProcess(tmp_path_factory.mktemp("fuzz"))
    server.start_and_wait()
    assert server.pid is not None
    server.idle_peak = rss_high_water_bytes(server.pid)  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api_schema(fuzzed: ServeProcess) -> Any:
    document = httpx.get(
        f"{fuzzed.url}/openapi.json",
        headers={"authorization": f"Bearer {fuzzed.tokens['operator']}"},
        timeout=30,
    ).json()
    # Generated cases only: the coverage and examples phases would multiply the
    # cases per operation past the time bound, and the stateful phase needs links.
    config = SchemathesisConfig.from_dict(
        {
            "base-url": fuzzed.url,
            "phases": {
                "coverage": {"enabled": False},
                "examples": {"enabled": False},
                "stateful": {"enabled": False},
            },
        }
    )
    return schemathesis.openapi.from_dict(document, config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


def _token_for(server: ServeProcess, roles: list[str]) -> str:
    for role in FIRST_CHOICE:
        if role in roles:
            return server.tokens[role]
    return server.tokens["operator"]


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_operation_answers_5xx(case: Any, fuzzed: ServeProcess) -> None:
    roles = case.operation.definition.raw.get("x-nexus-roles", [])
    headers = {"authorization": f"Bearer {_token_for(fuzzed, roles)}"}
    if case.path.startswith("/v1/opa/"):
        headers["x-nexus-enforcer"] = "eu-west-1-a"
    response = case.call(base_url=fuzzed.url, headers=headers, timeout=30)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} → {response.status_code}: {response.text[:300]}"
    )


def test_fuzzing_left_memory_bounded(fuzzed: ServeProcess) -> None:
    assert fuzzed.pid is not None
    idle: int = fuzzed.idle_peak  # type: ignore[attr-defined]
    peak = rss_high_water_bytes(fuzzed.pid)
    assert peak < 2 * idle, f"peak {peak >> 20} MiB after fuzzing, idle {idle >> 20} MiB"
