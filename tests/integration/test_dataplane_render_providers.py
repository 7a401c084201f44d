"""`nexus-policy dataplane render` with the bundle's providers: the Envoy config the Helm
chart mounts (`envoyConfigMap`) routes chats to the provider clusters, as `dataplane up` and
the tests' stacks do; a region the bundle does not have is a clear error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import BundleFactory

pytestmark = pytest.mark.envoy


def render(tmp_path: Path, bundle: Path, region: str) -> subprocess.CompletedProcess[str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "bundle-signing.pub.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    env = {
        **os.environ,
        # Nothing answers here: the enforcer trusts the verification key file.
        "NEXUS_DATAPLANE_CONTROL_PLANE_URL": "http://127.0.0.1:9",
        "NEXUS_DATAPLANE_VERIFICATION_KEY_FILE": str(pem),
        "NEXUS_DATAPLANE_PROVIDERS_BUNDLE": str(bundle),
    }
    argv = [sys.executable, "-m", "nexus_cli", "dataplane", "render", "--region", region]
    argv += ["--out", str(tmp_path / "cfg"), "--token", "t0ken"]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)


def test_render_routes_each_models_chats_to_its_providers_cluster(
    make_bundle: BundleFactory, tmp_path: Path
) -> None:
    done = render(tmp_path, make_bundle(), "eu-west-1")
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load((tmp_path / "cfg" / "envoy.yaml").read_text())
    clusters = {c["name"] for c in config["static_resources"]["clusters"]}
    assert {"provider_openai", "provider_anthropic", "provider_self-hosted"} <= clusters
    (listener,) = config["static_resources"]["listeners"]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    ext_authz = next(f for f in manager["http_filters"] if f["name"].endswith("ext_authz"))
    assert ext_authz["typed_config"]["clear_route_cache"] is True
    routes = manager["route_config"]["virtual_hosts"][0]["routes"]
    by_model = {
        r["match"]["headers"][0]["string_match"]["exact"]: r["route"]["cluster"]
        for r in routes
        if "headers" in r["match"]
    }
    assert by_model == {
        "claude-sonnet-4": "provider_anthropic",
        "gpt-4.1": "provider_openai",
        "gpt-4o": "provider_openai",
        "gpt-4o-mini": "provider_openai",
        "llama-3.1-70b": "provider_self-hosted",
    }
    # Model routes come first; a chat routed to no listed model, and everything else, go on
    # to the gateway upstream.
    assert all("headers" in r["match"] for r in routes[: len(by_model)])
    assert routes[-1]["route"]["cluster"] == "upstream"


def test_a_region_the_bundle_lacks_is_refused_with_its_name(
    make_bundle: BundleFactory, tmp_path: Path
) -> None:
    done = render(tmp_path, make_bundle(), "mars-1")
    assert done.returncode == 2
    assert "region 'mars-1' is not in the bundle's region list" in done.stderr
