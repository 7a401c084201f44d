"""The console attacked as an insider (or a page they lure a colleague to) would attack it.

Against the running stack (control plane on SQLite and on PostgreSQL, a real
enforcer): a change that needs a second person waits for approval, and every
attempt below to approve it without being that person, or to reuse a session
one should not have, leaves it waiting. Each test checks the refusal's status
*and* that nothing changed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from nexus_cli.client import ControlPlaneClient
from nexus_control.access.tokens import Role, create_token, revoke_token
from nexus_control.console.sessions import CSRF_FIELD, csrf_token
from nexus_control.store.tables import ConsoleSession
from tests.fixtures.console import CONSOLE, SESSION_COOKIE, cookie_of, signed_in
from tests.fixtures.environment import Environment
from tests.security.test_four_eyes import BACKDOOR, restore, with_library_change

pytestmark = [pytest.mark.opa, pytest.mark.envoy]


@pytest.fixture(scope="module")
def pending(stack: Environment) -> Iterator[int]:
    """A rollout of a Rego change waiting for its second approver."""
    sources = with_library_change(stack, "nexus/tools.rego", BACKDOOR)
    with ControlPlaneClient(stack.url, stack.tokens["author"]) as api:
        rollout = api.publish(sources.pack())["rollout"]
    assert rollout["state"] == "pending_approval"
    yield int(rollout["id"])
    restore(stack)


def state(env: Environment, rollout_id: int) -> str:
    with ControlPlaneClient(env.url, env.tokens["operator"]) as api:
        return str(api.get(f"/v1/rollouts/{rollout_id}")["state"])


def approve(client: httpx.Client, rollout_id: int, csrf: str | None) -> httpx.Response:
    fields = {"confirm": "yes", "reason": "looks fine"}
    if csrf is not None:
        fields[CSRF_FIELD] = csrf
    return client.post(f"{CONSOLE}/rollouts/{rollout_id}/approve", data=fields)


def test_cross_site_form_without_csrf_token_cannot_approve(
    stack: Environment, pending: int
) -> None:
    with signed_in(stack, stack.tokens["approver"]) as browser:
        refused = approve(browser, pending, csrf=None)
        lured = browser.post(
            f"{CONSOLE}/rollouts/{pending}/approve",
            data={"confirm": "yes", CSRF_FIELD: csrf_token(cookie_of(browser))},
            headers={"origin": "https://attacker.example"},
        )
    assert refused.status_code == 403
    assert lured.status_code == 403, "a form posted from another site is refused"
    assert state(stack, pending) == "pending_approval"


def test_csrf_token_of_another_session_cannot_approve(stack: Environment, pending: int) -> None:
    with (
        signed_in(stack, stack.tokens["approver"]) as victim,
        signed_in(stack, stack.tokens["operator"]) as attacker,
    ):
        stolen_for = csrf_token(cookie_of(attacker))
        refused = approve(victim, pending, csrf=stolen_for)
    assert refused.status_code == 403
    assert state(stack, pending) == "pending_approval"


def test_operator_session_cannot_approve_a_change(stack: Environment, pending: int) -> None:
    with signed_in(stack, stack.tokens["operator"]) as operator:
        refused = approve(operator, pending, csrf=csrf_token(cookie_of(operator)))
    assert refused.status_code == 403
    assert state(stack, pending) == "pending_approval"


def test_author_session_cannot_approve_its_own_change(stack: Environment, pending: int) -> None:
    with signed_in(stack, stack.tokens["author"]) as author:
        refused = approve(author, pending, csrf=csrf_token(cookie_of(author)))
    assert refused.status_code == 403
    assert state(stack, pending) == "pending_approval"


def test_machine_tokens_cannot_open_a_console_session(stack: Environment) -> None:
    assert stack.stack is not None
    for role in (stack.stack.enforcers[0].id, "gateway"):
        with httpx.Client(base_url=stack.url, timeout=10) as client:
            form = client.get(f"{CONSOLE}/login")
            nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
            assert nonce is not None
            answer = client.post(
                f"{CONSOLE}/login", data={"token": stack.tokens[role], "nonce": nonce.group(1)}
            )
            assert answer.status_code == 401, role
            assert client.cookies.get(SESSION_COOKIE) is None


def test_sign_in_posted_from_elsewhere_is_refused(stack: Environment) -> None:
    """A page that posts someone's token into the console (login CSRF) gets no session."""
    with httpx.Client(base_url=stack.url, timeout=10) as client:
        answer = client.post(
            f"{CONSOLE}/login", data={"token": stack.tokens["operator"], "nonce": "guessed"}
        )
        assert answer.status_code == 403
        assert client.cookies.get(SESSION_COOKIE) is None


def test_sign_in_cannot_redirect_off_the_console(stack: Environment) -> None:
    with httpx.Client(base_url=stack.url, timeout=10) as client:
        form = client.get(f"{CONSOLE}/login")
        nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
        assert nonce is not None
        for target in ("https://attacker.example/", "//attacker.example/x", "/console/\\evil"):
            client.cookies.clear()
            client.cookies.set("nexus_console_login", nonce.group(1), path=f"{CONSOLE}/login")
            answer = client.post(
                f"{CONSOLE}/login",
                data={"token": stack.tokens["operator"], "nonce": nonce.group(1), "next": target},
            )
            assert answer.status_code == 303
            assert answer.headers["location"] == f"{CONSOLE}/", target


def test_session_cookie_is_httponly_strict_and_scoped(stack: Environment) -> None:
    with httpx.Client(base_url=stack.url, timeout=10) as client:
        form = client.get(f"{CONSOLE}/login")
        nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
        assert nonce is not None
        answer = client.post(
            f"{CONSOLE}/login", data={"token": stack.tokens["approver"], "nonce": nonce.group(1)}
        )
    (header,) = [
        value
        for value in answer.headers.get_list("set-cookie")
        if value.startswith(SESSION_COOKIE + "=")
    ]
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}
    assert {"httponly", "samesite", "path", "max-age"} <= attributes
    assert "samesite=strict" in header.lower()
    assert f"path={CONSOLE}" in header.lower()


def test_database_copy_of_a_session_opens_nothing(stack: Environment, pending: int) -> None:
    """The database keeps only the cookie's SHA-256: presenting it as a cookie gets nowhere."""
    assert stack.plane is not None
    with signed_in(stack, stack.tokens["approver"]), stack.plane.db.session() as session:
        stored = list(session.scalars(select(ConsoleSession.id_sha256)))
    assert stored
    for digest in stored:
        with httpx.Client(base_url=stack.url, timeout=10) as thief:
            thief.cookies.set(SESSION_COOKIE, digest, path=CONSOLE)
            page = thief.get(f"{CONSOLE}/rollouts")
            refused = approve(thief, pending, csrf=csrf_token(digest))
        assert page.status_code == 303
        assert f"{CONSOLE}/login" in page.headers["location"]
        assert refused.status_code == 401
    assert state(stack, pending) == "pending_approval"


def test_revoked_token_ends_its_console_session(stack: Environment, pending: int) -> None:
    assert stack.plane is not None
    with stack.plane.db.session() as session:
        token, principal = create_token(session, name="leaving-approver", role=Role.APPROVER)
    with signed_in(stack, token) as browser:
        assert browser.get(f"{CONSOLE}/rollouts").status_code == 200
        with stack.plane.db.session() as session:
            assert revoke_token(session, principal.token_id)
        page = browser.get(f"{CONSOLE}/rollouts")
        refused = approve(browser, pending, csrf=csrf_token(cookie_of(browser)))
    assert page.status_code == 303
    assert f"{CONSOLE}/login" in page.headers["location"]
    assert refused.status_code == 401
    assert state(stack, pending) == "pending_approval"


def test_signed_out_session_cannot_be_replayed(stack: Environment, pending: int) -> None:
    with signed_in(stack, stack.tokens["approver"]) as browser:
        cookie = cookie_of(browser)
        out = browser.post(f"{CONSOLE}/logout", data={CSRF_FIELD: csrf_token(cookie)})
        assert out.status_code == 303
    with httpx.Client(base_url=stack.url, timeout=10) as replay:
        replay.cookies.set(SESSION_COOKIE, cookie, path=CONSOLE)
        refused = approve(replay, pending, csrf=csrf_token(cookie))
    assert refused.status_code == 401
    assert state(stack, pending) == "pending_approval"
