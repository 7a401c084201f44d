"""Every route of the OpenAPI document refuses a missing token (401) and a wrong role (403).

Table-driven from the document itself: a route added later is covered the
moment it is published in the OpenAPI document.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nexus_control.access.signing_keys import KeyPaths
from nexus_control.access.tokens import Role, create_token
from nexus_control.api.app import create_app, create_control_plane
from nexus_control.authoring.opa import Opa
from nexus_control.settings import ControlSettings
from tests.conftest import TEST_KEY_ID
from tests.fixtures.environment import scope


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, session_keys: KeyPaths, opa: Opa
) -> Iterator[tuple[TestClient, dict[str, str], dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("auth")
    plane = create_control_plane(
        ControlSettings(
            database_url=f"sqlite:///{tmp / 'cp.db'}",
            signing_key_file=session_keys.signing,
            signing_key_id=TEST_KEY_ID,
            approval_key_file=session_keys.approval,
        ),
        opa=opa,
    )
    tokens = {}
    with plane.db.session() as session:
        for role in Role:
            binding = (
                {"region": "eu-west-1", "enforcer_id": "eu-west-1-a"}
                if role is Role.ENFORCER
                else {}
            )
            tokens[role.value], _ = create_token(
                session, name=role.value, role=role, tenants=scope(role), **binding
            )
    app = create_app(plane)
    with TestClient(app) as client:
        yield client, tokens, app.openapi()
    plane.close()


def operations() -> list[tuple[str, str]]:
    """(method, path) of every documented operation, read from a throwaway app."""
    import tempfile

    from nexus_control.access.signing_keys import init_keys

    tmp = Path(tempfile.mkdtemp())
    keys = init_keys(tmp / "keys")
    plane = create_control_plane(
        ControlSettings(
            database_url=f"sqlite:///{tmp / 'cp.db'}",
            signing_key_file=keys.signing,
            approval_key_file=keys.approval,
        )
    )
    document = create_app(plane).openapi()
    plane.close()
    return [
        (method.upper(), path)
        for path, ops in sorted(document["paths"].items())
        for method in sorted(ops)
    ]


OPERATIONS = operations()


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda m: "eu-west-1" if "region" in m.group() else "1", path)


def test_the_document_is_not_empty_and_every_route_names_its_roles(
    setup: tuple[TestClient, dict[str, str], dict[str, Any]],
) -> None:
    _, _, document = setup
    assert len(OPERATIONS) >= 15
    for method, path in OPERATIONS:
        operation = document["paths"][path][method.lower()]
        assert operation["security"] == [{"bearer": []}], f"{method} {path}"
        assert operation["x-nexus-roles"], f"{method} {path} admits no role"


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_missing_token_is_401(
    setup: tuple[TestClient, dict[str, str], dict[str, Any]], method: str, path: str
) -> None:
    client, _, _ = setup
    response = client.request(method, concrete(path), json={})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    garbage = client.request(
        method, concrete(path), json={}, headers={"authorization": "Bearer nope"}
    )
    assert garbage.status_code == 401


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_wrong_role_is_403(
    setup: tuple[TestClient, dict[str, str], dict[str, Any]], method: str, path: str
) -> None:
    client, tokens, document = setup
    allowed = set(document["paths"][path][method.lower()]["x-nexus-roles"])
    wrong = sorted(set(tokens) - allowed)
    assert wrong, f"{method} {path} admits every role"
    for role in wrong:
        response = client.request(
            method,
            concrete(path),
            json={},
            headers={"authorization": f"Bearer {tokens[role]}", "x-nexus-enforcer": "eu-west-1-a"},
        )
        assert response.status_code == 403, f"{role} on {method} {path}: {response.status_code}"
        assert response.json()["error"]["code"] == "forbidden"
