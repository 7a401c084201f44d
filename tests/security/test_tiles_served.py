"""What outsiders keep is served from either database: tiles that prove the signed tree."""

from __future__ import annotations

from datetime import timedelta

from nexus_audit import merkle
from nexus_audit.checkpoint import Checkpoint
from nexus_audit.tiles import Tile, TileHasher, split_entry_bundle
from tests.security.conftest import Api
from tests.unit.audit.harness import LOG_KEY
from tests.unit.audit.opa_events import T0, events, gzip_batch


def test_the_tiles_served_prove_the_signed_tree_on_either_database(api: Api) -> None:
    api.log.ingest_upload(gzip_batch(events(300, start=T0 + timedelta(seconds=1))), "gzip")
    api.log.checkpoint()
    note = api.get("/v1/audit/log/checkpoint", "author-token").text
    checkpoint = Checkpoint.open(note, LOG_KEY.verifier)

    def fetch(tile: Tile) -> bytes:
        response = api.get(f"/v1/audit/log/{tile.path}", "author-token")
        assert response.status_code == 200, response.text
        return response.content

    hasher = TileHasher(fetch, checkpoint.size)
    assert merkle.root_hash(checkpoint.size, hasher) == checkpoint.root_hash
    bundle = fetch(Tile(None, 1, checkpoint.size - 256))
    entries = list(split_entry_bundle(bundle))
    assert [merkle.leaf_hash(e) for e in entries] == [
        hasher(i, i + 1) for i in range(256, checkpoint.size)
    ]
