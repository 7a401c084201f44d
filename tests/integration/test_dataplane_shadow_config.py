"""An enforcer's OPA config with shadow sampling set: the real OPA (our plugin) accepts it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from nexus_control.access.signing_keys import init_keys, load_signing_key, public_pem
from nexus_dataplane.opa import opa_config, validate_opa_config
from nexus_dataplane.spec import ConfigError, EnforcerSpec
from tests.integration.test_dataplane_config import spec

pytestmark = pytest.mark.opa


def shadowed(tmp_path: Path, percent: float) -> EnforcerSpec:
    keys = init_keys(tmp_path / "keys")
    pem = public_pem(load_signing_key(keys.signing))
    return replace(spec(tmp_path), verification_key_pem=pem, shadow_sample_percent=percent)


def test_no_shadow_block_is_rendered_without_sampling(tmp_path: Path) -> None:
    assert "shadow" not in opa_config(spec(tmp_path))["plugins"]["envoy_ext_authz_grpc"]


def test_the_shadow_block_polls_the_regions_candidate_signed_and_opa_accepts_it(
    tmp_path: Path, opa_bin: Path
) -> None:
    config = opa_config(shadowed(tmp_path, 10))
    block = config["plugins"]["envoy_ext_authz_grpc"]["shadow"]
    assert block["resource"] == "shadow/eu-west-1/nexus"
    assert block["service"] == "control-plane"
    assert block["signing"] == {}, "a candidate is verified with the bundles' keys"
    assert block["sample_percent"] == 10
    assert block["shared_roots"] == ["nexus_state"]
    validate_opa_config(opa_bin, config, tmp_path)


def test_opa_refuses_a_shadow_sample_beyond_100_percent(tmp_path: Path, opa_bin: Path) -> None:
    config = opa_config(shadowed(tmp_path, 10))
    config["plugins"]["envoy_ext_authz_grpc"]["shadow"]["sample_percent"] = 150
    with pytest.raises(ConfigError, match="sample_percent"):
        validate_opa_config(opa_bin, config, tmp_path)
