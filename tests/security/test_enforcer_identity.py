"""Enforcer identity and separation of duties: no insider speaks for an enforcer, adds one,
or approves their own change under another name.

Against the running stack (control plane on SQLite and on PostgreSQL, a real
OPA + Envoy enforcer with its own token): the review's attacks, each now
refused with a reason, and the fleet and the rollout left as they were.
"""

from __future__ import annotations

import gzip
import json
import shutil
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from nexus_cli.client import ApiCallError, ControlPlaneClient
from nexus_control.access.tokens import (
    Role,
    TokenError,
    create_token,
    revoke_token,
    token_digest,
)
from nexus_control.store import outbox
from nexus_control.store.tables import ApiToken, Enforcer, EnforcerBundle
from nexus_control.store.tables import Principal as PrincipalRow
from tests.fixtures.environment import REPO, Environment, Sources

pytestmark = [pytest.mark.opa, pytest.mark.envoy]

BACKDOOR = '\nallowed if input.attributes.request.http.headers["x-nexus-debug"] == "let-me-in"\n'


def own_id(env: Environment) -> str:
    assert env.stack is not None
    return env.stack.enforcers[0].id


def headers(token: str, enforcer: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", "x-nexus-enforcer": enforcer}


def poll(env: Environment, token: str, enforcer: str, region: str | None = None) -> httpx.Response:
    return httpx.get(
        f"{env.url}/v1/opa/bundles/{region or env.region}/nexus",
        headers=headers(token, enforcer),
        timeout=30,
    )


def report(env: Environment, token: str, enforcer: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{env.url}/v1/opa/status", json=body, headers=headers(token, enforcer))


def mint(env: Environment, *, name: str, role: Role, **binding: str) -> str:
    """A token minted straight in the database, as an insider with the CLI would."""
    assert env.plane is not None
    with env.plane.db.session() as session:
        token, _ = create_token(session, name=name, role=role, actor="insider", **binding)
    return token


def operator(env: Environment) -> ControlPlaneClient:
    return ControlPlaneClient(env.url, env.tokens["operator"])


def fleet_ids(env: Environment) -> set[str]:
    with operator(env) as api:
        return {e["id"] for e in api.get("/v1/fleet")["enforcers"]}


def expected_ids(env: Environment) -> list[str]:
    with operator(env) as api:
        (region,) = api.get("/v1/rollouts/status")["regions"]
    return [e["id"] for e in region["enforcers"]]


def enforcer_row(env: Environment, enforcer_id: str) -> tuple[str, datetime | None] | None:
    assert env.plane is not None
    with env.plane.db.session() as session:
        row = session.get(Enforcer, enforcer_id)
        return None if row is None else (row.region, row.removed_at)


def refused(response: httpx.Response, words: str) -> None:
    assert response.status_code == 403, response.text
    assert words in response.json()["error"]["message"], response.text


def test_enforcer_token_cannot_speak_for_another_enforcer(stack: Environment) -> None:
    mine = stack.tokens[own_id(stack)]
    other = f"{stack.region}-{uuid.uuid4().hex[:6]}"
    with operator(stack) as api:
        api.post("/v1/fleet", {"id": other, "region": stack.region})
    try:
        refused(poll(stack, mine, other), f"belongs to enforcer {own_id(stack)}")
        forged = report(
            stack,
            mine,
            other,
            labels={"region": stack.region, "enforcer": other},
            bundles={"nexus": {"name": "nexus", "code": "bundle_error", "message": "forged"}},
        )
        refused(forged, f"belongs to enforcer {own_id(stack)}")
        # The label may not name another enforcer either, under the right header.
        relabelled = report(stack, mine, own_id(stack), labels={"enforcer": other}, bundles={})
        refused(relabelled, f"status labels name enforcer {other!r}")
        # Decision reports (the co-located audit intake) are bound the same way.
        logs = httpx.post(
            f"{stack.url}/v1/opa/logs",
            content=gzip.compress(b"[]"),
            headers={**headers(mine, other), "content-encoding": "gzip"},
        )
        assert logs.status_code == 403, logs.text
        assert stack.plane is not None
        with stack.plane.db.session() as session:
            assert session.get(EnforcerBundle, (other, "nexus")) is None
        assert enforcer_row(stack, other) is None, "the other enforcer was never seen"
    finally:
        with operator(stack) as api:
            api.delete(f"/v1/fleet/{other}")


def test_enforcer_token_cannot_move_enforcer_to_another_region(stack: Environment) -> None:
    victim = own_id(stack)
    # A token of another region's own enforcer, and one minted for the victim's id but
    # bound to another region: neither moves it.
    foreign = mint(
        stack,
        name="enforcer us-east-1-1",
        role=Role.ENFORCER,
        region="us-east-1",
        enforcer_id="us-east-1-1",
    )
    misbound = mint(
        stack,
        name="enforcer misbound",
        role=Role.ENFORCER,
        region="us-east-1",
        enforcer_id=victim,
    )
    refused(poll(stack, foreign, victim, "us-east-1"), "belongs to enforcer us-east-1-1")
    refused(poll(stack, misbound, victim, "us-east-1"), f"declared in region {stack.region!r}")
    refused(
        report(stack, misbound, victim, labels={"region": "us-east-1"}, bundles={}),
        f"declared in region {stack.region!r}",
    )
    refused(poll(stack, stack.tokens[victim], victim, "us-east-1"), "for region eu-west-1")
    row = enforcer_row(stack, victim)
    assert row is not None and row[0] == stack.region
    assert victim in expected_ids(stack)


def test_future_status_report_cannot_halt_rollout(stack: Environment) -> None:
    """The enforcer's own credential, a forged activation error dated 2099: refused (422)
    before anything is stored, so the rolling change is not rolled back."""
    base = in_force(stack)
    # A declared enforcer that never polls keeps the wave from converging: the rollout
    # stays rolling, where an activation failure would roll it back.
    laggard = f"{stack.region}-{uuid.uuid4().hex[:6]}"
    with operator(stack) as api:
        api.post("/v1/fleet", {"id": laggard, "region": stack.region})
    shorter = (
        (REPO / "bundles/gateway/retention.yaml").read_text().replace("days: 365", "days: 364", 1)
    )
    with ControlPlaneClient(stack.url, stack.tokens["author"]) as api:
        published = api.publish(stack.build(**{"retention.yaml": shorter}).pack())
    rollout_id = published["rollout"]["id"]
    try:
        if published["rollout"]["state"] == "pending_approval":
            with ControlPlaneClient(stack.url, stack.tokens["approver"]) as api:
                api.post(f"/v1/rollouts/{rollout_id}/approve", {})
        me = own_id(stack)
        forged = report(
            stack,
            stack.tokens[me],
            me,
            labels={"region": stack.region, "enforcer": me},
            bundles={
                "nexus": {
                    "name": "nexus",
                    "active_revision": base,
                    "last_successful_download": "2099-01-01T00:00:00Z",
                    "code": "bundle_error",
                    "message": "activation failed",
                }
            },
        )
        assert forged.status_code == 422, forged.text
        assert "ahead of the control plane's clock" in forged.json()["error"]["message"]
        assert stack.plane is not None
        with stack.plane.db.session() as session:
            row = session.get(EnforcerBundle, (me, "nexus"))
            assert row is not None and row.error_code is None
            assert row.downloaded_at is None or row.downloaded_at <= datetime.now(UTC)
        stack.plane.rollouts.tick()
        with operator(stack) as api:
            state = api.get(f"/v1/rollouts/{rollout_id}")
            regions = api.get("/v1/rollouts/status")["regions"]
        assert state["state"] == "rolling", state["history"]
        assert all(e["action"] not in ("halted", "rolled_back") for e in state["history"])
        assert regions[0]["desired"] == published["revision"]
    finally:
        with operator(stack) as api:
            api.delete(f"/v1/fleet/{laggard}")
        stack.publish(stack.build())


def test_undeclared_enforcer_cannot_join_fleet(stack: Environment) -> None:
    before_fleet, before_expected = fleet_ids(stack), expected_ids(stack)
    # A region-wide token (as minted before tokens were bound per enforcer) speaks for none.
    assert stack.plane is not None
    legacy = "nxp_" + uuid.uuid4().hex
    with stack.plane.db.session() as session:
        holder = session.scalar(select(PrincipalRow))
        assert holder is not None
        session.add(
            ApiToken(
                id=str(uuid.uuid4()),
                principal_id=holder.id,
                name=holder.name,
                role=Role.ENFORCER.value,
                token_sha256=token_digest(legacy),
                region=stack.region,
                enforcer_id=None,
                created_at=datetime.now(UTC),
            )
        )
    phantoms = [f"phantom-{n}" for n in range(20)]
    for phantom in phantoms:
        refused(poll(stack, legacy, phantom), "region-wide enforcer tokens speak for no enforcer")
    # A token bound to an id nobody declared: refused too, and nothing is added.
    bound = mint(
        stack,
        name="enforcer phantom",
        role=Role.ENFORCER,
        region=stack.region,
        enforcer_id="phantom-bound",
    )
    refused(poll(stack, bound, "phantom-bound"), "is not declared")
    refused(report(stack, bound, "phantom-bound", labels={}, bundles={}), "is not declared")
    assert fleet_ids(stack) == before_fleet
    assert expected_ids(stack) == before_expected
    for phantom in [*phantoms, "phantom-bound"]:
        assert enforcer_row(stack, phantom) is None


def test_removed_enforcer_stays_removed(stack: Environment) -> None:
    spare = f"{stack.region}-{uuid.uuid4().hex[:6]}"
    with operator(stack) as api:
        registered = api.post("/v1/fleet", {"id": spare, "region": stack.region})
    assert registered["changed"] is True
    token = mint(
        stack,
        name=f"enforcer {spare}",
        role=Role.ENFORCER,
        region=stack.region,
        enforcer_id=spare,
    )
    assert poll(stack, token, spare).status_code == 200
    assert spare in fleet_ids(stack) and spare in expected_ids(stack)
    with operator(stack) as api:
        assert api.delete(f"/v1/fleet/{spare}") == {"removed": spare}
    for _ in range(3):
        refused(poll(stack, token, spare), "was removed from the fleet")
        refused(report(stack, token, spare, labels={}, bundles={}), "was removed from the fleet")
    assert spare not in fleet_ids(stack) and spare not in expected_ids(stack)
    # Only an operator's registration brings it back (and that is audited).
    with ControlPlaneClient(stack.url, stack.tokens["author"]) as api, pytest.raises(ApiCallError):
        api.post("/v1/fleet", {"id": spare, "region": stack.region})
    with operator(stack) as api:
        assert api.post("/v1/fleet", {"id": spare, "region": stack.region})["changed"] is True
    assert poll(stack, token, spare).status_code == 200
    with stack.plane.db.session() as session:  # type: ignore[union-attr]
        kinds = [e.payload.get("enforcer") for e in outbox.events(session, "enforcer.registered")]
    assert kinds.count(spare) == 2
    with operator(stack) as api:
        api.delete(f"/v1/fleet/{spare}")


def in_force(env: Environment) -> str:
    with operator(env) as api:
        (region,) = api.get("/v1/rollouts/status")["regions"]
    return str(region["desired"])


def with_backdoor(env: Environment) -> Sources:
    library = env.workdir / f"rego-{uuid.uuid4().hex[:8]}"
    shutil.copytree(REPO / "rego", library)
    path = library / "nexus/envoy/authz.rego"
    path.write_text(path.read_text() + BACKDOOR)
    sources = env.build()
    bundle_yaml = sources.bundle_dir / "bundle.yaml"
    bundle_yaml.write_text(bundle_yaml.read_text().replace(str(REPO / "rego"), str(library)))
    return sources


def test_author_cannot_approve_own_change_under_another_name(stack: Environment) -> None:
    assert stack.plane is not None
    with stack.plane.db.session() as session:
        author = session.scalar(
            select(ApiToken).where(ApiToken.token_sha256 == token_digest(stack.tokens["author"]))
        )
        assert author is not None
        author_name, author_principal = author.name, author.principal_id
    # The review's trick (a trailing space) is refused outright; another spelling of the
    # same name is the same principal, and its approver token cannot approve.
    with stack.plane.db.session() as session, pytest.raises(TokenError, match="white space"):
        create_token(session, name=author_name + " ", role=Role.APPROVER)
    respelled = author_name.upper()
    assert respelled != author_name
    with stack.plane.db.session() as session:
        approver_token, approver = create_token(session, name=respelled, role=Role.APPROVER)
    assert approver.principal_id == author_principal and approver.name == author_name
    with ControlPlaneClient(stack.url, stack.tokens["author"]) as api:
        published = api.publish(with_backdoor(stack).pack())
    try:
        assert published["rollout"]["state"] == "pending_approval"
        rollout_id = published["rollout"]["id"]
        with (
            ControlPlaneClient(stack.url, approver_token) as api,
            pytest.raises(ApiCallError) as own,
        ):
            api.post(f"/v1/rollouts/{rollout_id}/approve", {"comment": "looks fine to me"})
        assert own.value.status == 403
        assert "under any name" in str(own.value)
        with operator(stack) as api:
            assert api.get(f"/v1/rollouts/{rollout_id}")["state"] == "pending_approval"
    finally:
        with stack.plane.db.session() as session:
            revoke_token(session, approver.token_id, actor="test")
        stack.publish(stack.build())


@pytest.mark.parametrize(
    "name",
    ["author-user ", " author-user", "", "x" * 250, "two  spaces", "tab\tname", "nul\x00", "é-ok?"],
)
def test_token_name_with_padding_is_refused(stack: Environment, name: str) -> None:
    assert stack.plane is not None

    def principals() -> int:
        with stack.plane.db.session() as session:  # type: ignore[union-attr]
            return int(session.scalar(select(func.count()).select_from(PrincipalRow)) or 0)

    before = principals()
    with stack.plane.db.session() as session, pytest.raises(TokenError):
        create_token(session, name=name, role=Role.APPROVER)
    assert principals() == before, "no principal is made for a refused name"


def test_token_grants_and_revocations_cannot_go_unrecorded(stack: Environment) -> None:
    assert stack.plane is not None
    name = f"new-approver-{uuid.uuid4().hex[:6]}"
    with stack.plane.db.session() as session:
        _, made = create_token(session, name=name, role=Role.APPROVER, actor="local:root")
    with stack.plane.db.session() as session:
        assert revoke_token(session, made.token_id, actor="local:root")
    with stack.plane.db.session() as session:
        mine = [
            (e.event_type, e.actor)
            for e in outbox.events(session)
            if made.principal_id in json.dumps(e.payload)
        ]
    assert mine == [
        ("access.principal_created", "local:root"),
        ("access.role_granted", "local:root"),
        ("access.token_created", "local:root"),
        ("access.token_revoked", "local:root"),
    ]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/rollouts/{id}"),
        ("POST", "/v1/rollouts/{id}/approve"),
        ("POST", "/v1/rollouts/{id}/rollback"),
        ("POST", "/v1/rollouts/{id}/resume"),
    ],
)
@pytest.mark.parametrize("rollout_id", [2**31, 2**63, 2**64 + 1, 10**30])
def test_huge_rollout_id_is_a_client_error(
    stack: Environment, method: str, path: str, rollout_id: int
) -> None:
    token = stack.tokens["approver" if path.endswith("approve") else "operator"]
    response = httpx.request(
        method,
        stack.url + path.format(id=rollout_id),
        headers={"authorization": f"Bearer {token}"},
        json={} if method == "POST" else None,
        timeout=10,
    )
    assert response.status_code == 400, response.text
    assert "rollout_id" in response.json()["error"]["message"]


@pytest.mark.parametrize("enforcer", ["nul%00byte", "x" * 300, "UPPER", "..%2F.."])
def test_odd_enforcer_id_in_a_path_is_a_client_error(stack: Environment, enforcer: str) -> None:
    response = httpx.delete(
        f"{stack.url}/v1/fleet/{enforcer}",
        headers={"authorization": f"Bearer {stack.tokens['operator']}"},
        timeout=10,
    )
    assert 400 <= response.status_code < 500, response.text
