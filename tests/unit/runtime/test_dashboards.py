"""The Grafana dashboards: committed JSON is what the code renders, and every query reads
the chosen data source and names only contract metrics.

The e2e check that each query parses and returns series in a real Prometheus is
tests/e2e/test_dashboards.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nexus_runtime.dashboards import DASHBOARDS, REGENERATE, render_all, stale, write_all
from nexus_runtime.dashboards.__main__ import main

REPO = Path(__file__).resolve().parents[3]
COMMITTED = REPO / "deploy" / "grafana"
METRIC = re.compile(r"\bnexus[_:][a-z0-9_:]+")
CONTRACT_METRICS = {
    # OPA enforcer: our ext_authz plugin and durable decision log
    "nexus_decisions_total",
    "nexus_decision_duration_seconds_bucket",
    "nexus_tenant_decisions_total",
    "nexus_extauthz_shed_total",
    "nexus_extauthz_in_flight",
    "nexus_extauthz_queue_delay_seconds_bucket",
    "nexus_extauthz_decision_log_seconds_bucket",
    "nexus_decision_log_buffered_events",
    "nexus_decision_log_oldest_unshipped_age_seconds",
    "nexus_decision_log_shipped_events_total",
    "nexus_decision_log_refused_events_total",
    "nexus_decision_log_upload_retries_total",
    "nexus_decision_log_fsync_seconds_bucket",
    # control plane
    "nexus_region_convergence_ratio",
    "nexus_region_convergence_lag_seconds",
    "nexus_enforcers",
    "nexus_enforcer_info",
    "nexus_enforcer_last_seen_age_seconds",
    "nexus_rollout_active",
    "nexus_budget_tenants",
    "nexus_budget_spend_usd",
    "nexus_budget_cap_usd",
    "nexus_budget_spend_ratio",
    "nexus_budget_platform_spend_usd",
    "nexus_budget_platform_model_spend_usd",
    "nexus_budget_platform_feature_spend_usd",
    "nexus_budget_model_spend_usd",
    "nexus_budget_feature_spend_usd",
    "nexus_spend_anomalies",
    # audit service
    "nexus_audit_tree_size",
    "nexus_audit_checkpoint_size",
    "nexus_audit_checkpoint_age_seconds",
    "nexus_audit_outbox_pending",
    "nexus_audit_chain_broken",
    "nexus_audit_quorum_missed",
    "nexus_audit_signer_leader",
    "nexus_audit_security_events_total",
    "nexus_audit_uploads_refused_total",
    # recording rules generated from the SLOs spec
    "nexus:capability_decisions:rate5m",
    "nexus:capability_error_ratio:rate5m",
    "nexus:capability_error_ratio:rate1h",
    "nexus:capability_slow_ratio:rate5m",
    "nexus:capability_slow_ratio:rate1h",
}
"""Names from the metric contract of issue 14 (and the series that already existed)."""


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _datasources(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield value
            yield from _datasources(value)
    elif isinstance(node, list):
        for item in node:
            yield from _datasources(item)


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[str, Any]]:
    return {name: json.loads(text) for name, text in render_all().items()}


def test_committed_dashboards_are_what_the_code_renders() -> None:
    problems = stale(COMMITTED)
    assert not problems, "\n".join([*problems, f"regenerate them with: {REGENERATE}"])


def test_rendering_is_deterministic() -> None:
    assert render_all() == render_all()


def test_each_dashboard_has_its_own_stable_uid_and_unique_panel_ids(
    rendered: dict[str, dict[str, Any]],
) -> None:
    uids = [dashboard["uid"] for dashboard in rendered.values()]
    assert len(set(uids)) == len(DASHBOARDS) == 5
    assert all(uid.startswith("nexus-") for uid in uids)
    for name, dashboard in rendered.items():
        ids = [panel["id"] for panel in _panels(dashboard)]
        assert len(ids) == len(set(ids)), name
        assert ids == list(range(1, len(ids) + 1)), name


def test_every_query_reads_the_datasource_variable_never_a_fixed_uid(
    rendered: dict[str, dict[str, Any]],
) -> None:
    for name, dashboard in rendered.items():
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource", name
        assert variables["datasource"]["query"] == "prometheus", name
        refs = list(_datasources(dashboard))
        assert refs, name
        assert all(ref == {"type": "prometheus", "uid": "${datasource}"} for ref in refs), name


def test_queries_name_only_contract_metrics(rendered: dict[str, dict[str, Any]]) -> None:
    used: dict[str, set[str]] = {}
    for name, dashboard in rendered.items():
        exprs = [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]
        exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
        assert exprs, name
        for expr in exprs:
            for metric in METRIC.findall(expr):
                used.setdefault(metric, set()).add(name)
    unknown = {metric: sorted(names) for metric, names in used.items()}
    assert set(unknown) - CONTRACT_METRICS == set(), {
        m: unknown[m] for m in set(unknown) - CONTRACT_METRICS
    }


def test_label_variables_select_all_with_a_regex(rendered: dict[str, dict[str, Any]]) -> None:
    for name, dashboard in rendered.items():
        for variable in dashboard["templating"]["list"]:
            if variable["type"] != "query":
                continue
            assert variable["allValue"] == ".*", name
            needle = f'=~"${variable["name"]}"'
            exprs = [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]
            assert any(needle in expr for expr in exprs), (name, variable["name"])


def test_check_names_a_changed_a_missing_and_an_extra_file_and_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_all(tmp_path)
    assert stale(tmp_path) == []
    assert main(["--check", str(tmp_path)]) == 0
    (tmp_path / "fleet.json").write_text("{}\n")
    (tmp_path / "audit.json").unlink()
    (tmp_path / "old.json").write_text("{}\n")
    assert main(["--check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'fleet.json'}: differs" in err
    assert f"{tmp_path / 'audit.json'}: missing" in err
    assert f"{tmp_path / 'old.json'}: no dashboard renders it" in err
    assert f"regenerate them with: {REGENERATE} {tmp_path}" in err
    assert main([str(tmp_path)]) == 0
    assert stale(tmp_path) == [f"{tmp_path / 'old.json'}: no dashboard renders it"]
