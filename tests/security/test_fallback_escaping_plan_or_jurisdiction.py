"""An author adds a fallback that would move a tenant's traffic outside its plan or its
jurisdiction, or a failover list that crosses into another jurisdiction: the publication is
refused (422, file:line), and the policy in force is unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from nexus_control.access.signing_keys import KeyPaths
from nexus_control.access.tokens import Role, create_token
from nexus_control.api.app import create_app
from nexus_control.authoring.opa import Opa
from nexus_control.authoring.sources import pack_sources
from nexus_control.plane import ControlPlane
from tests.conftest import BundleFactory
from tests.fixtures.planes import database_url_for, plane_on

pytestmark = pytest.mark.opa

SOURCES_TYPE = {"content-type": "application/vnd.nexus.sources+gzip"}


@pytest.fixture(params=["sqlite"])
def plane(
    request: pytest.FixtureRequest, tmp_path: Path, session_keys: KeyPaths, opa: Opa
) -> Iterator[ControlPlane]:
    with plane_on(database_url_for(request, tmp_path), session_keys, opa) as control:
        yield control


@pytest.fixture
def author(plane: ControlPlane) -> str:
    with plane.db.session() as session:
        token, _ = create_token(session, name="mallory", role=Role.AUTHOR)
    return token


def publish(plane: ControlPlane, author: str, bundle: Path) -> tuple[int, str]:
    with TestClient(create_app(plane)) as client:
        answer = client.post(
            "/v1/bundles",
            content=pack_sources(bundle),
            headers={"authorization": f"Bearer {author}", **SOURCES_TYPE},
        )
    return answer.status_code, answer.text


def test_a_fallback_into_a_model_no_plan_of_the_primary_has_is_refused(
    plane: ControlPlane, author: str, make_bundle: BundleFactory
) -> None:
    root = make_bundle()
    models = (root / "models.yaml").read_text()
    # A free-only model falling back to gpt-4.1 (enterprise only): free traffic routed
    # onto a model no free tenant may use.
    models = models.replace(
        "    plans: [free, team, enterprise]\n    price: {inputUsdPerMtok: 0.15",
        "    plans: [free]\n    fallbacks: [gpt-4.1]\n    price: {inputUsdPerMtok: 0.15",
    )
    (root / "models.yaml").write_text(models)
    status, text = publish(plane, author, root)
    assert status == 422, text
    assert "fallback 'gpt-4.1' is in no plan that includes 'gpt-4o-mini'" in text
    assert "models.yaml:" in text
    assert plane.rollouts.recent(1, diff=False) == []


def test_a_failover_list_into_another_jurisdiction_is_refused(
    plane: ControlPlane, author: str, make_bundle: BundleFactory
) -> None:
    root = make_bundle()
    regions = (root / "regions.yaml").read_text()
    (root / "regions.yaml").write_text(
        regions.replace("regions: [eu-west-1, eu-central-1]", "regions: [eu-west-1, us-east-1]")
    )
    status, text = publish(plane, author, root)
    assert status == 422, text
    assert "region 'us-east-1' is in jurisdiction 'us', not 'eu'" in text
    assert "regions.yaml:" in text
    assert plane.rollouts.recent(1, diff=False) == []


def test_a_fallback_served_only_in_another_jurisdiction_is_refused(
    plane: ControlPlane, author: str, make_bundle: BundleFactory
) -> None:
    root = make_bundle()
    providers = (root / "providers.yaml").read_text()
    # anthropic now only in the US; a new EU-only provider's model falls back to claude.
    providers = (
        providers.replace(
            "      - {region: eu-central-1, host: eu-central-1.anthropic.example, port: 443}\n", ""
        )
        + "  - id: eu-only\n    endpoints:\n"
        + "      - {region: eu-west-1, host: eu.example, port: 443}\n"
    )
    (root / "providers.yaml").write_text(providers)
    models = (root / "models.yaml").read_text() + (
        "  - id: eu-model\n    provider: eu-only\n    plans: [team]\n"
        "    maxOutputTokens: 1000\n    fallbacks: [claude-sonnet-4]\n"
    )
    (root / "models.yaml").write_text(models)
    status, text = publish(plane, author, root)
    assert status == 422, text
    assert "would leave the tenant's jurisdiction" in text
    assert plane.rollouts.recent(1, diff=False) == []
