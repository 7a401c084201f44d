"""End to end: every query of the committed Grafana dashboards is accepted by a real
Prometheus scraping a running stack, and returns at least one series.

The stack is the e2e one under Prometheus (tests/fixtures/observed_stack.py), with the SLO
recording rules the chart ships loaded when they exist; requests through Envoy (allowed,
denied, a tool call) and a usage report give the decision and spend series samples. Each
panel query and each label variable is its own test case, named by dashboard, panel and
query, so a run lists exactly which query returned nothing. Grafana's template variables are
substituted as Grafana would with "All" selected (``$region`` → ``.*``,
``$__rate_interval`` → ``1m``).

A query that returns nothing fails with the metrics it names.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from nexus_control.access.signing_keys import KeyPaths
from nexus_control.authoring.opa import Opa
from tests.fixtures.environment import Environment
from tests.fixtures.observed_stack import SCRAPE_JOBS, observed_stack, slo_rules_now
from tests.fixtures.prometheus import Prometheus

pytestmark = [pytest.mark.opa, pytest.mark.envoy]

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "deploy" / "grafana"
CHAT = "/v1/chat/completions"
SEARCH = "/v1/tools/web-search:invoke"
METRIC_TENANTS = ("acme",)
"""The tenants the control plane exports spend for (NEXUS_METRIC_TENANTS): the one called."""
SETTLE_S = 90.0
GRAFANA_INTERVALS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}
VARIABLE = re.compile(r"\$\{?(\w+)\}?")
METRIC = re.compile(r"\bnexus[_:][a-z0-9_:]+")
LABEL_VALUES = re.compile(r"^label_values\((\w+),\s*(\w+)\)$")


@dataclass(frozen=True)
class PanelQuery:
    case: str
    """dashboard uid / panel title / refId, or dashboard uid / $variable"""
    expr: str
    """as Grafana sends it, variables substituted"""
    label: str | None = None
    """for a label variable: the label whose values it lists (``expr`` is then the metric)"""


def _substitute(expr: str, variables: set[str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in GRAFANA_INTERVALS:
            return GRAFANA_INTERVALS[name]
        if name in variables:
            return ".*"
        raise AssertionError(f"{expr}: ${name} is neither a dashboard variable nor Grafana's")

    return VARIABLE.sub(value, expr)


def _queries() -> Iterator[PanelQuery]:
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        uid = dashboard["uid"]
        variables = {v["name"] for v in dashboard["templating"]["list"]}
        for variable in dashboard["templating"]["list"]:
            if variable["type"] != "query":
                continue
            match = LABEL_VALUES.match(variable["query"])
            assert match, f"{path.name}: ${variable['name']}: {variable['query']}"
            yield PanelQuery(f"{uid}/${variable['name']}", match.group(1), match.group(2))
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                yield PanelQuery(
                    f"{uid}/{panel['title']}/{target['refId']}",
                    _substitute(target["expr"], variables),
                )


QUERIES = list(_queries())


def _answer(prometheus: Prometheus, query: PanelQuery) -> str | int:
    """How many series the query returns, or why Prometheus refused it."""
    if query.label is not None:
        response = httpx.get(
            f"{prometheus.url}/api/v1/label/{query.label}/values",
            params={"match[]": query.expr},
            timeout=10,
        )
    else:
        response = httpx.get(
            f"{prometheus.url}/api/v1/query", params={"query": query.expr}, timeout=10
        )
    body = response.json()
    if response.status_code != 200 or body.get("status") != "success":
        return f"refused ({response.status_code}): {body.get('errorType')}: {body.get('error')}"
    data = body["data"]
    return len(data if query.label is not None else data["result"])


@dataclass(frozen=True)
class Observed:
    prometheus: Prometheus
    answers: dict[str, str | int]
    """each query's answer (by case) once the stack has settled"""


@pytest.fixture(scope="module")
def observed(
    tmp_path_factory: pytest.TempPathFactory, opa: Opa, session_keys: KeyPaths
) -> Iterator[Observed]:
    """The stack once it has settled: every query answers with series, or SETTLE_S has
    passed (the answers are then the last ones)."""
    workdir = tmp_path_factory.mktemp("dashboards")
    rules = (slo_rules_now(workdir),)
    with observed_stack(workdir, opa, session_keys, rules, metric_tenants=METRIC_TENANTS) as (
        env,
        prometheus,
    ):
        _traffic(env)
        deadline = time.monotonic() + SETTLE_S
        while True:
            answers = {q.case: _answer(prometheus, q) for q in QUERIES}
            up = {
                t["labels"]["job"]
                for t in prometheus.api("targets")["activeTargets"]
                if t["health"] == "up"
            }
            settled = up == set(SCRAPE_JOBS) and all(
                isinstance(a, int) and a > 0 for a in answers.values()
            )
            if settled or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        assert up == set(SCRAPE_JOBS), f"scrape targets not up: {set(SCRAPE_JOBS) - up}"
        yield Observed(prometheus, answers)


def _traffic(env: Environment) -> None:
    """Allowed and denied chat decisions, an allowed and a denied tool call, and spend."""
    for n in range(5):
        allowed = env.call("acme-chat", "acme", "POST", CHAT, headers={"x-nexus-model": "gpt-4o"})
        assert allowed.status_code == 200, (n, allowed.text)
    denied = env.call("acme-chat", "hooli", "POST", CHAT, headers={"x-nexus-model": "gpt-4o"})
    assert denied.status_code == 403, denied.text
    tool = env.call("acme-agent", "acme", "POST", SEARCH, body={"arguments": {"query": "q"}})
    assert tool.status_code == 200, tool.text
    no_grant = env.call("acme-chat", "acme", "POST", SEARCH, body={"arguments": {"query": "q"}})
    assert no_grant.status_code == 403, no_grant.text
    spent = env.usage("acme", 0.25, feature="support-chat")
    assert spent.status_code < 300, spent.text


def test_the_dashboards_have_queries_to_check() -> None:
    committed = len(list(DASHBOARDS.glob("*.json")))
    assert committed == 5
    assert len({q.case.split("/")[0] for q in QUERIES}) == committed
    assert len(QUERIES) > 40


def test_a_query_prometheus_cannot_parse_is_reported_as_refused(observed: Observed) -> None:
    answer = _answer(observed.prometheus, PanelQuery("broken", "sum by (reason) (rate(x[1m])"))
    assert isinstance(answer, str)
    assert answer.startswith("refused (400): bad_data"), answer


@pytest.mark.parametrize("query", QUERIES, ids=[q.case for q in QUERIES])
def test_dashboard_query_is_accepted_and_returns_series(
    observed: Observed, query: PanelQuery
) -> None:
    answer = observed.answers[query.case]
    assert not isinstance(answer, str), f"{query.case}: {query.expr}: {answer}"
    if answer == 0:
        raise AssertionError(
            f"{query.case}: {query.expr}: no series (metrics it names: "
            f"{sorted(set(METRIC.findall(query.expr)))})"
        )
