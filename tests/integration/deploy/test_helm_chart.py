"""The Helm chart, judged by real tools: `helm lint --strict`, `helm template`, the strict
manifest checker (k8s.io/api types, unknown fields refused, secure pod defaults) and a real
kube-apiserver's server-side dry run (its own decoding, defaulting, validation, admission).

ServiceMonitor and PrometheusRule are CRDs the test API server does not have: they are
rendered and linted (production values enable them) and named by the checker, but the dry
run renders with them off.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from nexus_contract.wire import DURABLE_LOG_PLUGIN, EXT_AUTHZ_PLUGIN
from nexus_control.rollout.fleet import load_fleet
from nexus_dataplane.opa import opa_config
from nexus_dataplane.spec import EnforcerSpec
from tests.fixtures.gotools import manifest_checker_binary, pinned_tool
from tests.fixtures.kube import KubeApiServer, kube_apiserver, resource_path

pytestmark = pytest.mark.kube

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "deploy" / "helm" / "nexus-policy"
PRODUCTION = REPO / "deploy" / "helm" / "values-production.yaml"
NAMESPACE = "nexus"
NO_CRDS = ["--set", "metrics.serviceMonitor.enabled=false,metrics.prometheusRule.enabled=false"]
RENDERINGS: dict[str, list[str]] = {
    "default": [],
    "production": ["-f", str(PRODUCTION)],
    "enforcer-example": ["--set", "enforcerExample.enabled=true"],
}


@pytest.fixture(scope="module")
def helm() -> Path:
    return pinned_tool("helm")


def render(helm: Path, *args: str) -> str:
    out = subprocess.run(
        [str(helm), "template", "nexus", str(CHART), "--namespace", NAMESPACE, *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


def objects(manifest: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


def test_chart_lints_renders_and_every_object_decodes_strictly(helm: Path, tmp_path: Path) -> None:
    for name, args in RENDERINGS.items():
        lint = subprocess.run(
            [str(helm), "lint", "--strict", str(CHART), "--namespace", NAMESPACE, *args],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert lint.returncode == 0, f"{name}: {lint.stdout}{lint.stderr}"
        (tmp_path / f"{name}.yaml").write_text(render(helm, *args))
    production = objects((tmp_path / "production.yaml").read_text())
    kinds = {o["kind"] for o in production}
    assert {"ServiceMonitor", "PrometheusRule", "HorizontalPodAutoscaler"} <= kinds
    default = objects((tmp_path / "default.yaml").read_text())
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for o in default:
        by_kind.setdefault(o["kind"], []).append(o)
    (deployment,) = by_kind["Deployment"]
    assert deployment["spec"]["replicas"] >= 2
    probes = deployment["spec"]["template"]["spec"]["containers"][0]
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
    (job,) = by_kind["Job"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    deny = next(p for p in by_kind["NetworkPolicy"] if p["metadata"]["name"].endswith("deny"))
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    for o in default:
        assert o["kind"] != "Secret", "the chart references Secrets; it never holds one"
    # The fleet file the chart mounts is one the control plane loads (default and production).
    for name in ("default", "production"):
        rendered = objects((tmp_path / f"{name}.yaml").read_text())
        config = next(o for o in rendered if o["kind"] == "ConfigMap" and "fleet.yaml" in o["data"])
        fleet_file = tmp_path / "fleets" / f"{name}.yaml"
        fleet_file.parent.mkdir(exist_ok=True)
        fleet_file.write_text(config["data"]["fleet.yaml"])
        assert load_fleet(fleet_file).regions, name
    checked = subprocess.run(
        [str(manifest_checker_binary()), *sorted(map(str, tmp_path.glob("*.yaml")))],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert " 0 failed" in checked.stdout


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApiServer]:
    with kube_apiserver(tmp_path_factory.mktemp("kube")) as server:
        yield server


def test_every_rendered_object_passes_the_api_servers_dry_run(
    helm: Path, apiserver: KubeApiServer
) -> None:
    with apiserver.client() as api:
        created = api.post(
            "/api/v1/namespaces",
            json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        )
        assert created.status_code in (201, 409), created.text
        judged = 0
        for name, args in RENDERINGS.items():
            for obj in objects(render(helm, *args, *NO_CRDS)):
                answer = api.post(
                    resource_path(obj, NAMESPACE),
                    params={"dryRun": "All", "fieldValidation": "Strict"},
                    json=obj,
                )
                where = f"{name}: {obj['kind']} {obj['metadata']['name']}"
                assert answer.status_code == 201, f"{where}: {answer.text}"
                judged += 1
        # A dry run stores nothing: the namespace holds no Deployment afterwards.
        stored = api.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments")
        assert stored.status_code == 200 and stored.json()["items"] == []
        # The API server does judge: an unknown field is refused under Strict validation.
        bad = objects(render(helm))[0] | {"unexpectedField": True}
        refused = api.post(
            resource_path(bad, NAMESPACE),
            params={"dryRun": "All", "fieldValidation": "Strict"},
            json=bad,
        )
        assert refused.status_code == 400, refused.text
        assert "unexpectedField" in refused.text
    assert judged >= 25


def test_the_chart_s_enforcer_configures_opa_as_the_data_plane_does(
    helm: Path, tmp_path: Path
) -> None:
    """The chart's OPA config has the data plane's shape: the same services, plugins and
    settings (durable decision log, labels, metric tenants), so a cluster enforcer records
    and labels decisions as the tested one does. Only where secrets and files live differs."""
    manifest = render(helm, "--set", "enforcerExample.enabled=true",
                      "--set", "metricTenants={acme,globex}")  # fmt: skip
    (config_map,) = [
        o for o in objects(manifest)
        if o["kind"] == "ConfigMap" and "opa-config.yaml" in o.get("data", {})
    ]  # fmt: skip
    chart = yaml.safe_load(config_map["data"]["opa-config.yaml"])
    spec = EnforcerSpec(
        region="eu-west-1", enforcer_id="gw-eu-1", control_plane_url="http://cp:8700",
        token="t", key_id="nexus-bundle-signing", verification_key_pem="pem",
        persistence_dir=tmp_path / "opa", grpc_port=9191, opa_port=8181, envoy_port=8080,
        envoy_admin_port=9901, upstream_host="127.0.0.1", upstream_port=9000,
        audit_url="http://cp:8700", metric_tenants=("acme", "globex"),
    )  # fmt: skip
    ours = opa_config(spec)
    assert chart.keys() == ours.keys()
    assert chart["services"].keys() == ours["services"].keys()
    for name, service in ours["services"].items():
        assert chart["services"][name]["headers"] == service["headers"], name
        assert chart["services"][name]["url"].endswith("/v1/opa"), name
        assert chart["services"][name]["credentials"]["bearer"]["token_path"]
    assert chart["labels"] == ours["labels"]
    assert chart["decision_logs"] == ours["decision_logs"]
    assert chart["status"] == ours["status"]
    assert chart["plugins"].keys() == ours["plugins"].keys()
    for name, plugin in ours["plugins"].items():
        assert chart["plugins"][name].keys() == plugin.keys(), name
    ext_authz, durable = (ours["plugins"][EXT_AUTHZ_PLUGIN], ours["plugins"][DURABLE_LOG_PLUGIN])
    assert {k: v for k, v in chart["plugins"][EXT_AUTHZ_PLUGIN].items() if k != "addr"} == {
        k: v for k, v in ext_authz.items() if k != "addr"
    }
    assert {k: v for k, v in chart["plugins"][DURABLE_LOG_PLUGIN].items() if k != "dir"} == {
        k: v for k, v in durable.items() if k != "dir"
    }
    for bundle, settings in ours["bundles"].items():
        chart_bundle = chart["bundles"][bundle]
        assert {k: chart_bundle[k] for k in ("service", "resource", "persist", "signing")} == {
            k: settings[k] for k in ("service", "resource", "persist", "signing")
        }, bundle
    pods = {
        o["spec"]["template"]["spec"]["containers"][0]["name"]: o["spec"]["template"]["spec"]
        for o in objects(manifest)
        if o["kind"] == "Deployment"
    }
    env = {e["name"]: e.get("value") for e in pods["control-plane"]["containers"][0]["env"]}
    assert env["NEXUS_METRIC_TENANTS"] == "acme,globex"
    volumes = {v["name"] for v in pods["opa"]["volumes"]}
    assert "enforcer-decisions" in volumes, "the durable log's segments have their own volume"
    mounts = {m["name"]: m["mountPath"] for m in pods["opa"]["containers"][0]["volumeMounts"]}
    assert mounts["enforcer-decisions"] == chart["plugins"][DURABLE_LOG_PLUGIN]["dir"]
