"""An outsider's body costs the control plane nothing before its token is checked.

Against the real ``nexus-policy serve`` process: its peak resident memory is
read from ``/proc`` before and after each attack, and a body that should not
have been read must not have grown it.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nexus_contract.wire import SOURCES_CONTENT_TYPE
from tests.fixtures.plane_process import ServeProcess, push_body, rss_high_water_bytes

MiB = 1024 * 1024
HUGE = 300 * MiB
SLACK = 50 * MiB


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    server = ServeProcess(tmp_path_factory.mktemp("serve"))
    server.start_and_wait()
    try:
        # Warm the routes up once, so "idle" includes what a first request loads.
        headers = {"authorization": f"Bearer {server.tokens['author']}"}
        httpx.get(f"{server.url}/v1/bundles", headers=headers, timeout=30)
        httpx.post(f"{server.url}/v1/usage", content=b"{}", timeout=30)
        yield server
    finally:
        server.stop()


def _bound(server: ServeProcess) -> int:
    assert server.pid is not None
    return 2 * rss_high_water_bytes(server.pid) + SLACK


@pytest.mark.parametrize(
    ("headers", "chunked"),
    [
        ({}, False),
        ({}, True),
        ({"authorization": "Bearer not-a-token"}, False),
        ({"authorization": "Bearer not-a-token"}, True),
    ],
    ids=["no-token", "no-token-chunked", "unknown-token", "unknown-token-chunked"],
)
def test_unauthenticated_huge_body_costs_bounded_memory(
    served: ServeProcess, headers: dict[str, str], chunked: bool
) -> None:
    bound = _bound(served)
    status, body = push_body(
        served,
        "/v1/bundles",
        {**headers, "content-type": SOURCES_CONTENT_TYPE},
        HUGE,
        chunked=chunked,
    )
    assert status == 401, body
    assert b"unauthenticated" in body
    assert served.pid is not None
    peak = rss_high_water_bytes(served.pid)
    assert peak < bound, f"peak RSS {peak // MiB} MiB, bound {bound // MiB} MiB"


def test_authenticated_body_past_the_server_limit_is_cut_while_streaming(
    served: ServeProcess,
) -> None:
    bound = _bound(served)
    headers = {
        "authorization": f"Bearer {served.tokens['author']}",
        "content-type": SOURCES_CONTENT_TYPE,
    }
    status, body = push_body(served, "/v1/bundles", headers, HUGE, chunked=True)
    assert status == 413, body
    assert b"too_large" in body
    assert served.pid is not None
    # What a route may buffer (the 64 MiB sources limit) is the most it costs.
    assert rss_high_water_bytes(served.pid) < bound + 65 * MiB


@pytest.mark.parametrize("path", ["/v1/usage", "/v1/rollouts/1/approve", "/v1/opa/status"])
def test_unauthenticated_malformed_json_gets_401(served: ServeProcess, path: str) -> None:
    for headers in ({}, {"authorization": "Bearer not-a-token"}):
        response = httpx.post(
            f"{served.url}{path}",
            content=b'{"unterminated": ',
            headers={**headers, "content-type": "application/json"},
            timeout=30,
        )
        assert response.status_code == 401, (path, headers, response.text)
        assert response.json()["error"]["code"] == "unauthenticated"
        assert response.headers["www-authenticate"] == "Bearer"


def test_openapi_needs_a_token(served: ServeProcess) -> None:
    for path in ("/openapi.json", "/docs", "/redoc"):
        response = httpx.get(f"{served.url}{path}", timeout=30)
        assert response.status_code in (401, 404), (path, response.status_code)
        assert "paths" not in response.text
    wrong = httpx.get(
        f"{served.url}/openapi.json", headers={"authorization": "Bearer nope"}, timeout=30
    )
    assert wrong.status_code == 401
    machine = httpx.get(
        f"{served.url}/openapi.json",
        headers={"authorization": f"Bearer {served.tokens['gateway']}"},
        timeout=30,
    )
    assert machine.status_code == 403
    person = httpx.get(
        f"{served.url}/openapi.json",
        headers={"authorization": f"Bearer {served.tokens['operator']}"},
        timeout=30,
    )
    assert person.status_code == 200
    assert "/v1/bundles" in person.json()["paths"]


def _bomb(member_bytes: int) -> bytes:
    """Sources whose one member streams ``member_bytes`` of zeros: tiny once gzipped."""
    descriptor = b'{"format": 1, "overlays": 0}'
    raw = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9) as zipped,
        tarfile.open(fileobj=zipped, mode="w|") as tar,
    ):
        meta = tarfile.TarInfo("nexus-sources.json")
        meta.size = len(descriptor)
        tar.addfile(meta, io.BytesIO(descriptor))
        member = tarfile.TarInfo("bundle/tenants.yaml")
        member.size = member_bytes

        class Zeros(io.RawIOBase):
            left = member_bytes

            def readable(self) -> bool:
                return True

            def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
                n = min(len(buffer), self.left)
                buffer[:n] = b"\0" * n
                self.left -= n
                return n

        tar.addfile(member, io.BufferedReader(Zeros()))
    return raw.getvalue()


def test_tar_bomb_member_is_refused_while_reading(served: ServeProcess, tmp_path: Path) -> None:
    bomb = _bomb(512 * MiB)
    assert len(bomb) < 2 * MiB
    bound = _bound(served)
    response = httpx.post(
        f"{served.url}/v1/bundles",
        content=bomb,
        headers={
            "authorization": f"Bearer {served.tokens['author']}",
            "content-type": SOURCES_CONTENT_TYPE,
        },
        timeout=120,
    )
    assert response.status_code == 422, response.text
    assert "limit" in response.json()["error"]["message"]
    assert served.pid is not None
    peak = rss_high_water_bytes(served.pid)
    assert peak < bound, f"peak RSS {peak // MiB} MiB, bound {bound // MiB} MiB"
