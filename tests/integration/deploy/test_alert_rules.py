"""The alert rules, judged by Prometheus's own `promtool`, and their runbooks.

`promtool check rules` parses every rule (PromQL included); `promtool test rules` runs the
unit tests in tests/alerts/ (each alert fires on the series that should raise it, after its
`for`, with its labels and annotations, and stays silent on healthy ones). Every alert has a
severity, a summary and a runbook under deploy/runbooks/ with diagnosis and remediation, and
names only metrics the project exports: a renamed metric must not leave an alert that can
never fire.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from nexus_audit.metrics import AuditCollector, AuditMetrics
from nexus_control.api.alerts import REMEDIATIONS

REPO = Path(__file__).resolve().parents[3]
RULES = REPO / "deploy" / "helm" / "nexus-policy" / "files" / "alerts.yml"
SLO_RULES = REPO / "deploy" / "helm" / "nexus-policy" / "files" / "slo-rules.yml"
"""Generated from bundles/gateway/slos.yaml (tests/unit/control/test_slos_spec.py)."""
RULE_TESTS = REPO / "tests" / "alerts" / "nexus-policy.test.yml"
SLO_RULE_TESTS = REPO / "tests" / "alerts" / "slo-rules.test.yml"
RUNBOOKS = REPO / "deploy" / "runbooks"
CHART_ONLY_ALERTS = {"NexusPolicyControlPlaneDown"}
"""Alerts the chart adds itself (they name its release's scrape job)."""
EXPORTERS = [
    *(REPO / "control-plane" / "nexus_control").rglob("*.py"),
    *(REPO / "audit" / "nexus_audit").rglob("*.py"),
    *(REPO / "data-plane" / "opa").rglob("*.go"),
]
METRIC = re.compile(r"\bnexus_[a-z_]+\b")


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: scripts/bootstrap installs Debian's prometheus package"
    return found


def _alerts() -> list[dict[str, Any]]:
    return [
        rule
        for path in (RULES, SLO_RULES)
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_checks_the_rules_and_passes_their_unit_tests(promtool: str) -> None:
    check = _run(promtool, "check", "rules", str(RULES), str(SLO_RULES))
    assert check.returncode == 0, check.stdout + check.stderr
    tested = _run(promtool, "test", "rules", str(RULE_TESTS), str(SLO_RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_is_unit_tested_and_has_a_runbook_with_diagnosis_and_remediation() -> None:
    alerts = _alerts()
    names = {rule["alert"] for rule in alerts}
    tested = {
        name
        for path in (RULE_TESTS, SLO_RULE_TESTS)
        for name in re.findall(r"alertname: (\w+)", path.read_text())
    }
    assert names - tested == set(), "alerts without a promtool unit test"
    for rule in alerts:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        url = rule["annotations"]["runbook_url"]
        assert url == f"deploy/runbooks/{rule['alert']}.md", url
        text = (REPO / url).read_text()
        assert text.startswith(f"# {rule['alert']}\n"), url
        assert "## Diagnosis" in text and "## Remediation" in text, url
    books = {path.stem for path in RUNBOOKS.glob("*.md")}
    assert books == names | CHART_ONLY_ALERTS, "runbooks and alerts disagree"


def test_every_remediation_an_alert_names_is_one_the_webhook_performs() -> None:
    named = {rule["labels"]["remediation"] for rule in _alerts() if "remediation" in rule["labels"]}
    assert named, "no alert remediates"
    assert named <= set(REMEDIATIONS), named


def test_alerts_name_only_metrics_the_project_exports() -> None:
    source = "\n".join(path.read_text() for path in EXPORTERS)
    exported = set(METRIC.findall(source))
    # The audit service names its families from tables; ask its collector for them.
    exported |= {family.name for family in AuditCollector(AuditMetrics()).collect()}
    for rule in _alerts():
        for name in METRIC.findall(rule["expr"]):
            # prometheus_client's CounterMetricFamily adds the _total suffix itself.
            assert name in exported or name.removesuffix("_total") in exported, (
                f"{rule['alert']}: {name} is not exported by the control plane, the audit "
                "service or our OPA plugins"
            )
