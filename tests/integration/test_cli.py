"""The `nexus-policy` command line, run as a user would run it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from nexus_control.authoring.opa import Opa
from nexus_dataplane.opa import OpaServer
from nexus_dataplane.process import ManagedProcess, free_port, http_ok
from nexus_dataplane.records import DEV_RECORD_ISSUER, RecordFacts, RecordSigner
from nexus_dataplane.request import GatewayRequest
from nexus_dataplane.sdk import ClientOptions, OpaClient
from tests.conftest import GATEWAY, REGO
from tests.fixtures.gotools import ratelimit_binary
from tests.fixtures.quality import PASSING, gated_bundle

pytestmark = pytest.mark.opa
CLI = [sys.executable, "-m", "nexus_cli"]


def nexus(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=300, env=env, cwd=cwd, check=False
    )


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    bundle = tmp_path / "gateway"
    shutil.copytree(GATEWAY, bundle)
    (bundle / "bundle.yaml").write_text(
        (bundle / "bundle.yaml").read_text().replace("../../rego", str(REGO))
    )
    env = {
        **os.environ,
        "NEXUS_KEYS_DIR": str(tmp_path / "keys"),
        "NEXUS_DIST_DIR": str(tmp_path / "dist"),
        "NEXUS_DATABASE_URL": f"sqlite:///{tmp_path / 'cp.db'}",
        "COLUMNS": "200",
    }
    return bundle, env


def test_check_reports_problems_with_places_and_exit_code(
    workspace: tuple[Path, dict[str, str]],
) -> None:
    bundle, env = workspace
    ok = nexus("check", str(bundle), env=env)
    assert ok.returncode == 0, ok.stderr
    assert "8 tenants" in ok.stdout
    models = (bundle / "models.yaml").read_text()
    line = models[: models.index("plans: [free, team, enterprise]")].count("\n") + 1
    (bundle / "models.yaml").write_text(
        models.replace("plans: [free, team, enterprise]", "plans: [gold]")
    )
    bad = nexus("check", str(bundle), env=env)
    assert bad.returncode == 1
    assert f"models.yaml:{line}:" in bad.stderr
    machine = nexus("check", str(bundle), "--format", "json", env=env)
    report = json.loads(machine.stdout)
    assert report["ok"] is False
    assert {p["file"].rsplit("/", 1)[-1] for p in report["problems"]} == {"models.yaml"}


def test_check_lists_what_quality_gates_and_says_it_cannot_see_evaluations(
    workspace: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    _, env = workspace
    bundle, _, _ = gated_bundle(tmp_path, "gated")
    text = nexus("check", str(bundle), env=env)
    assert text.returncode == 0, text.stderr
    assert "need a passing evaluation at publish; check cannot see evaluations" in text.stdout
    report = json.loads(nexus("check", str(bundle), "--format", "json", env=env).stdout)
    subjects = {gated["subject"] for gated in report["quality_gated"]}
    assert subjects == {
        f"prompt {s['prompt']!r} version {s['version']!r}"
        if "prompt" in s
        else f"model {s['model']!r}"
        for s in PASSING
    }
    assert all(":" in gated["at"] for gated in report["quality_gated"])


def test_dev_keys_let_a_newcomer_call_every_example_role(
    workspace: tuple[Path, dict[str, str]], tmp_path: Path, opa: Opa
) -> None:
    bundle, env = workspace
    overlay = tmp_path / "dev-keys"
    made = nexus("dev-keys", str(bundle), "--out", str(overlay), "--format", "json", env=env)
    assert made.returncode == 0, made.stderr
    keys = json.loads(made.stdout)["keys"]
    written = (overlay / "throwaway-credentials.yaml").read_text()
    assert keys and all(k["key"] not in written for k in keys), "only hashes reach the overlay"
    roles = {(k["tenant"], k["roles"][0]) for k in keys}
    assert ("acme", "chat-user") in roles and ("acme", "dpo") in roles
    signer_file = Path(json.loads(made.stdout)["record_signer"]["key"])
    assert oct(signer_file.stat().st_mode & 0o777) == "0o600", "the store's key is the owner's"
    assert nexus("check", str(bundle), "--overlay", str(overlay), env=env).returncode == 0
    nexus("keys", "init", env=env)
    built = nexus("build", str(bundle), "--overlay", str(overlay), "--format", "json", env=env)
    assert built.returncode == 0, built.stderr
    archive = json.loads(built.stdout)["path"]
    chat_key = next(k["key"] for k in keys if k["id"] == "dev-acme-chat-user")
    request = GatewayRequest(
        "POST",
        "/v1/chat/completions",
        {
            "authorization": f"Bearer {chat_key}",
            "x-nexus-tenant": "acme",
            "x-nexus-model": "gpt-4o",
        },
    )
    server = OpaServer(
        opa.binary,
        tmp_path / "opa",
        args=[
            "--bundle",
            archive,
            "--verification-key",
            str(tmp_path / "keys" / "bundle-signing.pub.pem"),
            "--verification-key-id",
            "nexus-bundle-signing",
            "--set",
            "labels.region=eu-west-1",
        ],
    )
    server.start_and_wait(bundles=False)
    # no control plane here: a state document with no spend stands in for the state bundle
    empty_state = {"period": "2026-01", "spend": {}, "disabled": {}}
    httpx.put(f"{server.url}/v1/data/nexus_state", json=empty_state, timeout=5).raise_for_status()
    signer = RecordSigner.from_file(signer_file, issuer=DEV_RECORD_ISSUER, kid="chat-store-dev")
    facts = RecordFacts("c-1", "acme", "chat-history", datetime.now(UTC) - timedelta(days=2))
    read = GatewayRequest(
        "GET",
        "/v1/chats/c-1",
        {
            "authorization": f"Bearer {chat_key}",
            "x-nexus-tenant": "acme",
            "x-nexus-record-token": signer.token(facts),
        },
    )
    try:
        with OpaClient(ClientOptions(server.url)) as client:
            assert client.decide(request).allowed is True
            assert client.decide(read).allowed is True
    finally:
        server.stop()


def test_build_diff_and_doctor(workspace: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    bundle, env = workspace
    assert nexus("keys", "init", env=env).returncode == 0
    assert oct((tmp_path / "keys" / "bundle-signing.pem").stat().st_mode & 0o777) == "0o600"
    built = nexus("build", str(bundle), "--format", "json", env=env)
    assert built.returncode == 0, built.stderr
    archive = Path(json.loads(built.stdout)["path"])
    assert archive.exists()

    (bundle / "tools.yaml").write_text(
        (bundle / "tools.yaml")
        .read_text()
        .replace(
            "    risk: critical\n    permission: tools:db-write",
            "    risk: low\n    permission: tools:db-write",
        )
    )
    diff = nexus("diff", str(archive), str(bundle), "--fail-on-widening", env=env)
    assert diff.returncode == 3
    assert "risk lowered: critical → low" in diff.stdout
    as_json = json.loads(
        nexus("diff", str(archive), str(bundle), "--format", "json", env=env).stdout
    )
    assert as_json["widens"] is True

    doctor = nexus("doctor", env=env)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "opa" in doctor.stdout and "envoy" in doctor.stdout


def test_missing_signing_key_is_an_environment_error(
    workspace: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    bundle, env = workspace
    result = nexus("build", str(bundle), env=env)
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert not (tmp_path / "dist").exists()


@pytest.fixture
def served(
    workspace: tuple[Path, dict[str, str]], tmp_path: Path
) -> Iterator[tuple[Path, dict[str, str]]]:
    bundle, env = workspace
    nexus("keys", "init", env=env)
    port = free_port()
    env = {**env, "NEXUS_PORT": str(port), "NEXUS_URL": f"http://127.0.0.1:{port}"}
    server = ManagedProcess("serve", [*CLI, "serve"], tmp_path / "serve", env=env)
    server.start()
    try:
        server.wait_ready(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 30)
        yield bundle, env
    finally:
        server.stop()
        log = server.log_tail(200)
        assert "nxp_" not in log, "tokens never reach the logs"


def token(env: dict[str, str], role: str, name: str) -> str:
    created = nexus("tokens", "create", "--role", role, "--name", name, "--json", env=env)
    assert created.returncode == 0, created.stderr
    return str(json.loads(created.stdout)["token"])


def test_publish_approve_and_watch_through_the_served_api(
    served: tuple[Path, dict[str, str]],
) -> None:
    bundle, env = served
    author = token(env, "author", "alice")
    approver = token(env, "approver", "bob")
    operator = token(env, "operator", "olivia")
    published = nexus("publish", str(bundle), "--json", env={**env, "NEXUS_ADMIN_TOKEN": author})
    assert published.returncode == 0, published.stderr
    result = json.loads(published.stdout)
    assert result["rollout"]["state"] == "pending_approval"
    own = nexus("approve", str(result["rollout"]["id"]), env={**env, "NEXUS_ADMIN_TOKEN": author})
    assert own.returncode == 2 and "403" in own.stderr
    approved = nexus(
        "approve",
        str(result["rollout"]["id"]),
        "--json",
        env={**env, "NEXUS_ADMIN_TOKEN": approver},
    )
    assert approved.returncode == 0, approved.stderr
    assert json.loads(approved.stdout)["state"] == "rolling"
    status = nexus("rollout", "status", env={**env, "NEXUS_ADMIN_TOKEN": operator})
    assert status.returncode == 0
    assert "eu-west-1" in status.stdout
    shown = nexus(
        "rollout", "show", str(result["rollout"]["id"]), env={**env, "NEXUS_ADMIN_TOKEN": operator}
    )
    assert "approved" in shown.stdout and "bob" in shown.stdout
    no_token = nexus("rollout", "status", env=env)
    assert no_token.returncode == 2


@pytest.mark.envoy
def test_dataplane_render_and_up_against_the_served_control_plane(
    served: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    bundle, env = served
    # With a RateLimits spec, `up` also starts Redis and the ratelimit service.
    (bundle / "ratelimits.yaml").write_text(
        "apiVersion: policy.nexus.ai/v1\nkind: RateLimits\nlimits:\n"
        "  - {id: per-tenant, scope: shared, unit: minute, rate: 600}\n"
        "  - {id: per-enforcer, scope: region, unit: second, rate: 50, burst: 100}\n"
    )
    author = token(env, "author", "alice")
    approver = token(env, "approver", "bob")
    result = json.loads(
        nexus("publish", str(bundle), "--json", env={**env, "NEXUS_ADMIN_TOKEN": author}).stdout
    )
    nexus("approve", str(result["rollout"]["id"]), env={**env, "NEXUS_ADMIN_TOKEN": approver})
    # No NEXUS_DATAPLANE_CONTROL_PLANE_URL: enforcers follow the control plane's NEXUS_URL.
    plane = {
        **env,
        "NEXUS_DATAPLANE_VERIFICATION_KEY_FILE": str(tmp_path / "keys" / "bundle-signing.pub.pem"),
        "NEXUS_DATAPLANE_WORKDIR": str(tmp_path / "dataplane"),
        "NEXUS_DATAPLANE_RATE_LIMITS_BUNDLE": str(bundle),
        "NEXUS_DATAPLANE_RATELIMIT_BIN": str(ratelimit_binary()),
    }
    rendered = nexus(
        "dataplane",
        "render",
        "--region",
        "eu-west-1",
        "--out",
        str(tmp_path / "cfg"),
        "--token",
        "t0ken",
        env=plane,
    )
    assert rendered.returncode == 0, rendered.stderr
    assert (tmp_path / "cfg" / "envoy.yaml").exists()
    opa_config = (tmp_path / "cfg" / "opa-config.yaml").read_text()
    assert f"url: {env['NEXUS_URL']}/v1/opa" in opa_config

    up = nexus(
        "dataplane", "up", "--region", "eu-west-1", "--enforcers", "1", "--seconds", "8", env=plane
    )
    assert up.returncode == 0, up.stderr
    assert "enrolled enforcer eu-west-1-1 in region eu-west-1 with its own token" in up.stderr
    assert "eu-west-1-1" in up.stdout
    # Each enforcer's addresses are printed as soon as it is up, not when it stops.
    ready = next(line for line in up.stderr.splitlines() if line.startswith("eu-west-1-1: gateway"))
    assert "http://127.0.0.1:" in ready and "ext_authz 127.0.0.1:" in ready
    assert env["NEXUS_URL"] in ready
    assert up.stderr.index(ready) < up.stderr.index("enforcers stopped")
    assert "ratelimit service 127.0.0.1:" in up.stderr
    (envoy_yaml,) = (tmp_path / "dataplane").rglob("envoy.yaml")
    rendered_envoy = envoy_yaml.read_text()
    assert "envoy.filters.http.ratelimit" in rendered_envoy
    assert "envoy.filters.http.local_ratelimit" in rendered_envoy
    operator = token(env, "operator", "olivia")
    fleet = json.loads(nexus("fleet", "--json", env={**env, "NEXUS_ADMIN_TOKEN": operator}).stdout)
    nexus_bundle = fleet["enforcers"][0]["bundles"]["nexus"]
    assert nexus_bundle["active_revision"] == result["revision"]
