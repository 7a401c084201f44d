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

from nexus_control.rollout.fleet import load_fleet
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
