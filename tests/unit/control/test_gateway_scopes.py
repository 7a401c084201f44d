"""Gateway tokens are scoped to tenants; usage is checked against the policy in force."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from nexus_control.access.tokens import Role, TokenError, authenticate, create_token
from nexus_control.authoring.compiler import compile_data
from nexus_control.authoring.loader import load_bundle
from nexus_control.authoring.policyset import resolve
from nexus_control.budgets.usage import UsageRefusedError, UsageReport, check_report
from nexus_control.store.database import control_database
from tests.conftest import GATEWAY


def test_a_gateway_token_carries_its_tenants_and_nothing_else_does(tmp_path: Path) -> None:
    db = control_database(f"sqlite:///{tmp_path}/cp.db")
    db.migrate()
    with db.session() as session:
        plain, principal = create_token(
            session, name="gw", role=Role.GATEWAY, tenants=["hooli", "acme", "acme"]
        )
        assert principal.tenants == ("acme", "hooli")
        for bad in ([], ["Not A Tenant"], "acme"):
            with pytest.raises(TokenError):
                create_token(session, name="gw2", role=Role.GATEWAY, tenants=bad)
        with pytest.raises(TokenError, match="only gateway and finops tokens"):
            create_token(session, name="op", role=Role.OPERATOR, tenants=["acme"])
    with db.session() as session:
        found = authenticate(session, plain)
    assert found is not None and found.may_report_for("acme")
    assert not found.may_report_for("globex")
    db.dispose()


def test_a_finops_token_names_its_tenants_and_reports_no_usage(tmp_path: Path) -> None:
    db = control_database(f"sqlite:///{tmp_path}/cp.db")
    db.migrate()
    with db.session() as session:
        with pytest.raises(TokenError, match="must name the tenants it may read the spend of"):
            create_token(session, name="fin", role=Role.FINOPS, tenants=[])
        plain, principal = create_token(session, name="fin", role=Role.FINOPS, tenants=["acme"])
    with db.session() as session:
        found = authenticate(session, plain)
    assert found is not None and found.tenants == ("acme",) == principal.tenants
    assert not found.may_report_for("acme"), "a finops token reads spend; it reports none"
    db.dispose()


@pytest.fixture(scope="module")
def config() -> Any:
    return compile_data(resolve(load_bundle(GATEWAY)), approval_jwks="")


def report(**fields: Any) -> UsageReport:
    body = {"request_id": "req-12345678", "tenant": "acme", "model": "gpt-4o", "tokens": 1}
    return UsageReport.model_validate({"cost_usd": 1.0, **body, **fields})


def test_usage_checks(config: Any) -> None:
    now = datetime.now(UTC)
    check_report(config, report(), now)
    check_report(
        config, report(feature="support-chat", occurred_at=now + timedelta(seconds=30)), now
    )
    for bad, why in (
        (report(occurred_at=now + timedelta(days=100)), "in the future"),
        (report(occurred_at=datetime(2026, 1, 1)), "time zone"),
        (report(model="gpt-9"), "unknown model"),
        (report(feature="code-review"), "unknown feature"),  # initech's, not acme's
        (report(tenant="umbrella"), "not one tenant 'umbrella' may use"),  # free plan
        (report(occurred_at=now - timedelta(days=401)), "no longer kept"),
        (report(endpoint="/v1/chat/completions"), "unknown route"),  # a path, not a name
        (report(endpoint="chat.completions.x"), "unknown route"),
    ):
        with pytest.raises(UsageRefusedError, match=why):
            check_report(config, bad, now)


def test_usage_names_a_route_of_bounded_length(config: Any) -> None:
    check_report(config, report(endpoint="chat.completions"), datetime.now(UTC))
    with pytest.raises(ValidationError, match="at most 64"):
        report(endpoint="x" * 65)
