"""The control plane's computed gauges: convergence lag, and spend against caps.

Convergence lag is read from region states as the rollout sees them; budget gauges from a
real spend overview (an in-process spend store, a SQLite control database).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from prometheus_client.core import Metric

from nexus_control.authoring.config import CompiledConfig
from nexus_control.budgets.metrics import ANOMALY_SCOPES, MAX_BREAKDOWN, BudgetGauges
from nexus_control.budgets.overview import SpendOverview, spend_overview
from nexus_control.budgets.spend import InProcessSpendStore, Usage
from nexus_control.rollout.convergence import convergence_lag_s
from nexus_control.rollout.states import EnforcerState, EnforcerStatus, RegionState
from nexus_control.store.tables import DisabledTenant
from nexus_runtime.database import Database

NOW = datetime(2027, 3, 10, 12, 0, tzinfo=UTC)
ASSIGNED = NOW - timedelta(minutes=20)
STALE_S = 30.0


def _enforcer(
    state: EnforcerState, active: str | None = "r2", seen: datetime | None = NOW
) -> EnforcerStatus:
    return EnforcerStatus("e", state, active, active, None, seen)


def _region(*enforcers: EnforcerStatus, desired: str | None = "r2") -> RegionState:
    return RegionState("eu", 0, desired, "r1", enforcers, ASSIGNED if desired else None)


@pytest.mark.parametrize(
    ("region", "lag_s"),
    [
        (_region(_enforcer(EnforcerState.ACTIVE), _enforcer(EnforcerState.ACTIVE)), 0.0),
        (_region(), 0.0),
        (_region(_enforcer(EnforcerState.PENDING, None), desired=None), 0.0),
        (_region(_enforcer(EnforcerState.ACTIVE), _enforcer(EnforcerState.PENDING, "r1")), 1200.0),
        (_region(_enforcer(EnforcerState.FAILED, "r1")), 1200.0),
        # Down before it ever ran the revision: late since the assignment.
        (_region(_enforcer(EnforcerState.DOWN, "r1", NOW - timedelta(minutes=19))), 1200.0),
        # Ran it, then went down 5 minutes ago: late since then plus the staleness.
        (_region(_enforcer(EnforcerState.DOWN, "r2", NOW - timedelta(minutes=5))), 270.0),
        # Never seen at all.
        (_region(_enforcer(EnforcerState.DOWN, None, None)), 1200.0),
    ],
    ids=[
        "converged",
        "no-enforcer",
        "no-desired",
        "one-pending",
        "failed",
        "down-before-running",
        "down-after-running",
        "never-seen",
    ],
)
def test_convergence_lag_counts_from_when_the_region_stopped_running_its_revision(
    region: RegionState, lag_s: float
) -> None:
    assert convergence_lag_s(region, NOW, STALE_S) == pytest.approx(lag_s)


def _tenant(cap: float, *, on_hard_cap: str = "refuse") -> dict[str, Any]:
    budget = {"monthly_cap_usd": cap, "soft_cap_ratio": 0.8, "on_hard_cap": on_hard_cap}
    return {"name": "T", "plan": "team", "budget": budget}


CONFIG = cast(
    CompiledConfig,
    {
        "tenants": {
            "acme": _tenant(100.0),
            "globex": _tenant(10.0),
            "initech": _tenant(50.0),
            "umbrella": _tenant(20.0, on_hard_cap="disable"),
        }
    },
)


def _spend(store: InProcessSpendStore, tenant: str, day: str, usd: float) -> None:
    n = len(store.totals("2027-03")) * 1000 + int(usd * 100) + int(day[-2:]) * 7
    store.record(
        Usage(f"req-{tenant}-{day}-{n}-{usd}", tenant, "gpt-4o", None, 1, usd, "2027-03", day)
    )


def _families(gauges: BudgetGauges) -> dict[str, dict[tuple[str, ...], float]]:
    out: dict[str, dict[tuple[str, ...], float]] = {}
    family: Metric
    for family in gauges.collect():
        out[family.name] = {tuple(s.labels.values()): s.value for s in family.samples}
    return out


def test_budget_gauges_count_tenants_by_state_and_label_only_the_watched_ones(
    db: Database,
) -> None:
    store = InProcessSpendStore()
    for day in ("2027-03-01", "2027-03-02", "2027-03-03"):
        _spend(store, "acme", day, 1.0)
    _spend(store, "acme", "2027-03-10", 20.0)  # 23 of 100: under
    _spend(store, "globex", "2027-03-09", 9.0)  # 9 of 10: soft
    _spend(store, "initech", "2027-03-09", 60.0)  # over 50: hard
    with db.session() as session:
        session.add(DisabledTenant(tenant="umbrella", period="2027-03", reason="cap", since=NOW))

    def overview() -> SpendOverview:
        with db.session() as session:
            return spend_overview(session, store, CONFIG, "2027-03")

    gauges = BudgetGauges(overview, ("acme", "hooli"), today=lambda: "2027-03-10")
    families = _families(gauges)
    assert families["nexus_budget_tenants"] == {
        ("under",): 1,
        ("soft",): 1,
        ("hard",): 1,
        ("disabled",): 1,
    }
    # Only the watched tenant the policy knows: hooli is not in it, globex not watched.
    assert families["nexus_budget_spend_usd"] == {("acme",): pytest.approx(23.0)}
    assert families["nexus_budget_cap_usd"] == {("acme",): 100.0}
    assert families["nexus_budget_spend_ratio"] == {("acme",): pytest.approx(0.23)}
    assert families["nexus_budget_platform_spend_usd"] == {(): pytest.approx(92.0)}
    # acme's 20 on the 10th is over 3x the median (1) of its earlier days, and the
    # platform's 20 over 3x the median of its earlier days too.
    assert families["nexus_spend_anomalies"] == {
        ("platform",): 1,
        ("tenant",): 1,
        ("model",): 0,
        ("feature",): 0,
        ("hour",): 0,
    }

    tomorrow = BudgetGauges(overview, (), today=lambda: "2027-03-11")
    assert _families(tomorrow)["nexus_spend_anomalies"] == {(scope,): 0 for scope in ANOMALY_SCOPES}


def test_an_empty_period_exports_every_state_and_scope_at_zero(db: Database) -> None:
    store = InProcessSpendStore()

    def overview() -> SpendOverview:
        with db.session() as session:
            return spend_overview(session, store, None, "2027-03")

    families = _families(BudgetGauges(overview, ("acme",)))
    states = {("under",), ("soft",), ("hard",), ("disabled",)}
    assert set(families["nexus_budget_tenants"]) == states
    assert set(families["nexus_budget_tenants"].values()) == {0}
    assert families["nexus_spend_anomalies"] == {(scope,): 0 for scope in ANOMALY_SCOPES}
    assert families["nexus_budget_platform_spend_usd"] == {(): 0.0}
    assert families["nexus_budget_spend_usd"] == {}


def test_one_overview_serves_scrapes_for_the_ttl(db: Database) -> None:
    store = InProcessSpendStore()
    computed: list[SpendOverview] = []
    now = [100.0]

    def overview() -> SpendOverview:
        with db.session() as session:
            computed.append(spend_overview(session, store, CONFIG, "2027-03"))
        return computed[-1]

    gauges = BudgetGauges(overview, ("acme",), ttl_s=10.0, clock=lambda: now[0])
    _families(gauges)
    _spend(store, "acme", "2027-03-05", 5.0)
    assert _families(gauges)["nexus_budget_spend_usd"] == {("acme",): 0.0}
    now[0] += 10.0
    assert _families(gauges)["nexus_budget_spend_usd"] == {("acme",): 5.0}
    assert len(computed) == 2


def test_a_failing_spend_store_leaves_the_budget_families_out_not_the_scrape() -> None:
    def overview() -> SpendOverview:
        raise ConnectionError("redis is down")

    assert list(BudgetGauges(overview, ("acme",)).collect()) == []


def test_spend_by_model_and_feature_is_bounded_and_tenant_labelled_only_when_watched(
    db: Database,
) -> None:
    store = InProcessSpendStore()
    for n in range(MAX_BREAKDOWN + 5):
        store.record(Usage(f"m-{n}", "acme", f"model-{n:02d}", "support-chat", 1, 1.0 + n,
                           "2027-03", "2027-03-02"))  # fmt: skip
    store.record(Usage("g-1", "globex", "gpt-4o", None, 1, 2.0, "2027-03", "2027-03-02"))

    def overview() -> SpendOverview:
        with db.session() as session:
            return spend_overview(session, store, CONFIG, "2027-03")

    families = _families(BudgetGauges(overview, ("acme",)))
    by_model = families["nexus_budget_platform_model_spend_usd"]
    assert len(by_model) == MAX_BREAKDOWN + 1, "the biggest values, and the rest as other"
    kept = sum(v for k, v in by_model.items() if k != ("other",))
    total = sum(1.0 + n for n in range(MAX_BREAKDOWN + 5)) + 2.0
    assert by_model[("other",)] == pytest.approx(total - kept)
    assert ("model-00",) not in by_model, "the smallest models are summed as other"
    assert families["nexus_budget_platform_feature_spend_usd"] == {
        ("support-chat",): pytest.approx(total - 2.0)
    }
    tenants = {labels[0] for labels in families["nexus_budget_model_spend_usd"]}
    assert tenants == {"acme"}, "globex is not watched"
    assert families["nexus_budget_feature_spend_usd"] == {
        ("acme", "support-chat"): pytest.approx(total - 2.0)
    }
