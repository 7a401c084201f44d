"""A tenant's ``onAnomaly`` action: validated with places, compiled, diffed, and held from
the detector's finding until an approver's release, through the state bundle."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from nexus_audit.events import controls_for
from nexus_control.authoring.compiler import compile_data
from nexus_control.authoring.config import CompiledConfig
from nexus_control.authoring.diff import Effect, diff_configs
from nexus_control.authoring.loader import SpecError, load_bundle
from nexus_control.authoring.policyset import resolve
from nexus_control.budgets import holds
from nexus_control.budgets.overview import SpendOverview, spend_overview
from nexus_control.budgets.spend import InProcessSpendStore, Usage
from nexus_control.budgets.usage import state_document
from nexus_control.budgets.watch import ACTOR, AnomalyWatch
from nexus_control.store import outbox
from nexus_runtime.database import Database
from tests.conftest import BundleFactory

UMBRELLA_CAP = "      monthlyCapUsd: 50\n"
HOLD = "hold_models_above_usd_per_mtok"


def _with_action(root: Path, action: str) -> str:
    tenants = (root / "tenants.yaml").read_text()
    text = tenants.replace(UMBRELLA_CAP, UMBRELLA_CAP + action)
    assert text != tenants
    return text


def _problems(root: Path) -> str:
    with pytest.raises(SpecError) as info:
        load_bundle(root)
    return "\n".join(str(p) for p in info.value.problems)


def _compiled(root: Path) -> dict[str, Any]:
    return dict(compile_data(resolve(load_bundle(root)), approval_jwks=""))


def test_an_action_that_does_nothing_or_raises_the_soft_cap_is_reported_at_its_place(
    make_bundle: BundleFactory,
) -> None:
    root = make_bundle()
    empty = _with_action(root, "      onAnomaly: {}\n")
    line = empty.splitlines().index("      onAnomaly: {}") + 1
    assert re.search(
        rf"tenants\.yaml:{line}:\d+: .*onAnomaly needs lowerSoftCapToPercent or "
        r"holdModelsAboveUsdPerMtok",
        _problems(make_bundle(**{"tenants.yaml": empty})),
    )
    higher = _with_action(root, "      onAnomaly: {lowerSoftCapToPercent: 90}\n")
    assert re.search(
        r"tenants\.yaml:\d+:\d+: .*lowerSoftCapToPercent \(90\) must be below softCapPercent "
        r"\(80\)",
        _problems(make_bundle(**{"tenants.yaml": higher})),
    )
    negative = _with_action(root, "      onAnomaly: {holdModelsAboveUsdPerMtok: -1}\n")
    assert "onAnomaly.holdModelsAboveUsdPerMtok: Input should be greater" in _problems(
        make_bundle(**{"tenants.yaml": negative})
    )


def test_the_action_compiles_into_the_tenants_budget_and_is_absent_when_unset(
    make_bundle: BundleFactory,
) -> None:
    root = make_bundle()
    action = "      onAnomaly: {lowerSoftCapToPercent: 50, holdModelsAboveUsdPerMtok: 5}\n"
    config = _compiled(make_bundle(**{"tenants.yaml": _with_action(root, action)}))
    assert config["tenants"]["umbrella"]["budget"]["on_anomaly"] == {
        "lower_soft_cap_to_ratio": 0.5,
        "hold_models_above_usd_per_mtok": 5.0,
    }
    assert "on_anomaly" not in config["tenants"]["acme"]["budget"]
    assert "on_anomaly" not in _compiled(root)["tenants"]["umbrella"]["budget"]


@pytest.mark.parametrize(
    ("before", "after", "effect"),
    [
        ({"lower_soft_cap_to_ratio": 0.5}, None, Effect.WIDENS),
        ({"lower_soft_cap_to_ratio": 0.5}, {"lower_soft_cap_to_ratio": 0.6}, Effect.WIDENS),
        ({"hold_models_above_usd_per_mtok": 5.0}, {}, Effect.WIDENS),
        ({HOLD: 5.0}, {HOLD: 9.0}, Effect.WIDENS),
        ({HOLD: 5.0}, {HOLD: 1.0}, Effect.NARROWS),
        (None, {"lower_soft_cap_to_ratio": 0.5}, Effect.NARROWS),
    ],
)  # fmt: skip
def test_weakening_the_action_widens_and_strengthening_it_narrows(
    before: dict[str, float] | None, after: dict[str, float] | None, effect: Effect
) -> None:
    def config(action: dict[str, float] | None) -> dict[str, Any]:
        budget: dict[str, Any] = {"monthly_cap_usd": 50.0, "soft_cap_ratio": 0.8}
        if action is not None:
            budget["on_anomaly"] = action
        return {"tenants": {"umbrella": {"budget": budget}}}

    changes = [c for c in diff_configs(config(before), config(after)).changes if c.area == "budget"]
    assert changes and {c.effect for c in changes} == {effect}, changes
    assert all(c.subject == "umbrella" and "anomaly" in c.detail for c in changes)


def _spiking(tenant: str) -> InProcessSpendStore:
    store = InProcessSpendStore()
    day = date(2027, 2, 1)
    while day <= date(2027, 3, 10):
        iso = day.isoformat()
        usd = 100.0 if day == date(2027, 3, 10) else 10.0
        store.record(Usage(f"req-{tenant}-{iso}", tenant, "gpt-4o", None, 1, usd, iso[:7], iso))
        day += timedelta(days=1)
    return store


ACTION = {"lower_soft_cap_to_ratio": 0.5, "hold_models_above_usd_per_mtok": 5.0}


def _config(action: dict[str, float] | None) -> CompiledConfig:
    budget: dict[str, Any] = {"monthly_cap_usd": 5000.0, "soft_cap_ratio": 0.8}
    if action is not None:
        budget["on_anomaly"] = action
    return cast(CompiledConfig, {"tenants": {"acme": {"budget": budget}}, "models": {}})


def _watch(
    db: Database, store: InProcessSpendStore, config: CompiledConfig
) -> tuple[AnomalyWatch, list[int]]:
    """The watch, and a list that grows by one at each republication it asks for."""

    def overview(period: str) -> SpendOverview:
        with db.session() as session:
            return spend_overview(session, store, None, period)

    republished: list[int] = []
    return AnomalyWatch(db, overview, lambda: config, lambda: republished.append(1)), republished


NOW = datetime(2027, 3, 10, 18, tzinfo=UTC)


def test_a_finding_holds_the_tenant_once_until_an_approver_releases_it(db: Database) -> None:
    store = _spiking("acme")
    watch, republished = _watch(db, store, _config(ACTION))
    assert {(a.tenant, a.kind) for a in watch.scan(NOW)} >= {("acme", "spike")}
    assert republished == [1]
    with db.session() as session:
        document = state_document(session, store, _config(ACTION), "2027-03", NOW)
        (held,) = outbox.events(session, holds.HELD)
    entry = document["anomaly_holds"]["acme"]
    assert (entry["day"], entry["kind"]) == ("2027-03-10", "spike")
    assert datetime.fromisoformat(entry["since"]).tzinfo is not None
    assert held.actor == ACTOR and held.payload["action"] == ACTION
    assert watch.scan(NOW) == [] and republished == [1], "a later scan holds nothing anew"

    with db.session() as session:
        holds.release(session, tenant="acme", actor="alice", reason="launch week, expected")
    with db.session() as session:
        document = state_document(session, store, _config(ACTION), "2027-03", NOW)
        (released,) = outbox.events(session, holds.RELEASED)
    assert "anomaly_holds" not in document
    assert released.actor == "alice"
    assert released.payload["reason"] == "launch week, expected"
    assert (released.payload["day"], released.payload["kind"]) == ("2027-03-10", "spike")
    assert watch.scan(NOW) == [], "a released finding is not held again by the same finding"
    for event in (holds.HELD, holds.RELEASED):
        assert "SOC2:CC7.2" in controls_for(event) and "SOC2:A1.1" in controls_for(event)


def test_a_tenant_without_an_action_is_only_reported(db: Database) -> None:
    store = _spiking("acme")
    watch, republished = _watch(db, store, _config(None))
    assert watch.scan(NOW)
    assert republished == []
    with db.session() as session:
        assert outbox.events(session, holds.HELD) == []
        assert "anomaly_holds" not in state_document(session, store, _config(None), "2027-03", NOW)


def test_releasing_a_tenant_that_is_not_held_is_refused(db: Database) -> None:
    with db.session() as session, pytest.raises(holds.NoHoldError, match="no spend anomaly"):
        holds.release(session, tenant="acme", actor="alice", reason="nothing to release")
