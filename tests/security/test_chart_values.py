"""Values that would render an invalid or insecure manifest fail at `helm template`, with a
message naming the value (deploy/helm/nexus-policy/values.schema.json)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.fixtures.gotools import pinned_tool

pytestmark = pytest.mark.kube

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "nexus-policy"

ATTACKS = {
    "one_replica": (["--set", "controlPlane.replicas=1"], "/controlPlane/replicas"),
    "no_replicas": (["--set", "controlPlane.replicas=null"], "missing property 'replicas'"),
    "missing_database_url": (["--set", "database.url="], "/database/url"),
    "sqlite_database_url": (["--set", "database.url=sqlite:///x.db"], "/database/url"),
    "password_in_database_url": (
        ["--set", "database.url=postgresql+psycopg://u:pw@db/nexus"],
        "/database/url",
    ),
    "plaintext_database": (["--set", "database.tls.mode=disable"], "/database/tls/mode"),
    "privileged_pod": (
        ["--set", "containerSecurityContext.privileged=true"],
        "/containerSecurityContext/privileged",
    ),
    "privilege_escalation": (
        ["--set", "containerSecurityContext.allowPrivilegeEscalation=true"],
        "/containerSecurityContext/allowPrivilegeEscalation",
    ),
    "writable_root_filesystem": (
        ["--set", "containerSecurityContext.readOnlyRootFilesystem=false"],
        "/containerSecurityContext/readOnlyRootFilesystem",
    ),
    "root_user": (["--set", "podSecurityContext.runAsUser=0"], "/podSecurityContext/runAsUser"),
    "unconfined_seccomp": (
        ["--set", "podSecurityContext.seccompProfile.type=Unconfined"],
        "/podSecurityContext/seccompProfile/type",
    ),
    "added_capability": (
        ["--set", "containerSecurityContext.capabilities.add={NET_ADMIN}"],
        "/containerSecurityContext/capabilities/add",
    ),
    "network_policies_off_silently": (
        ["--set", "networkPolicy.enabled=false"],
        "/networkPolicy/acknowledgeNoNetworkPolicy",
    ),
    "no_signing_key_secret": (["--set", "keys.existingSecret="], "/keys/existingSecret"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_insecure_values_fail_at_helm_template(attack: str) -> None:
    args, where = ATTACKS[attack]
    out = subprocess.run(
        [str(pinned_tool("helm")), "template", "nexus", str(CHART), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode != 0, f"{attack} rendered:\n{out.stdout[:400]}"
    assert "values don't meet the specifications of the schema" in out.stderr
    assert where in out.stderr, out.stderr


def test_network_policies_may_be_off_only_when_acknowledged() -> None:
    out = subprocess.run(
        [str(pinned_tool("helm")), "template", "nexus", str(CHART), "--set",
         "networkPolicy.enabled=false,networkPolicy.acknowledgeNoNetworkPolicy=true"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "kind: NetworkPolicy" not in out.stdout
