"""The real OPA loads our signed bundle, and refuses it tampered, unsigned or under a wrong key."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from nexus_control.access.signing_keys import public_pem
from nexus_control.authoring.bundle import BuiltBundle
from nexus_dataplane.opa import OpaServer
from nexus_dataplane.process import ProcessError
from nexus_dataplane.request import GatewayRequest
from nexus_dataplane.sdk import ClientOptions, OpaClient
from tests.conftest import TEST_KEY_ID
from tests.fixtures.archives import rewrite_archive

pytestmark = pytest.mark.opa


def start_opa(opa_bin: Path, workdir: Path, bundle: Path, public_key: Path) -> OpaServer:
    server = OpaServer(
        opa_bin,
        workdir,
        args=[
            "--bundle",
            str(bundle),
            "--verification-key",
            str(public_key),
            "--verification-key-id",
            TEST_KEY_ID,
            "--set",
            "labels.region=eu-west-1",
        ],
    )
    server.start_and_wait(bundles=False, timeout_s=20)
    return server


def test_signed_bundle_loads_and_decides(
    opa_bin: Path, tmp_path: Path, built_gateway: BuiltBundle, signing_public_pem: Path
) -> None:
    server = start_opa(opa_bin, tmp_path, built_gateway.path, signing_public_pem)
    try:
        with OpaClient(ClientOptions(server.url)) as client:
            decision = client.decide(GatewayRequest("GET", "/v1/unknown"))
        assert decision.allowed is False
        assert decision.http_status == 404
    finally:
        server.stop()


def refused(opa_bin: Path, workdir: Path, bundle: Path, key: Path) -> str:
    with pytest.raises(ProcessError) as info:
        start_opa(opa_bin, workdir, bundle, key).stop()
    return str(info.value)


def test_tampered_data_file_is_refused(
    opa_bin: Path, tmp_path: Path, built_gateway: BuiltBundle, signing_public_pem: Path
) -> None:
    tampered = tmp_path / "tampered.tar.gz"
    rewrite_archive(built_gateway.path, tampered, {"nexus/config/data.json": b"{}"})
    assert "data.json" in refused(opa_bin, tmp_path, tampered, signing_public_pem)


def test_tampered_policy_file_is_refused(
    opa_bin: Path, tmp_path: Path, built_gateway: BuiltBundle, signing_public_pem: Path
) -> None:
    tampered = tmp_path / "tampered.tar.gz"
    module = "nexus/envoy/authz.rego"
    rewrite_archive(
        built_gateway.path,
        tampered,
        {module: b'package nexus.envoy.authz\n\ndecision := {"allowed": true}\n'},
    )
    message = refused(opa_bin, tmp_path, tampered, signing_public_pem)
    assert "authz.rego" in message or "digest mismatch" in message


def test_unsigned_bundle_is_refused(
    opa_bin: Path, tmp_path: Path, built_gateway: BuiltBundle, signing_public_pem: Path
) -> None:
    unsigned = tmp_path / "unsigned.tar.gz"
    rewrite_archive(built_gateway.path, unsigned, {".signatures.json": None})
    message = refused(opa_bin, tmp_path, unsigned, signing_public_pem)
    assert "signature" in message.lower()


def test_bundle_under_a_wrong_key_is_refused(
    opa_bin: Path, tmp_path: Path, built_gateway: BuiltBundle
) -> None:
    other = tmp_path / "other.pub.pem"
    other.write_text(public_pem(rsa.generate_private_key(65537, 2048)))
    message = refused(opa_bin, tmp_path, built_gateway.path, other)
    assert "verif" in message.lower()
