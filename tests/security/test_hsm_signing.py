"""The control plane signs through a PKCS#11 token, and real enforcers verify what it signs.

The control plane runs with ``NEXUS_KEY_PROVIDER=pkcs11`` on a SoftHSM2
token: its bundle and approval keys are made on the token, every policy
bundle, state bundle and tool approval is signed there, a real OPA + Envoy
enforcer activates and honours them, and no private key is anywhere the
control plane writes (database, keys directory).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from nexus_cli.client import ControlPlaneClient
from nexus_control.access.keyring import KeyPurpose
from nexus_control.access.signing_keys import KeyPaths
from nexus_control.authoring.opa import Opa
from nexus_control.settings import ControlSettings
from nexus_control.store.tables import BundleRevision, KeyRecord, StateBundle
from nexus_dataplane.process import http_ok
from nexus_runtime.keys.algorithms import Algorithm
from tests.fixtures.environment import REPO, Environment, credentials_overlay, eventually
from tests.fixtures.softhsm import SoftHsm

pytestmark = [pytest.mark.opa, pytest.mark.envoy, pytest.mark.softhsm]

ARGUMENTS = {"database": "billing", "statement": "SELECT 1"}


class HsmEnvironment(Environment):
    token: SoftHsm | None = None

    @property
    def settings(self) -> ControlSettings:
        assert self.token is not None
        return super().settings.model_copy(
            update={
                "key_provider": "pkcs11",
                "pkcs11_module": self.token.module,
                "pkcs11_token_label": self.token.token_label,
                "pkcs11_pin_file": self.token.pin_file,
                "signing_key_file": None,
                "approval_key_file": None,
                "signing_algorithm": Algorithm.PS256,
            }
        )


@pytest.fixture(scope="module")
def hsm_env(
    tmp_path_factory: pytest.TempPathFactory, opa: Opa, session_keys: KeyPaths, softhsm: SoftHsm
) -> Iterator[HsmEnvironment]:
    workdir = tmp_path_factory.mktemp("hsm")
    env = HsmEnvironment(
        workdir=workdir,
        keys=session_keys,
        opa=opa,
        database_url=f"sqlite:///{workdir / 'cp.db'}",
        plain=credentials_overlay(workdir / "credentials"),
    )
    env.token = softhsm
    try:
        env.start()
        yield env
    finally:
        env.stop()


def test_bundles_signed_on_the_token_are_verified_by_a_real_enforcer(
    hsm_env: HsmEnvironment,
) -> None:
    assert hsm_env.plane is not None and hsm_env.stack is not None
    (bundle_key,) = hsm_env.plane.keyring.trusted(KeyPurpose.BUNDLE)
    assert bundle_key.algorithm.value == "PS256"
    enforcer = hsm_env.stack.enforcers[0]
    assert http_ok(f"{enforcer.opa_url}/health?bundles"), "policy and state bundles activated"
    with hsm_env.plane.db.session() as session:
        signed = [r.signed_by for r in session.scalars(select(BundleRevision))]
        state = session.get(StateBundle, "nexus-state")
    assert signed and set(signed) == {bundle_key.kid}
    assert state is not None

    shorter = (
        (REPO / "bundles/gateway/retention.yaml").read_text().replace("days: 365", "days: 360", 1)
    )
    revision = hsm_env.publish(hsm_env.build(**{"retention.yaml": shorter}))
    eventually(
        lambda: hsm_env.fleet()["enforcers"][0]["bundles"]["nexus"]["active_revision"] == revision,
        30,
    )


def test_approvals_signed_on_the_token_are_honoured(hsm_env: HsmEnvironment) -> None:
    with ControlPlaneClient(hsm_env.url, hsm_env.tokens["approver"]) as api:
        issued = api.post(
            "/v1/approvals/tools",
            {
                "tenant": "acme",
                "tool": "db-write",
                "arguments": ARGUMENTS,
                "subject": "apikey:acme-agent",
                "ttl_seconds": 60,
            },
        )
    call = hsm_env.call(
        "acme-agent",
        "acme",
        "POST",
        "/v1/tools/db-write:invoke",
        body={"arguments": ARGUMENTS},
        headers={"x-nexus-approval": issued["token"]},
    )
    assert call.status_code == 200, call.text


def test_no_private_key_is_where_the_control_plane_writes(hsm_env: HsmEnvironment) -> None:
    assert hsm_env.plane is not None
    with hsm_env.plane.db.session() as session:
        rows = list(session.scalars(select(KeyRecord)))
    assert {r.provider for r in rows} == {"pkcs11"}
    assert all("PRIVATE" not in r.public_pem for r in rows)
    keys_dir = hsm_env.settings.keys_dir
    assert not keys_dir.exists() or not any(keys_dir.rglob("*.pem"))
    database = (hsm_env.workdir / "cp.db").read_bytes()
    assert b"PRIVATE KEY" not in database
