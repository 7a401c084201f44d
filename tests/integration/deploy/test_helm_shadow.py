"""The chart's enforcer template renders the same shadow block as the data plane, which the
real OPA accepts (tests/integration/test_dataplane_shadow_config.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from nexus_dataplane.opa import opa_config
from tests.fixtures.gotools import pinned_tool
from tests.integration.deploy.test_helm_chart import objects, render
from tests.integration.test_dataplane_config import spec

pytestmark = pytest.mark.kube


@pytest.fixture(scope="module")
def helm() -> Path:
    return pinned_tool("helm")


def enforcer_opa_config(helm: Path, *args: str) -> dict[str, Any]:
    manifest = render(helm, "--set", "enforcerExample.enabled=true", *args)
    (config_map,) = [
        o
        for o in objects(manifest)
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-opa")
    ]
    config: dict[str, Any] = yaml.safe_load(config_map["data"]["opa-config.yaml"])
    return config


def test_the_chart_renders_no_shadow_block_by_default(helm: Path) -> None:
    assert "shadow" not in enforcer_opa_config(helm)["plugins"]["envoy_ext_authz_grpc"]


def test_the_charts_shadow_block_is_the_data_planes(helm: Path, tmp_path: Path) -> None:
    rendered = enforcer_opa_config(helm, "--set", "enforcer.shadowSamplePercent=10")
    expected = opa_config(replace(spec(tmp_path), shadow_sample_percent=10))
    plugin = "envoy_ext_authz_grpc"
    assert rendered["plugins"][plugin]["shadow"] == expected["plugins"][plugin]["shadow"]
