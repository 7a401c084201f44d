"""The stack an insider attacks: the control plane (SQLite or PostgreSQL) and a real enforcer.

One stack per storage per module: control plane on a thread over its
database, the example bundle published from sources and approved, and one
region of real OPA + Envoy enforcing it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from nexus_control.access.signing_keys import KeyPaths
from nexus_control.authoring.opa import Opa
from tests.fixtures.environment import Environment, credentials_overlay
from tests.fixtures.servers import PostgresServer


def _database(request: pytest.FixtureRequest, name: str, workdir: object) -> str:
    if request.param == "postgres":
        postgres: PostgresServer = request.getfixturevalue("postgres")
        database = f"sec_{uuid.uuid4().hex[:10]}"
        postgres.psql(f"CREATE DATABASE {database}")
        return postgres.url.rsplit("/", 1)[0] + f"/{database}"
    return f"sqlite:///{workdir}/{name}.db"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    opa: Opa,
    session_keys: KeyPaths,
) -> Iterator[Environment]:
    """A running stack on ``request.param`` storage, with the example bundle in force."""
    workdir = tmp_path_factory.mktemp(f"security-{request.param}")
    env = Environment(
        workdir=workdir,
        keys=session_keys,
        opa=opa,
        database_url=_database(request, "cp", workdir),
        plain=credentials_overlay(workdir / "credentials"),
    )
    try:
        env.start()
        yield env
    finally:
        env.stop()
