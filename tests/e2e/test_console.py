"""The console in a real browser (Debian's Chromium through Playwright) over real enforcers.

One environment for the module: the control plane with the audit log, and a
region of one Envoy + OPA enforcer. Every page renders for every role with
data from real decisions, passes axe-core with no serious violation, and is
screenshotted into the test's artefacts; an author publishes from the CLI
and an approver approves in the browser, and the page shows the enforcer
converge; a decision made through Envoy is found by the search.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from nexus_control.access.tokens import Role, create_token
from nexus_control.authoring.opa import Opa
from tests.fixtures.browser import browser, screenshot, serious_violations, sign_in
from tests.fixtures.environment import Environment, credentials_overlay, eventually, write_overlay

__all__ = ["browser"]

pytestmark = [pytest.mark.opa, pytest.mark.envoy]

CHAT = "/v1/chat/completions"

PAGES = {
    "compliance": ["controls", "controls/SOC2:CC6.1", "decisions", "rollouts", "budgets", "log"],
    "operator": ["decisions", "rollouts", "fleet", "budgets", "log"],
    "approver": ["rollouts", "fleet", "log"],
    "author": ["rollouts", "fleet", "log"],
}
"""What each role's navigation offers (read from the API's roles), and so what must render."""


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory, session_keys: Any, opa: Opa
) -> Iterator[Environment]:
    workdir = tmp_path_factory.mktemp("console")
    plain = credentials_overlay(workdir / "credentials")
    environment = Environment(workdir, session_keys, opa, f"sqlite:///{workdir}/control.db", plain)
    environment.start()
    assert environment.plane is not None
    with environment.plane.db.session() as session:
        environment.tokens["compliance"], _ = create_token(
            session, name="carol", role=Role.COMPLIANCE
        )
    for _ in range(3):
        environment.call(
            "acme-chat", "acme", "POST", "/v1/chat/completions", body={"model": "gpt-4o"}
        )
    environment.call(None, "acme", "POST", CHAT, body={"model": "gpt-4o"})
    for tenant, cost in (("acme", 12.5), ("hooli", 3.0)):
        assert environment.usage(tenant, cost).status_code < 300
    yield environment
    environment.stop()


@pytest.fixture
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "console-screenshots"


def _page(browser: Browser, env: Environment, role: str) -> Page:
    # bypass_csp: only so that axe-core can be injected; the pages themselves run under it.
    context = browser.new_context(viewport={"width": 1366, "height": 900}, bypass_csp=True)
    page = context.new_page()
    sign_in(page, env.url, env.tokens[role])
    return page


@pytest.mark.parametrize("role", sorted(PAGES))
def test_every_page_renders_for_each_role_with_no_serious_accessibility_violation(
    browser: Browser, env: Environment, role: str, artefacts: Path
) -> None:
    page = _page(browser, env, role)
    nav = page.locator("nav[aria-label=Pages] a").all_inner_texts()
    assert len(nav) == len({p.split("/")[0] for p in PAGES[role]})
    for path in PAGES[role]:
        answer = page.goto(f"{env.url}/console/{path}")
        assert answer is not None and answer.status == 200, path
        expect(page.locator("h1")).to_be_visible()
        assert page.locator(".error").count() == 0, path
        assert serious_violations(page) == [], path
        screenshot(page, artefacts, f"{role}-{path}")
    page.context.close()


def test_the_controls_page_shows_evidence_gaps_and_the_crosswalk(
    browser: Browser, env: Environment, artefacts: Path
) -> None:
    page = _page(browser, env, "compliance")
    page.goto(f"{env.url}/console/controls?framework=SOC2")
    eventually(lambda: page.reload() is not None and _cc61_has_denials(page), timeout_s=20)
    assert page.locator("tr.gap").count() > 0, "controls with no evidence are listed as gaps"
    assert page.locator("#controls a[href*='ISO27001']").count() > 0, "the crosswalk is shown"
    screenshot(page, artefacts, "controls")
    page.click("#controls a:text-is('CC6.1')")
    page.click("text=Export and verify")
    expect(page.locator("#verification")).to_contain_text("Verified")
    page.context.close()


def _cc61_has_denials(page: Page) -> bool:
    row = page.locator("#controls tr", has=page.locator("a:text-is('CC6.1')"))
    cells = row.locator("td.num").all_inner_texts()
    return len(cells) == 3 and int(cells[1]) > 0


def test_a_decision_made_through_envoy_is_found_by_the_search(
    browser: Browser, env: Environment
) -> None:
    answer = env.call("acme-chat", "acme", "POST", CHAT, body={"model": "gpt-4o"})
    decision_id = answer.headers["x-nexus-decision-id"]
    page = _page(browser, env, "operator")

    def found() -> bool:
        page.goto(f"{env.url}/console/decisions?decision_id={decision_id}")
        return page.locator("#proof").count() == 1

    eventually(found, timeout_s=30, interval_s=0.5)
    expect(page.locator("#proof")).to_contain_text("Verified")
    page.goto(f"{env.url}/console/decisions?tenant=acme&route={CHAT}")
    expect(page.locator("#results")).to_contain_text(decision_id)
    page.goto(f"{env.url}/console/decisions?since=yesterday")
    expect(page.locator(".error")).to_contain_text("is not a date")
    page.context.close()


def test_an_approver_approves_in_the_browser_and_the_page_shows_the_enforcer_converge(
    browser: Browser, env: Environment, artefacts: Path
) -> None:
    overlay = env.workdir / "widened"
    write_overlay(overlay, env.plain, {"acme-chat": ("dpo",)})
    sources = env.build(overlay=overlay)
    cli = subprocess.run(
        [sys.executable, "-m", "nexus_cli", "publish", str(sources.bundle_dir),
         "--overlay", str(overlay), "--json"],
        env={**os.environ, "NEXUS_URL": env.url, "NEXUS_ADMIN_TOKEN": env.tokens["author"]},
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert env.plane is not None
    rollout = env.plane.rollouts.recent(1)[0]
    assert rollout.state.value == "pending_approval"

    page = _page(browser, env, "approver")
    page.goto(f"{env.url}/console/rollouts/{rollout.id}")
    assert page.locator("#diff tr.widening").count() > 0, "the widening change is highlighted"
    assert page.locator("#action-promote").count() == 0, "an approver is offered no operator button"
    form = page.locator("#action-approve")
    form.locator("textarea").fill("reviewed: dpo for acme-chat is intended")
    form.locator("input[name=confirm]").check()
    form.locator("button").click()
    expect(page.locator("#done")).to_contain_text("approve")
    enforcer = page.locator("tr.enforcer").first
    expect(enforcer).to_have_attribute("data-state", "active", timeout=60_000)
    expect(page.locator("#rollout-state")).to_have_text("completed", timeout=60_000)
    screenshot(page, artefacts, "rollout-approved")
    history = [h.actor for h in env.plane.rollouts.get(rollout.id)[1] if h.action == "approved"]
    assert history == ["e2e-approver"], "the approval is the approver's, as through the API"
    page.context.close()


def test_a_rollouts_diff_is_shown_a_page_at_a_time_widening_first(
    browser: Browser, env: Environment, artefacts: Path
) -> None:
    assert env.plane is not None
    first = min(env.plane.rollouts.recent(100), key=lambda r: r.id)
    whole = first.diff["changes"] if first.diff else []
    widening = sum(c["effect"] == "widens" for c in whole)
    assert len(whole) > 10 and widening > 5, "the first publication adds every tenant and grant"
    page = _page(browser, env, "approver")
    base = f"{env.url}/console/rollouts/{first.id}"
    answer = page.goto(f"{base}?limit=5")
    assert answer is not None and answer.status == 200
    expect(page.locator("#diff-summary")).to_contain_text(f"{len(whole)} changes")
    rows = page.locator("#diff tbody tr")
    assert rows.count() == 5
    assert page.locator("#diff tbody tr.widening").count() == 5, "widening changes come first"
    assert page.locator("#diff-previous").count() == 0
    assert serious_violations(page) == []
    screenshot(page, artefacts, "rollout-diff")
    page.click("#diff-next")
    expect(rows.first).to_have_attribute("data-ordinal", "5")
    page.click("#diff-previous")
    expect(rows.first).to_have_attribute("data-ordinal", "0")
    page.click("#effect-neutral")
    neutral = sum(c["effect"] == "neutral" for c in whole)
    assert rows.count() == min(5, neutral) and page.locator("tr.widening").count() == 0
    for query, status, why in (
        ("?after=abc", 400, "after: 'abc' is not a whole number"),
        ("?effect=wider", 400, "effect: 'wider' is not one of"),
        ("?limit=100000", 400, "limit: 100000 is not a whole number from 1 to 500"),
    ):
        answer = page.goto(f"{base}{query}")
        assert answer is not None and answer.status == status, query
        expect(page.locator("main")).to_contain_text(why)
    answer = page.goto(f"{env.url}/console/rollouts/4242")
    assert answer is not None and answer.status == 404
    page.context.close()


def test_the_budgets_page_ranks_tenants_by_share_of_cap_and_shows_one_on_request(
    browser: Browser, env: Environment
) -> None:
    assert env.plane is not None
    overview = env.plane.budgets.overview()
    ranked = [t.tenant for t in overview.tenants]
    page = _page(browser, env, "operator")
    page.goto(f"{env.url}/console/budgets")
    shown = page.locator("#tenants tbody th a").all_inner_texts()
    assert shown == ranked[: len(shown)] and len(shown) == min(50, len(ranked))
    expect(page.locator(".summary")).to_contain_text(f"across {len(ranked)} tenants")
    page.goto(f"{env.url}/console/budgets?tenant=acme")
    assert page.locator("#tenants tbody th a").all_inner_texts() == ["acme"]
    expect(page.locator("#tenants")).to_contain_text("12.50")
    answer = page.goto(f"{env.url}/console/budgets?tenant=nobody")
    assert answer is not None and answer.status == 404
    expect(page.locator("main")).to_contain_text("no tenant 'nobody'")
    page.context.close()
