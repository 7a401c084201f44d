"""Rendered enforcer configs are accepted by the real Envoy and the real OPA."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from nexus_dataplane.enforcer import render
from nexus_dataplane.envoy import GRPC_ACCESS_LOGGER, envoy_config, validate_envoy_config
from nexus_dataplane.opa import opa_config, validate_opa_config
from nexus_dataplane.ratelimit import (
    RateLimitConfigError,
    RateLimitPlan,
    ratelimit_service_config,
)
from nexus_dataplane.spec import ConfigError, EnforcerSpec, TracingSpec
from nexus_runtime.toolchain import find_envoy, find_opa

pytestmark = [pytest.mark.opa, pytest.mark.envoy]


def spec(tmp_path: Path) -> EnforcerSpec:
    return EnforcerSpec(
        region="eu-west-1",
        enforcer_id="eu-west-1-7",
        control_plane_url="http://127.0.0.1:9",
        token="t0ken",
        key_id="kid",
        verification_key_pem="-----BEGIN PUBLIC KEY-----\nX\n-----END PUBLIC KEY-----\n",
        persistence_dir=tmp_path / "persist",
        grpc_port=19191,
        opa_port=18181,
        envoy_port=18000,
        envoy_admin_port=19901,
        upstream_host="127.0.0.1",
        upstream_port=18080,
        audit_url="http://127.0.0.1:9",
    )


def test_opa_config_has_signed_persisted_long_polled_bundles(tmp_path: Path) -> None:
    config = opa_config(spec(tmp_path))
    for name in ("nexus", "nexus-state"):
        bundle = config["bundles"][name]
        assert bundle["signing"] == {}, "the signature's kid picks a trusted key"
        assert bundle["persist"] is True
        assert bundle["polling"]["long_polling_timeout_seconds"] > 0
        assert bundle["resource"] == f"bundles/eu-west-1/{name}"
    assert config["services"]["control-plane"]["headers"] == {"x-nexus-enforcer": "eu-west-1-7"}
    assert config["labels"] == {"region": "eu-west-1", "enforcer": "eu-west-1-7"}
    assert config["plugins"]["envoy_ext_authz_grpc"]["path"] == "nexus/envoy/authz/decision"
    assert config["decision_logs"] == {"plugin": "nexus_durable_log", "nd_builtin_cache": True}
    durable = config["plugins"]["nexus_durable_log"]
    assert durable == {
        "dir": str(tmp_path / "decision-log"),
        "service": "audit",
        "wait_for": "fsync",
    }


def test_envoy_config_fails_closed(tmp_path: Path) -> None:
    config = envoy_config(spec(tmp_path))
    http = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]
    (ext_authz,) = [
        f["typed_config"]
        for f in http["http_filters"]
        if f["name"] == "envoy.filters.http.ext_authz"
    ]
    assert ext_authz["failure_mode_allow"] is False
    assert ext_authz["grpc_service"]["timeout"]


def test_envoy_streams_every_finished_request_back_to_its_opa(tmp_path: Path) -> None:
    """Delivery receipts: the plugin hears which answers the client got (README)."""
    http = envoy_config(spec(tmp_path))["static_resources"]["listeners"][0]["filter_chains"][0][
        "filters"
    ][0]["typed_config"]
    (delivery,) = [log for log in http["access_log"] if log["name"] == GRPC_ACCESS_LOGGER]
    common = delivery["typed_config"]["common_config"]
    assert common["grpc_service"] == {"envoy_grpc": {"cluster_name": "opa"}}
    assert common["transport_api_version"] == "V3"
    assert "filter" not in delivery, "every request, or a timed-out answer goes unheard"
    without = envoy_config(spec(tmp_path), with_ext_authz=False)
    hcm = without["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    assert "access_log" not in hcm["typed_config"]


@pytest.mark.parametrize("with_ext_authz", [True, False])
def test_envoy_canonicalises_the_path_before_any_filter(
    tmp_path: Path, with_ext_authz: bool
) -> None:
    """The policy and the upstream see one path (tests/e2e/test_path_variants.py)."""
    config = envoy_config(spec(tmp_path), with_ext_authz=with_ext_authz)
    http = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]
    assert http["normalize_path"] is True
    assert http["merge_slashes"] is True
    assert http["path_with_escaped_slashes_action"] == "REJECT_REQUEST"


def test_render_writes_configs_that_envoy_and_opa_accept(tmp_path: Path, opa_bin: Path) -> None:
    from nexus_control.access.signing_keys import init_keys, load_signing_key, public_pem

    keys = init_keys(tmp_path / "keys")
    good = spec(tmp_path)
    good = EnforcerSpec(
        **{**good.__dict__, "verification_key_pem": public_pem(load_signing_key(keys.signing))}
    )
    opa_path, envoy_path = render(good, tmp_path / "out", opa_bin=opa_bin, envoy_bin=find_envoy())
    assert yaml.safe_load(opa_path.read_text())["labels"]["enforcer"] == "eu-west-1-7"
    assert oct(opa_path.stat().st_mode & 0o777) == "0o600", "the config holds a token"
    assert envoy_path.exists()


def test_envoy_refuses_a_broken_config(tmp_path: Path) -> None:
    broken = envoy_config(spec(tmp_path))
    broken["static_resources"]["clusters"][0]["type"] = "NOT_A_TYPE"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    with pytest.raises(ConfigError, match="envoy refused"):
        validate_envoy_config(find_envoy(), path)


def test_opa_refuses_a_broken_config(tmp_path: Path, opa_bin: Path) -> None:
    broken = opa_config(spec(tmp_path))
    broken["bundles"]["nexus"]["service"] = "no-such-service"
    with pytest.raises(ConfigError, match="OPA refused"):
        validate_opa_config(opa_bin, broken, tmp_path)


def test_rate_limit_filters_follow_ext_authz_and_envoy_accepts_them(tmp_path: Path) -> None:
    plan = RateLimitPlan.from_config(
        {
            "shared": {"scope": "shared", "counts": "requests", "unit": "minute",
                       "rate": 60, "burst": 60},
            "tokens": {"scope": "shared", "counts": "tokens", "unit": "minute",
                       "rate": 1000, "burst": 1000},
            "local": {"scope": "region", "counts": "requests", "unit": "second",
                      "rate": 5, "burst": 20},
        }
    )  # fmt: skip
    with pytest.raises(ConfigError, match="ratelimit service"):
        envoy_config(replace(spec(tmp_path), rate_limits=plan))
    limited = replace(spec(tmp_path), rate_limits=plan, ratelimit_port=18081)
    config = envoy_config(limited)
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    names = [f["name"] for f in hcm["typed_config"]["http_filters"]]
    assert (
        names.index("envoy.filters.http.ext_authz")
        < names.index("envoy.filters.http.local_ratelimit")
        < names.index("envoy.filters.http.ratelimit")
        < names.index("envoy.filters.http.router")
    )
    global_filter = hcm["typed_config"]["http_filters"][names.index("envoy.filters.http.ratelimit")]
    assert global_filter["typed_config"]["failure_mode_deny"] is True
    # Two descriptors for the tokens limit (check before, settle after), one for the other.
    assert len(global_filter["typed_config"]["rate_limits"]) == 3
    service = ratelimit_service_config(plan)
    assert [d["value"] for d in service["descriptors"]] == ["shared", "tokens"]
    # render() writes and validates it (Envoy opens the refusal log's directory).
    render(limited, tmp_path / "cfg", opa_bin=find_opa(), envoy_bin=find_envoy())
    assert limited.persistence_dir.is_dir()


def test_rate_limits_cannot_be_built_from_malformed_data() -> None:
    with pytest.raises(RateLimitConfigError):
        RateLimitPlan.from_config({"x": {"scope": "galactic", "counts": "requests",
                                         "unit": "minute", "rate": 1, "burst": 1}})  # fmt: skip
    with pytest.raises(RateLimitConfigError):
        RateLimitPlan.from_config({"x": {"scope": "shared"}})


def test_a_traced_enforcer_renders_configs_envoy_and_opa_accept(
    tmp_path: Path, opa_bin: Path
) -> None:
    from nexus_control.access.signing_keys import init_keys, load_signing_key, public_pem

    keys = init_keys(tmp_path / "keys")
    traced = dataclasses.replace(
        spec(tmp_path),
        verification_key_pem=public_pem(load_signing_key(keys.signing)),
        tracing=TracingSpec("127.0.0.1", 14317, 14318, sample_percent=1.0),
    )
    opa_path, envoy_path = render(traced, tmp_path / "out", opa_bin=opa_bin, envoy_bin=find_envoy())
    tracing = yaml.safe_load(opa_path.read_text())["distributed_tracing"]
    assert tracing["address"] == "127.0.0.1:14317"
    assert tracing["sample_percentage"] == 1.0
    envoy = yaml.safe_load(envoy_path.read_text())
    (hcm,) = [
        f["typed_config"]
        for listener in envoy["static_resources"]["listeners"]
        for chain in listener["filter_chains"]
        for f in chain["filters"]
    ]
    assert hcm["tracing"]["random_sampling"] == {"value": 1.0}
    assert "otlp" in {c["name"] for c in envoy["static_resources"]["clusters"]}
    assert "tracing" not in str(envoy_config(spec(tmp_path))), "untraced: no tracer at all"
