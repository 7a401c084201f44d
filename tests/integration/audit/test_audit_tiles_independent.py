"""The log as C2SP tlog-tiles, judged by golang.org/x/mod/sumdb/tlog (tests/tlogverify).

The audit API runs on a real server; the Go program fetches the checkpoint,
checks its signature, reads tiles through ``tlog.TileHashReader`` (which checks
each tile against the signed root), proves random leaves from their entry
bundles, and checks inclusion and consistency proofs the log produced.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import random
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from nexus_audit import merkle
from nexus_audit.service import AuditLog
from nexus_audit.tiles import TILE_WIDTH, TileHasher, parse_tile_path
from nexus_dataplane.process import free_port
from nexus_runtime.server import ServerThread
from tests.fixtures.gotools import tlogverify_binary
from tests.unit.audit.audit_app import create_app
from tests.unit.audit.harness import LOG_KEY
from tests.unit.audit.opa_events import T0, events, gzip_batch

TOKEN = "compliance-token"
LEAVES = 4 * TILE_WIDTH + 37


@pytest.fixture
def served(audit_log: AuditLog) -> Iterator[tuple[AuditLog, str]]:
    for start in range(0, LEAVES, 500):
        count = min(500, LEAVES - start)
        audit_log.ingest_upload(
            gzip_batch(events(count, start=T0 + timedelta(seconds=start))), "gzip"
        )
    audit_log.checkpoint()
    with ServerThread(create_app(audit_log), "127.0.0.1", free_port()) as server:
        yield audit_log, server.url


def _go(*args: str, stdin: str | None = None) -> dict[str, object]:
    out = subprocess.run(
        [str(tlogverify_binary()), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_an_independent_tlog_implementation_reads_and_proves_the_tiles(
    served: tuple[AuditLog, str],
) -> None:
    _, url = served
    result = _go(
        "tiles", "-url", f"{url}/v1/audit/log", "-key", str(LOG_KEY.verifier),
        "-token", TOKEN, "-sample", "1000",
    )  # fmt: skip
    assert result["size"] == LEAVES
    assert result["inclusion_checked"] == 1000


def test_an_independent_tlog_implementation_checks_1000_inclusion_and_10_consistency_proofs(
    served: tuple[AuditLog, str],
) -> None:
    log, _ = served
    checkpoints = [log.checkpoint_signer.latest()]
    for round_number in range(10):
        log.ingest_upload(
            gzip_batch(
                events(7 + round_number, start=T0 + timedelta(days=1, minutes=round_number))
            ),
            "gzip",
        )
        checkpoints.append(log.checkpoint())
    rng = random.Random(7)
    latest = checkpoints[-1]
    assert latest is not None
    inclusion = []
    for index in rng.sample(range(latest.size), 1000):
        proof = log.inclusion_proof(index=index)
        inclusion.append(
            {
                "checkpoint": proof.checkpoint,
                "index": index,
                "entry": base64.b64encode(log.leaf(index=index).entry).decode(),
                "proof": [base64.b64encode(h).decode() for h in proof.hashes],
            }
        )
    consistency = []
    for old, new in itertools.pairwise(checkpoints):
        assert old is not None and new is not None
        proof = log.consistency_proof(old.size, new.size)
        consistency.append(
            {
                "old": old.note,
                "new": new.note,
                "proof": [base64.b64encode(h).decode() for h in proof.hashes],
            }
        )
    stdin = json.dumps({"inclusion": inclusion, "consistency": consistency})
    result = _go("proofs", "-key", str(LOG_KEY.verifier), stdin=stdin)
    assert (result["inclusion_checked"], result["consistency_checked"]) == (1000, 10)

    broken = json.loads(stdin)
    broken["consistency"][3]["proof"][0] = base64.b64encode(bytes(32)).decode()
    out = subprocess.run(
        [str(tlogverify_binary()), "proofs", "-key", str(LOG_KEY.verifier)],
        input=json.dumps(broken), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 1 and "consistency 3" in out.stderr


def test_proofs_computed_from_the_served_tiles_match_the_logs_own(
    served: tuple[AuditLog, str],
) -> None:
    log, url = served
    headers = {"authorization": f"Bearer {TOKEN}"}
    checkpoint = httpx.get(f"{url}/v1/audit/log/checkpoint", headers=headers).text
    size = int(checkpoint.split("\n")[1])

    def fetch(tile: object) -> bytes:
        response = httpx.get(f"{url}/v1/audit/log/{tile.path}", headers=headers)  # type: ignore[attr-defined]
        assert response.status_code == 200, response.text
        assert "immutable" in response.headers["cache-control"]
        return response.content

    hasher = TileHasher(fetch, size)
    for index in (0, 255, 256, size - 1):
        from_tiles = merkle.inclusion_proof(index, size, hasher)
        assert from_tiles == log.inclusion_proof(index=index, size=size).hashes
    assert merkle.root_hash(size, hasher) == log.checkpoint().checkpoint.root_hash
    beyond = parse_tile_path(f"tile/0/{size // TILE_WIDTH + 1:03d}")
    assert httpx.get(f"{url}/v1/audit/log/{beyond.path}", headers=headers).status_code == 404


def test_the_go_verifier_is_gofmt_and_go_vet_clean() -> None:
    source = Path(__file__).resolve().parents[2] / "tlogverify"
    env = {**os.environ, "GOFLAGS": "-mod=readonly"}
    unformatted = subprocess.run(
        ["gofmt", "-l", "."], cwd=source, capture_output=True, text=True, check=True, env=env
    ).stdout
    assert unformatted == ""
    vet = subprocess.run(
        ["go", "vet", "./..."], cwd=source, capture_output=True, text=True, timeout=300, env=env
    )
    assert vet.returncode == 0, vet.stderr
