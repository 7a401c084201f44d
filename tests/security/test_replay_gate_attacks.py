"""An insider who wants a change judged safe on a bundle the enforcers would never run.

Replay is evidence for an approver: a candidate that is not what the
control plane signed (signatures stripped, or re-signed with the insider's
own key after editing the policy) must be refused with the reason, and
nothing recorded for it.
"""

from __future__ import annotations

import base64
from pathlib import Path

import httpx

from nexus_control.authoring.archive import read_archive, write_archive
from nexus_control.authoring.signatures import SIGNATURES_FILE, sign_bundle_files
from nexus_control.store import outbox
from nexus_runtime.keys.algorithms import Algorithm
from nexus_runtime.keys.files import FileKeyProvider
from tests.fixtures.environment import Environment


def _replay(stack: Environment, archive: bytes) -> httpx.Response:
    return httpx.post(
        f"{stack.url}/v1/replays",
        headers={"authorization": f"Bearer {stack.tokens['author']}"},
        json={"candidate_archive": base64.b64encode(archive).decode()},
        timeout=60,
    )


def _reported(stack: Environment) -> int:
    assert stack.plane is not None
    with stack.plane.db.session() as session:
        return len(outbox.events(session, "replay.reported"))


def _running_files(stack: Environment) -> dict[str, bytes]:
    assert stack.plane is not None
    revision = stack.plane.rollouts.base_revision()
    assert revision is not None
    return read_archive(stack.plane.registry.archive(revision), "running revision")


def _widen(files: dict[str, bytes]) -> None:
    """An edit to the policy the signature no longer covers."""
    module = sorted(name for name in files if name.endswith(".rego"))[0]
    files[module] += b"\n# widened by the insider\n"


def test_unsigned_candidate_is_refused_for_replay(stack: Environment) -> None:
    before = _reported(stack)
    files = _running_files(stack)
    files.pop(SIGNATURES_FILE)
    _widen(files)
    response = _replay(stack, write_archive(files))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_candidate"
    assert "no .signatures.json" in response.json()["error"]["message"]
    assert _reported(stack) == before


def test_candidate_signed_by_an_insiders_own_key_is_refused_for_replay(
    stack: Environment, tmp_path: Path
) -> None:
    before = _reported(stack)
    files = _running_files(stack)
    files.pop(SIGNATURES_FILE)
    _widen(files)
    key = FileKeyProvider(tmp_path).generate("insider.pem", Algorithm.RS256)
    files[SIGNATURES_FILE] = sign_bundle_files(files, key, "e2e-bundle-key")
    response = _replay(stack, write_archive(files))
    assert response.status_code == 422, response.text
    assert "refused for replay" in response.json()["error"]["message"]
    assert _reported(stack) == before


def test_a_candidate_that_is_not_an_archive_is_a_clear_error(stack: Environment) -> None:
    response = _replay(stack, b"not a tarball")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_candidate"
