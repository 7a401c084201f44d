"""A local process cannot read an enforcer's credentials or rewrite its OPA through the REST API.

Real OPA processes, started by the data plane's own `EnforcerStack` and its
`render`, as an operator's machine runs them.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nexus_control.access.signing_keys import init_keys, load_signing_key, public_pem
from nexus_dataplane.enforcer import Enforcer, EnforcerStack, StackOptions, enforcer_spec, render
from nexus_dataplane.opa import OPA_API_TOKEN_FILE, OPA_AUTHZ_FILE
from nexus_runtime.toolchain import find_envoy, find_opa

ENFORCER_TOKEN = "enforcer-bearer-token-that-must-stay-private"
EVIL_POLICY = b"""package nexus.envoy.authz

decision := {"allowed": true, "http_status": 200}
"""


def _options(workdir: Path) -> StackOptions:
    keys = init_keys(workdir / "keys")
    return StackOptions(
        region="eu-west-1",
        control_plane_url="http://127.0.0.1:9",
        token=ENFORCER_TOKEN,
        key_id="k",
        verification_key_pem=public_pem(load_signing_key(keys.signing)),
        workdir=workdir / "dataplane",
        opa_bin=find_opa(None),
        envoy_bin=find_envoy(),
        audit_url="http://127.0.0.1:9",
        audit_token=ENFORCER_TOKEN,
        with_envoy=False,
    )


@pytest.fixture(scope="module")
def enforcer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Enforcer]:
    stack = EnforcerStack(_options(tmp_path_factory.mktemp("opa-api")), count=1)
    stack.start(wait_for_bundles=False)
    try:
        yield stack.enforcers[0]
    finally:
        stack.stop()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_enforcer_credentials_are_not_world_readable(enforcer: Enforcer, tmp_path: Path) -> None:
    rendered = tmp_path / "rendered"
    options = _options(tmp_path)
    render(
        enforcer_spec(options, "eu-west-1-a", 8080),
        rendered,
        opa_bin=options.opa_bin,
        envoy_bin=options.envoy_bin,
    )
    running = enforcer.opa.workdir
    holders = [
        rendered / "opa-config.yaml",
        rendered / OPA_API_TOKEN_FILE,
        rendered / OPA_AUTHZ_FILE,
        enforcer.opa.config_path,
        enforcer.opa.authz_path,
        running / OPA_API_TOKEN_FILE,
    ]
    for path in holders:
        assert _mode(path) == 0o600, f"{path} is {oct(_mode(path))}"
    # Every file that holds the bearer token is among them: nothing else leaks it.
    for directory in (rendered, running):
        for path in directory.rglob("*"):
            if path.is_file() and ENFORCER_TOKEN.encode() in path.read_bytes():
                assert _mode(path) == 0o600, f"{path} holds the token at {oct(_mode(path))}"
    # Decision events (inputs, results) wait on the enforcer's disk: its own eyes only.
    segments = enforcer.spec.segment_dir
    assert segments.parent == enforcer.spec.persistence_dir.parent
    assert _mode(segments) == 0o700, f"{segments} is {oct(_mode(segments))}"


def test_local_process_cannot_rewrite_enforcer_policy_via_opa_api(enforcer: Enforcer) -> None:
    url = enforcer.opa_url
    guesses: list[dict[str, str]] = [
        {},
        {"authorization": "Bearer guess"},
        {"authorization": f"Bearer {ENFORCER_TOKEN}"},  # the control-plane token is not it
        enforcer.opa_headers,  # even the API's own token may not write
    ]
    for headers in guesses:
        put_policy = httpx.put(
            f"{url}/v1/policies/evil", content=EVIL_POLICY, headers=headers, timeout=10
        )
        assert put_policy.status_code == 401, (headers, put_policy.text)
        put_data = httpx.put(
            f"{url}/v1/data/nexus/config", json={"tenants": {}}, headers=headers, timeout=10
        )
        assert put_data.status_code == 401, (headers, put_data.text)
        patch = httpx.patch(
            f"{url}/v1/data",
            json=[{"op": "add", "path": "/nexus_state", "value": {}}],
            headers=headers,
            timeout=10,
        )
        assert patch.status_code == 401, (headers, patch.text)
    for headers in guesses[:3]:
        read = httpx.get(f"{url}/v1/data", headers=headers, timeout=10)
        assert read.status_code == 401, "without the API token nothing is read either"
    # The health check still answers without a token; the owner still reads.
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    policies = httpx.get(f"{url}/v1/policies", headers=enforcer.opa_headers, timeout=10)
    assert policies.status_code == 200
    assert all(p["id"] != "evil" for p in policies.json()["result"])
    decision = httpx.post(
        f"{url}/v1/data/nexus/envoy/authz/decision",
        json={"input": {}},
        headers=enforcer.opa_headers,
        timeout=10,
    )
    assert decision.status_code == 200
    assert "result" not in decision.json(), "no decision exists but the signed bundle's"
