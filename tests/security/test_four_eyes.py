"""Four eyes on the whole bundle: one author cannot change what enforcers decide alone.

Against the running stack (control plane on SQLite and on PostgreSQL, real
OPA + Envoy): the review's attack, a backdoor rule added to the Rego library,
now waits for a second person, unsigned, while the enforcer keeps refusing
the backdoor's request; and no one can name the revision they want.
"""

from __future__ import annotations

import shutil
import uuid

import httpx
import pytest
from sqlalchemy import func, select

from nexus_cli.client import ApiCallError, ControlPlaneClient
from nexus_control.authoring.archive import read_archive, write_archive
from nexus_control.authoring.bundle import BuildError, read_bundle_bytes
from nexus_control.authoring.signatures import MANIFEST_FILE
from nexus_control.authoring.sources import pack_sources
from nexus_control.store.tables import BundleRevision
from tests.fixtures.archives import rewrite_archive
from tests.fixtures.environment import REPO, Environment, Sources

pytestmark = [pytest.mark.opa, pytest.mark.envoy]

CHAT = "/v1/chat/completions"
BACKDOOR = '\nallowed if input.attributes.request.http.headers["x-nexus-debug"] == "let-me-in"\n'
DB_WRITE = "/v1/tools/db-write:invoke"


def with_library_change(env: Environment, module: str, change: str) -> Sources:
    """The example bundle's sources with ``change`` appended to one library module."""
    library = env.workdir / f"rego-{uuid.uuid4().hex[:8]}"
    shutil.copytree(REPO / "rego", library)
    path = library / module
    path.write_text(path.read_text() + change)
    sources = env.build()
    bundle_yaml = sources.bundle_dir / "bundle.yaml"
    bundle_yaml.write_text(bundle_yaml.read_text().replace(str(REPO / "rego"), str(library)))
    return sources


def in_force(env: Environment) -> str:
    with ControlPlaneClient(env.url, env.tokens["operator"]) as api:
        regions = api.get("/v1/rollouts/status")["regions"]
    return str(regions[0]["desired"])


def revisions_stored(env: Environment) -> int:
    assert env.plane is not None
    with env.plane.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(BundleRevision)) or 0)


def enforcer_id(env: Environment) -> str:
    """The running enforcer's own id: a poll under a new id would add an enforcer."""
    assert env.stack is not None
    return env.stack.enforcers[0].id


def served_archive(env: Environment) -> httpx.Response:
    return httpx.get(
        f"{env.url}/v1/opa/bundles/{env.region}/nexus",
        headers={
            "authorization": f"Bearer {env.tokens[enforcer_id(env)]}",
            "x-nexus-enforcer": enforcer_id(env),
        },
        timeout=10,
    )


def restore(env: Environment) -> None:
    """Publish the original sources again: the pending change is superseded."""
    env.publish(env.build())


def test_author_cannot_ship_rego_without_second_approver(stack: Environment) -> None:
    before = in_force(stack)
    backdoored = with_library_change(stack, "nexus/envoy/authz.rego", BACKDOOR)
    with ControlPlaneClient(stack.url, stack.tokens["author"]) as api:
        published = api.publish(backdoored.pack())
    try:
        assert published["created"] is True
        assert published["rollout"]["state"] == "pending_approval"
        diff = published["diff"]
        assert diff["changes"] == [], "no data changed: a data-only diff saw nothing"
        assert diff["needs_second_approver"] is True and diff["code_changed"] is True
        (module,) = diff["modules"]
        assert module["path"] == "nexus/envoy/authz.rego"
        assert module["package"] == "nexus.envoy.authz"
        assert "allowed" in module["rules_changed"]
        assert (
            '+allowed if input.attributes.request.http.headers["x-nexus-debug"]' in module["diff"]
        )

        assert stack.plane is not None
        with stack.plane.db.session() as session:
            row = session.get(BundleRevision, published["revision"])
            assert row is not None and row.archive is None, "nothing signed exists to leak"
        assert in_force(stack) == before
        assert served_archive(stack).headers["etag"] == f'"{before}"'
        attack = stack.call(
            None,
            "acme",
            "POST",
            DB_WRITE,
            headers={"x-nexus-debug": "let-me-in"},
            body={"arguments": {"database": "prod", "statement": "DROP TABLE users"}},
        )
        assert attack.status_code == 401, attack.text
        with (
            ControlPlaneClient(stack.url, stack.tokens["author"]) as api,
            pytest.raises(ApiCallError) as own,
        ):
            api.post(f"/v1/rollouts/{published['rollout']['id']}/approve", {})
        assert own.value.status == 403
    finally:
        restore(stack)


def test_author_cannot_loosen_the_log_mask_alone(stack: Environment) -> None:
    loosened = with_library_change(stack, "system/log/mask.rego", "\n# reviewed? no\n")
    with ControlPlaneClient(stack.url, stack.tokens["author"]) as api:
        published = api.publish(loosened.pack())
    try:
        assert published["rollout"]["state"] == "pending_approval"
        assert [m["path"] for m in published["diff"]["modules"]] == ["system/log/mask.rego"]
    finally:
        restore(stack)


def published_alone(
    env: Environment, file: str, old: str, new: str, count: int = 1
) -> list[dict[str, str]]:
    """Publish, as the author alone, the example bundle with ``old`` replaced by ``new``
    ``count`` times (-1: everywhere) in ``file``; assert it waits for a second approver and
    changed nothing in force; its diff's changes (area, subject, detail, effect). The revision
    in force is restored."""
    before = in_force(env)
    sources = env.build()
    path = sources.bundle_dir / file
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, count))
    with ControlPlaneClient(env.url, env.tokens["author"]) as api:
        published = api.publish(sources.pack())
    try:
        assert published["rollout"]["state"] == "pending_approval"
        diff = published["diff"]
        assert diff["needs_second_approver"] is True
        assert in_force(env) == before
        keys = ("area", "subject", "detail", "effect")
        return [{k: c[k] for k in keys} for c in diff["changes"]]
    finally:
        restore(env)


def test_author_cannot_stop_a_tenants_answers_waiting_for_the_log_alone(
    stack: Environment,
) -> None:
    marker = "    jurisdiction: eu\n"
    changes = published_alone(
        stack, "tenants.yaml", marker, marker + "    decisionLog:\n      waitFor: write\n"
    )
    assert {
        "area": "tenant",
        "subject": "acme",
        "detail": "decision log: answers enforcer default → wait for the write",
        "effect": "widens",
    } in changes


def test_author_cannot_lift_a_tenants_anomaly_hold_by_dropping_its_action_alone(
    stack: Environment,
) -> None:
    """Without its onAnomaly action, a held tenant spends on costly models again as if
    nothing were found: a weaker budget control, so a second person must agree."""
    action = "      onAnomaly:\n        lowerSoftCapToPercent: 50\n"
    action += "        holdModelsAboveUsdPerMtok: 5\n"
    changes = published_alone(stack, "tenants.yaml", action, "")
    found = [(c["area"], c["subject"], c["effect"]) for c in changes]
    assert found.count(("budget", "stark", "widens")) == 2, changes


def test_author_cannot_send_a_providers_prompts_in_the_clear_by_turning_off_its_tls_alone(
    stack: Environment,
) -> None:
    """Same endpoints, ``tls: false``: every prompt to that provider would leave Envoy in
    plaintext. The semantic diff names it as a widening, so a second person must agree."""
    changes = published_alone(
        stack,
        "providers.yaml",
        "anthropic.example, port: 443}",
        "anthropic.example, port: 443, tls: false}",
        count=-1,
    )
    turned = [
        c for c in changes
        if (c["area"], c["subject"], c["effect"]) == ("provider", "anthropic", "widens")
    ]  # fmt: skip
    assert len(turned) == 2 and all("TLS turned off" in c["detail"] for c in turned), turned


@pytest.mark.parametrize("smuggled", ["bundle/.manifest", "policy/.manifest", "policy/data.json"])
def test_author_cannot_smuggle_a_manifest_revision(stack: Environment, smuggled: str) -> None:
    good = in_force(stack)
    count = revisions_stored(stack)
    files = read_archive(pack_sources(stack.build().bundle_dir), "sources")
    files[smuggled] = f'{{"revision": "{good}", "roots": ["nexus", "system/log", "x"]}}'.encode()
    with (
        ControlPlaneClient(stack.url, stack.tokens["author"]) as api,
        pytest.raises(ApiCallError) as refused,
    ):
        api.publish(write_archive(files))
    assert refused.value.status == 422
    assert smuggled in refused.value.message
    assert revisions_stored(stack) == count


def test_a_built_archive_claiming_the_revision_in_force_is_not_accepted(
    stack: Environment,
) -> None:
    good = in_force(stack)
    count = revisions_stored(stack)
    served = served_archive(stack).content
    forged = stack.workdir / "forged.tar.gz"
    source = stack.workdir / "served.tar.gz"
    source.write_bytes(served)
    rewrite_archive(
        source,
        forged,
        {"nexus/envoy/authz.rego": b'package nexus.envoy.authz\n\ndecision := {"allowed": true}\n'},
    )
    with (
        ControlPlaneClient(stack.url, stack.tokens["author"]) as api,
        pytest.raises(ApiCallError) as refused,
    ):
        api.publish(forged.read_bytes())
    assert refused.value.status == 422 and "not a sources archive" in refused.value.message
    with pytest.raises(BuildError, match="claims revision"):
        read_bundle_bytes(forged.read_bytes())
    assert read_bundle_bytes(served).manifest["revision"] == good, "what OPA runs is its content"
    changed = stack.build(
        **{
            "retention.yaml": (REPO / "bundles/gateway/retention.yaml")
            .read_text()
            .replace("days: 365", "days: 364", 1)
        }
    )
    with (
        ControlPlaneClient(stack.url, stack.tokens["author"]) as api,
        pytest.raises(ApiCallError) as mismatch,
    ):
        api.publish(changed.pack(), expected_revision=good)
    assert mismatch.value.status == 422 and "computed from the content" in mismatch.value.message
    assert revisions_stored(stack) == count
    assert MANIFEST_FILE not in read_archive(changed.pack(), "sources")
