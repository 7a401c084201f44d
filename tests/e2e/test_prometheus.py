"""End to end: a real Prometheus scrapes a running stack and evaluates the project's alerts.

The stack is the e2e one (control plane with its co-located audit log, one enforcer of real
OPA and Envoy); Prometheus scrapes the control plane's ``/metrics`` and the audit service's
``/v1/audit/metrics`` with an operator token, the enforcer's OPA ``/metrics`` with its
API token and its Envoy's admin ``/stats/prometheus``, and loads the alert rules the chart
ships. Through Prometheus's HTTP API: every target is up, every metric an alert names has a
series (a renamed or never-initialised metric would leave an alert that cannot fire), so
does every control-plane, audit and Envoy metric of the metric contract dashboards read,
every rule evaluates without error, and a healthy stack raises no alert.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from nexus_control.access.signing_keys import KeyPaths
from nexus_control.authoring.opa import Opa
from tests.fixtures.environment import Environment
from tests.fixtures.observed_stack import SLO_RULES, observed_stack, slo_rules_now
from tests.fixtures.prometheus import Prometheus

pytestmark = [pytest.mark.opa, pytest.mark.envoy]

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "helm" / "nexus-policy" / "files" / "alerts.yml"
METRIC = re.compile(r"\bnexus_[a-z_]+\b")
CHAT = "/v1/chat/completions"
BORN_AT_FIRST_EVENT = {"nexus_audit_dead_letters_total"}
"""Counters whose label (an outbox event type) is open-ended, so they have no series before
their first event; their alert compares with the past, absent counting 0 (promtool-tested)."""
SETTLE_S = 60.0
WATCHED_TENANT = "acme"
"""NEXUS_METRIC_TENANTS of the stack: its spend series carry a tenant label."""
CONTRACT_SERIES = (
    # The control plane's /metrics.
    "nexus_region_convergence_ratio",
    "nexus_enforcers",
    "nexus_rollout_active",
    "nexus_usage_reports_in_flight",
    "nexus_usage_reports_max_in_flight",
    "nexus_usage_reports_refused_total",
    "nexus_enforcer_info",
    "nexus_enforcer_last_seen_age_seconds",
    "nexus_region_convergence_lag_seconds",
    "nexus_budget_tenants",
    "nexus_budget_spend_usd",
    "nexus_budget_cap_usd",
    "nexus_budget_spend_ratio",
    "nexus_budget_platform_spend_usd",
    "nexus_budget_platform_model_spend_usd",
    "nexus_budget_platform_feature_spend_usd",
    "nexus_spend_anomalies",
    # The audit service's /v1/audit/metrics.
    "nexus_audit_tree_size",
    "nexus_audit_checkpoint_size",
    "nexus_audit_checkpoint_age_seconds",
    "nexus_audit_outbox_pending",
    "nexus_audit_chain_broken",
    "nexus_audit_quorum_missed",
    "nexus_audit_uploads_in_flight",
    "nexus_audit_signer_leader",
    # Our ext_authz plugin in OPA (the decision metrics contract).
    "nexus_decisions_total",
    "nexus_decision_duration_seconds_bucket",
    "nexus_tenant_decisions_total",
    # Envoy's admin /stats/prometheus, as Envoy names them.
    "envoy_http_downstream_rq_total",
    "envoy_cluster_upstream_rq_time_bucket",
    "envoy_http_ext_authz_ok",
)
"""Series of the metric contract (issue 14) the control plane, audit service and Envoy
export, which dashboards and alerts read by these names."""


def eventually(check: Callable[[], str | None], timeout_s: float) -> None:
    """Until ``check()`` returns None (all good); it returns what is still wrong."""
    deadline = time.monotonic() + timeout_s
    while (problem := check()) is not None:
        if time.monotonic() > deadline:
            raise AssertionError(problem)
        time.sleep(0.5)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, opa: Opa, session_keys: KeyPaths
) -> Iterator[tuple[Environment, Prometheus]]:
    workdir = tmp_path_factory.mktemp("prometheus")
    with observed_stack(
        workdir,
        opa,
        session_keys,
        (RULES, slo_rules_now(workdir)),
        metric_tenants=(WATCHED_TENANT,),
    ) as running:
        yield running


def _rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in (RULES, SLO_RULES)
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def _alert_metrics() -> dict[str, set[str]]:
    """Each metric a rule's expression names, with the rules that name it."""
    names: dict[str, set[str]] = {}
    for rule in _rules():
        for name in METRIC.findall(rule["expr"]):
            names.setdefault(name, set()).add(rule.get("alert") or rule["record"])
    return names


def test_every_series_the_alerts_use_exists_and_a_healthy_stack_raises_no_alert(
    stack: tuple[Environment, Prometheus],
) -> None:
    env, prometheus = stack
    # Decisions through Envoy, so the enforcer's Check counters have samples.
    for n in range(5):
        response = env.call("acme-chat", "acme", "POST", CHAT, headers={"x-nexus-model": "gpt-4o"})
        assert response.status_code == 200, (n, response.text)
    # Spend of the watched tenant, so its tenant-labelled series have a sample.
    assert env.usage(WATCHED_TENANT, 0.25, feature="support-chat").status_code == 202

    def targets_down() -> str | None:
        active = prometheus.api("targets")["activeTargets"]
        down = [(t["labels"]["job"], t["health"], t.get("lastError")) for t in active
                if t["health"] != "up"]  # fmt: skip
        return f"targets not up: {down}" if down or len(active) != 4 else None

    eventually(targets_down, SETTLE_S)

    wanted = _alert_metrics()

    def missing_series() -> str | None:
        missing = {
            name: sorted(alerts)
            for name, alerts in wanted.items()
            if name not in BORN_AT_FIRST_EVENT
            and not prometheus.api("query", query=f'count({{__name__="{name}"}})')["result"]
        }
        return f"no series for {missing}" if missing else None

    eventually(missing_series, SETTLE_S)

    def missing_contract_series() -> str | None:
        missing = [
            name
            for name in CONTRACT_SERIES
            if not prometheus.api("query", query=f'count({{__name__="{name}"}})')["result"]
        ]
        return f"no series for {missing}" if missing else None

    eventually(missing_contract_series, SETTLE_S)
    watched = prometheus.api("query", query="nexus_budget_spend_usd")["result"]
    assert [sample["metric"]["tenant"] for sample in watched] == [WATCHED_TENANT]

    def rules_unhealthy() -> str | None:
        groups = prometheus.api("rules")["groups"]
        rules: list[dict[str, Any]] = [rule for group in groups for rule in group["rules"]]
        if not rules:
            return "no rules loaded"
        bad = [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"]
        return f"rules not evaluated ok: {bad}" if bad else None

    eventually(rules_unhealthy, SETTLE_S)
    loaded = {r["name"] for g in prometheus.api("rules")["groups"] for r in g["rules"]}
    assert loaded == {rule.get("alert") or rule["record"] for rule in _rules()}

    # Decisions as the SLO rules count them: with no failure chat's error ratio is 0, not
    # absent, and its slow ratio a share. (Decisions keep coming: the counters were born
    # after the first ones, and a ratio over a window with no decision is NaN.) How many
    # decisions are slow is a timing on a shared machine, not behaviour: the latency
    # rules' arithmetic is proven by promtool (tests/alerts/slo-rules.test.yml), so a
    # latency burn is the one alert a loaded run may raise here.
    def chat_ratios() -> str | None:
        env.call("acme-chat", "acme", "POST", CHAT, headers={"x-nexus-model": "gpt-4o"})
        errors = 'nexus:capability_error_ratio:rate5m{capability="chat"}'
        result = prometheus.api("query", query=errors)["result"]
        if [float(r["value"][1]) for r in result] != [0.0]:
            return f"{errors}: {result}"
        slow = 'nexus:capability_slow_ratio:rate5m{capability="chat"}'
        result = prometheus.api("query", query=slow)["result"]
        if len(result) != 1 or not 0.0 <= float(result[0]["value"][1]) <= 1.0:
            return f"{slow}: {result}"
        return None

    eventually(chat_ratios, SETTLE_S)
    alerts = [
        a for a in prometheus.api("alerts")["alerts"]
        if a["labels"]["alertname"] != "NexusSLOLatencyBurn"
    ]  # fmt: skip
    assert alerts == [], f"a healthy stack raised {[(a['labels'], a['state']) for a in alerts]}"
