"""Shared fixtures: the repository's paths, signing keys, and the real servers.

Fixtures that start real processes (OPA, Envoy, PostgreSQL, Redis) bind
free loopback ports and stop their process when the test (or session) ends.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nexus_control.access.signing_keys import KeyPaths, init_keys, load_signing_key, public_pem
from nexus_control.authoring.bundle import BuildOptions, BuiltBundle, build_bundle
from nexus_control.authoring.opa import Opa
from nexus_runtime.toolchain import find_opa
from tests.fixtures.servers import PostgresServer, RedisServer
from tests.fixtures.softhsm import SoftHsm, make_softhsm

# Session fixtures more than one test package shares (one stack each per session).
pytest_plugins = [
    "tests.fixtures.durable_stack",
    "tests.fixtures.planes",
    "tests.fixtures.ratelimit_stack",
    "tests.fixtures.provider_stack",
]

REPO = Path(__file__).resolve().parent.parent
GATEWAY = REPO / "bundles" / "gateway"
REGO = REPO / "rego"
DATA = Path(__file__).resolve().parent / "data"
TEST_KEY_ID = "test-bundle-key"


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def session_keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPaths:
    """One bundle-signing and approval key pair for the whole run."""
    return init_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def opa_bin() -> Path:
    return find_opa()


@pytest.fixture(scope="session")
def opa(opa_bin: Path) -> Opa:
    return Opa(opa_bin)


BundleFactory = Callable[..., Path]


@pytest.fixture
def make_bundle(tmp_path: Path) -> BundleFactory:
    """Copy bundles/gateway to a temporary directory, optionally rewriting files.

    ``make_bundle(**{"tenants.yaml": "..."})`` replaces a file's text;
    a value of None deletes the file. The copy's ``policy`` points at rego/.
    """
    counter = iter(range(1_000_000))

    def factory(**files: str | None) -> Path:
        target = tmp_path / f"bundle-{next(counter)}"
        shutil.copytree(GATEWAY, target)
        bundle_yaml = target / "bundle.yaml"
        bundle_yaml.write_text(
            bundle_yaml.read_text().replace("policy: ../../rego", f"policy: {REGO}")
        )
        for name, text in files.items():
            path = target / name
            if text is None:
                path.unlink()
            else:
                path.write_text(text)
        return target

    return factory


@pytest.fixture(scope="session")
def built_gateway(
    tmp_path_factory: pytest.TempPathFactory, opa: Opa, session_keys: KeyPaths
) -> BuiltBundle:
    """bundles/gateway built and signed once for the session."""
    dist = tmp_path_factory.mktemp("dist")
    return build_bundle(
        GATEWAY,
        opa,
        BuildOptions(
            signing_key=session_keys.signing,
            key_id=TEST_KEY_ID,
            approval_jwks=session_keys.approval_jwks,
            dist_dir=dist,
        ),
    )


@pytest.fixture(scope="session")
def signing_public_pem(tmp_path_factory: pytest.TempPathFactory, session_keys: KeyPaths) -> Path:
    path = tmp_path_factory.mktemp("pub") / "bundle-signing.pub.pem"
    path.write_text(public_pem(load_signing_key(session_keys.signing)))
    return path


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL for the session; tests that need isolation use ``pg_url``."""
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """A fresh, empty database on the session's PostgreSQL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    postgres.psql(f"CREATE DATABASE {name}")
    return postgres.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def audit_pg_url(postgres: PostgresServer) -> str:
    """A second fresh database on the session's PostgreSQL, for an audit log beside ``pg_url``."""
    name = f"a_{uuid.uuid4().hex[:12]}"
    postgres.psql(f"CREATE DATABASE {name}")
    return postgres.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def softhsm() -> Iterator[SoftHsm]:
    """One SoftHSM2 token for the session (its own SOFTHSM2_CONF and token directory)."""
    token = make_softhsm()
    try:
        yield token
    finally:
        token.remove()
