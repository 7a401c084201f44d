"""Replay over decisions a real enforcer made and a real audit log recorded, judged by real OPA.

One stack (control plane and audit log on SQLite, Envoy + OPA enforcer):
the gateway answers a few requests, their decision logs reach the audit log,
and a widened revision (acme-chat gains the agent role) is replayed against
the revision that made them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest

from nexus_audit.events import controls_for
from nexus_audit.payloads import PayloadStatus
from nexus_cli.client import ControlPlaneClient
from nexus_control.access.keyring import KeyPurpose
from nexus_control.access.signing_keys import KeyPaths
from nexus_control.authoring.opa import Opa
from nexus_control.replay.candidate import CandidateError, load_revision
from nexus_control.replay.service import EmptyWindowError, Replayer, ReplayWindow
from nexus_control.store import outbox
from nexus_runtime.keys.jws import verify_compact
from tests.fixtures.console import CONSOLE, signed_in
from tests.fixtures.environment import Environment, credentials_overlay, eventually, write_overlay

SEARCH = "/v1/tools/web-search:invoke"
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory, opa: Opa, session_keys: KeyPaths
) -> Iterator[Environment]:
    workdir = tmp_path_factory.mktemp("replay")
    environment = Environment(
        workdir=workdir,
        keys=session_keys,
        opa=opa,
        database_url=f"sqlite:///{workdir}/cp.db",
        plain=credentials_overlay(workdir / "credentials"),
    )
    try:
        environment.start()
        yield environment
    finally:
        environment.stop()


@pytest.fixture(scope="module")
def recorded(env: Environment) -> dict[str, str]:
    """Decisions made under the first revision, by name, once they are in the audit log."""
    assert env.audit is not None
    calls = {
        "chat_allowed": env.call("acme-chat", "acme", "POST", CHAT,
                                 headers={"x-nexus-model": "gpt-4o"}),
        "search_denied": env.call("acme-chat", "acme", "POST", SEARCH,
                                  body={"arguments": {"query": "q"}}),
        "anonymous": env.call(None, "acme", "POST", CHAT, headers={"x-nexus-model": "gpt-4o"}),
        "approval_masked": env.call("acme-agent", "acme", "POST", SEARCH,
                                    headers={"x-nexus-approval": "not-a-token"},
                                    body={"arguments": {"query": "q"}}),
        "hooli_erased": env.call("hooli-chat", "hooli", "POST", CHAT,
                                 headers={"x-nexus-model": "gpt-4o"}),
    }  # fmt: skip
    ids = {name: response.headers["x-nexus-decision-id"] for name, response in calls.items()}
    audit = env.audit

    def logged() -> bool:
        try:
            for decision_id in ids.values():
                audit.leaf(decision_id=decision_id)
        except Exception:
            return False
        return True

    eventually(logged, timeout_s=30)
    return ids


def _replayer(env: Environment) -> Replayer:
    assert env.plane is not None and env.audit is not None
    return Replayer(env.plane.db, env.audit, env.plane.registry, env.plane.keyring, env.opa)


def _replay_body(candidate: str) -> dict[str, str]:
    """A replay of ``candidate`` over acme's last hour, as ``POST /v1/replays`` takes it."""
    now = datetime.now(UTC)
    return {
        "candidate_revision": candidate,
        "since": (now - timedelta(hours=1)).isoformat(),
        "until": (now + timedelta(minutes=5)).isoformat(),
        "tenant": "acme",
    }


def _post_replay(
    env: Environment, body: dict[str, str], *, token: str | None = "approver"
) -> httpx.Response:
    headers = {} if token is None else {"authorization": f"Bearer {env.tokens[token]}"}
    return httpx.post(f"{env.url}/v1/replays", json=body, headers=headers, timeout=120)


def _window() -> ReplayWindow:
    now = datetime.now(UTC)
    return ReplayWindow(since=now - timedelta(hours=1), until=now + timedelta(minutes=5))


@pytest.fixture(scope="module")
def widened(env: Environment, recorded: dict[str, str]) -> str:
    """A signed revision granting acme-chat the agent role (published and approved)."""
    overlay = env.workdir / "credentials-widened"
    overlay.mkdir()
    write_overlay(overlay, env.plain, {"acme-chat": ("agent",)})
    return env.publish(env.build(overlay=overlay))


def test_widened_candidate_turns_the_denied_search_into_an_allow(
    env: Environment, recorded: dict[str, str], widened: str
) -> None:
    assert env.plane is not None
    candidate = load_revision(env.plane.registry, env.plane.keyring, env.opa, widened)
    window = ReplayWindow(**{**_window().__dict__, "tenant": "acme"})
    report = _replayer(env).replay(candidate, window)
    body = json.loads(report.body)
    samples = {s["decision_id"]: bucket for bucket, items in body["samples"].items()
               for s in items}  # fmt: skip
    assert samples[recorded["search_denied"]] == "deny_to_allow"
    assert samples[recorded["chat_allowed"]] == "unchanged"
    assert samples[recorded["anonymous"]] == "unchanged"
    assert body["deny_to_allow_by_tool"] == {"web-search": 1}
    assert body["by"]["route"][SEARCH]["deny_to_allow"] == 1
    assert report.timing.candidate_p50_ns is not None


def test_the_same_window_replayed_twice_gives_byte_identical_reports(
    env: Environment, recorded: dict[str, str], widened: str
) -> None:
    assert env.plane is not None
    candidate = load_revision(env.plane.registry, env.plane.keyring, env.opa, widened)
    window = _window()
    first = _replayer(env).replay(candidate, window)
    second = _replayer(env).replay(candidate, window)
    assert first.body == second.body
    assert first.digest == second.digest


def test_erased_and_masked_records_are_counted_not_replayable(
    env: Environment, recorded: dict[str, str], widened: str
) -> None:
    assert env.plane is not None and env.audit is not None
    audit = env.audit
    with audit.db.session() as session:
        audit.vault.destroy_keys(session, "hooli", None, now=datetime.now(UTC))
    hooli = audit.leaf(decision_id=recorded["hooli_erased"])
    assert audit.payload(hooli.index).status is PayloadStatus.ERASED
    candidate = load_revision(env.plane.registry, env.plane.keyring, env.opa, widened)
    report = _replayer(env).replay(candidate, _window())
    body = orjson.loads(report.body)
    blocked = {s["decision_id"]: s["why"] for s in body["samples"]["not_replayable"]}
    assert blocked[recorded["hooli_erased"]] == "payload_erased"
    assert blocked[recorded["approval_masked"]] == "masked_field"
    assert body["not_replayable"]["payload_erased"] >= 1
    assert body["not_replayable"]["masked_field"] >= 1
    assert recorded["search_denied"] not in blocked


def test_an_unapproved_revision_is_refused_as_a_candidate(
    env: Environment, recorded: dict[str, str]
) -> None:
    assert env.plane is not None
    overlay = env.workdir / "credentials-pending"
    overlay.mkdir()
    write_overlay(overlay, env.plain, {"hooli-chat": ("agent",)})
    pending = env.publish(env.build(overlay=overlay), approve=False)
    with pytest.raises(CandidateError):
        load_revision(env.plane.registry, env.plane.keyring, env.opa, pending)


def test_an_empty_window_is_a_clear_error(
    env: Environment, recorded: dict[str, str], widened: str
) -> None:
    assert env.plane is not None
    candidate = load_revision(env.plane.registry, env.plane.keyring, env.opa, widened)
    past = datetime(2020, 1, 1, tzinfo=UTC)
    with pytest.raises(EmptyWindowError, match="no recorded decision"):
        _replayer(env).replay(candidate, ReplayWindow(since=past, until=past + timedelta(days=1)))


def test_a_replay_through_the_api_is_signed_evidence_in_the_audit_log(
    env: Environment, recorded: dict[str, str], widened: str
) -> None:
    assert env.plane is not None and env.audit is not None
    body = _replay_body(widened)
    first = _post_replay(env, body)
    assert first.status_code == 200, first.text
    second = _post_replay(env, body)
    assert second.json()["report"] == first.json()["report"]
    result = first.json()
    _, signed = verify_compact(
        result["signature"], env.plane.keyring.trusted_for_verification(KeyPurpose.BUNDLE)
    )
    assert signed == result["report"].encode()
    with env.plane.db.session() as session:
        reported = [e for e in outbox.events(session, "replay.reported")
                    if e.payload["digest"] == result["digest"]]  # fmt: skip
    assert reported and reported[0].payload["candidate"] == widened
    assert reported[0].payload["filters"] == {"tenant": "acme"}
    assert {"SOC2:CC8.1", "ISO27001:A.8.32"} <= set(controls_for("replay.reported"))
    anonymous = _post_replay(env, body, token=None)
    assert anonymous.status_code == 401


def test_the_rollout_page_shows_the_signed_replay_report_of_its_revision(
    env: Environment, recorded: dict[str, str], widened: str
) -> None:
    """The approver deciding on a rollout sees what its revision did to recorded traffic."""
    assert env.plane is not None
    replayed = _post_replay(env, _replay_body(widened))
    assert replayed.status_code == 200, replayed.text
    with ControlPlaneClient(env.url, env.tokens["operator"]) as api:
        rollouts = api.get("/v1/rollouts")["rollouts"]
    rollout_id = next(r["id"] for r in rollouts if r["revision"] == widened)
    with signed_in(env, env.tokens["approver"]) as browser:
        page = browser.get(f"{CONSOLE}/rollouts/{rollout_id}")
    assert page.status_code == 200, page.text
    section = page.text[page.text.index('id="replays"') :]
    assert replayed.json()["digest"][:16] in section
    assert "deny_to_allow 1" in section
