"""Witnessing and tiles part by part: paths, cosignatures, policies, protocol, journal."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexus_audit import merkle
from nexus_audit.checkpoint import Checkpoint
from nexus_audit.cosignature import CosignatureError, Cosigner, CosignerKey, verified_cosignatures
from nexus_audit.journal import CheckpointJournal
from nexus_audit.merkle import EMPTY_ROOT, InMemoryTree
from nexus_audit.note import MalformedKeyError
from nexus_audit.policy import PolicyError, QuorumNotMetError, TlogPolicy
from nexus_audit.storage import NewLeaf
from nexus_audit.tiles import Tile, TileHasher, TilePathError, encode_index, parse_tile_path
from nexus_audit.witness.protocol import AddCheckpoint, WitnessProtocolError, parse_size_body
from nexus_audit.witness.service import (
    BadRequestError,
    ForkError,
    InvalidProofError,
    NoValidSignatureError,
    StaleSizeError,
    UnknownLogError,
    Witness,
)
from nexus_audit.witness.state import WitnessStore
from tests.unit.audit.harness import LOG_KEY


@pytest.mark.parametrize(
    ("path", "tile"),
    [
        ("tile/0/000", Tile(0, 0)),
        ("tile/0/x001/x234/067", Tile(0, 1234067)),
        ("tile/2/001.p/17", Tile(2, 1, 17)),
        ("tile/entries/x001/000.p/255", Tile(None, 1000, 255)),
    ],
)
def test_tile_paths_follow_the_c2sp_encoding(path: str, tile: Tile) -> None:
    assert parse_tile_path(path) == tile
    assert tile.path == path
    assert encode_index(1234067) == "x001/x234/067"


@pytest.mark.parametrize(
    "path",
    [
        "tile/64/000",
        "tile/0/1",
        "tile/0/x000/001",
        "tile/0/000.p/0",
        "tile/0/000.p/256",
        "tile/01/000",
        "x/0/000",
    ],
)
def test_malformed_tile_paths_are_refused(path: str) -> None:
    with pytest.raises(TilePathError):
        parse_tile_path(path)


@pytest.mark.parametrize("size", [1, 255, 256, 257, 70_000 // 100, 1000])
def test_proofs_from_tiles_equal_proofs_from_the_tree(size: int) -> None:
    tree = InMemoryTree.from_entries(str(i).encode() for i in range(size))

    def fetch(tile: Tile) -> bytes:
        span = 1 << tile.tree_level
        first = tile.index * 256
        return b"".join(
            tree.subtree_hash((first + i) * span, (first + i + 1) * span) for i in range(tile.width)
        )

    hasher = TileHasher(fetch, size)
    assert merkle.root_hash(size, hasher) == merkle.root_hash(size, tree.subtree_hash)
    for index in {0, size // 2, size - 1}:
        assert merkle.inclusion_proof(index, size, hasher) == merkle.inclusion_proof(
            index, size, tree.subtree_hash
        )


def test_a_cosignature_verifies_only_over_the_note_it_signed() -> None:
    witness = Cosigner(name="witness.example/w1", seed=bytes(range(32)))
    assert CosignerKey.parse(str(witness.key)) == witness.key
    assert Cosigner.parse(witness.private_key_string()).key == witness.key
    note = Checkpoint(LOG_KEY.name, 0, EMPTY_ROOT).sign(LOG_KEY)
    text = note[: note.rindex("\n\n") + 1]
    line = witness.cosign(text, timestamp=1_700_000_000)
    found = verified_cosignatures(note + line, [witness.key])
    assert found["witness.example/w1"].timestamp == 1_700_000_000
    other = Checkpoint(LOG_KEY.name, 1, merkle.leaf_hash(b"x")).sign(LOG_KEY)
    with pytest.raises(CosignatureError):
        verified_cosignatures(other + line, [witness.key])
    with pytest.raises(MalformedKeyError, match="0x04"):
        CosignerKey.parse(str(LOG_KEY.verifier))


def test_a_policy_names_logs_witnesses_and_a_quorum() -> None:
    keys = [Cosigner.generate(f"w{n}.example/w").key for n in range(3)]
    text = (
        f"# ours\nlog {LOG_KEY.verifier}\n"
        + "".join(f"witness w{n} {key} http://127.0.0.1:1/\n" for n, key in enumerate(keys))
        + "group two 2 w0 w1 w2\nquorum two\n"
    )
    policy = TlogPolicy.parse(text)
    assert TlogPolicy.parse(policy.encode()) == policy
    assert policy.satisfied_by({"w0", "w2"}) and not policy.satisfied_by({"w1"})
    note = Checkpoint(LOG_KEY.name, 0, EMPTY_ROOT).sign(LOG_KEY)
    with pytest.raises(QuorumNotMetError):
        policy.verify(note)
    for bad, message in [
        ("quorum nobody\n", "not defined"),
        (f"log {LOG_KEY.verifier}\n", "no quorum"),
        ("group g 2 \nquorum g\n", "expected"),
        (f"witness a {keys[0]}\nwitness b {keys[0]}\nquorum a\n", "twice"),
        (f"witness a {keys[0]}\ngroup g 3 a\nquorum g\n", "between 1 and 1"),
    ]:
        with pytest.raises(PolicyError, match=message):
            TlogPolicy.parse(bad)


def test_the_add_checkpoint_body_round_trips_and_rejects_malformed_input() -> None:
    note = Checkpoint(LOG_KEY.name, 0, EMPTY_ROOT).sign(LOG_KEY)
    request = AddCheckpoint(3, (bytes(32), bytes(range(32))), note)
    assert AddCheckpoint.parse(request.encode()) == request
    assert parse_size_body(b"42\n") == 42
    for body in (b"old 01\n\n" + note.encode(), b"old 0\nAAAA\n\n" + note.encode(), b"old 1\n"):
        with pytest.raises(WitnessProtocolError):
            AddCheckpoint.parse(body)


def test_the_witness_checks_in_the_order_the_protocol_gives(tmp_path: Path) -> None:
    witness = Witness.following(
        Cosigner.generate("w.example/w"), [LOG_KEY.verifier], WitnessStore(tmp_path / "w.db")
    )
    tree = InMemoryTree.from_entries(str(i).encode() for i in range(8))

    def note(size: int) -> str:
        return Checkpoint(LOG_KEY.name, size, merkle.root_hash(size, tree.subtree_hash)).sign(
            LOG_KEY
        )

    assert witness.add_checkpoint(AddCheckpoint(0, (), note(3))).startswith("\u2014 w.example/w ")
    with pytest.raises(StaleSizeError) as stale:
        witness.add_checkpoint(AddCheckpoint(0, (), note(5)))
    assert stale.value.size == 3
    with pytest.raises(InvalidProofError):
        witness.add_checkpoint(AddCheckpoint(3, (bytes(32),), note(5)))
    with pytest.raises(BadRequestError):
        witness.add_checkpoint(AddCheckpoint(6, (), note(5)))
    proof = merkle.consistency_proof(3, 5, tree.subtree_hash)
    witness.add_checkpoint(AddCheckpoint(3, proof, note(5)))
    forked = Checkpoint(LOG_KEY.name, 5, merkle.leaf_hash(b"fork")).sign(LOG_KEY)
    with pytest.raises(ForkError):
        witness.add_checkpoint(AddCheckpoint(5, (), forked))
    stranger = Checkpoint("other.example/log", 0, EMPTY_ROOT).sign(
        type(LOG_KEY)("other.example/log", bytes(32))
    )
    with pytest.raises(UnknownLogError):
        witness.add_checkpoint(AddCheckpoint(0, (), stranger))
    unsigned = note(5).replace(LOG_KEY.name + " ", "someone.else ")
    with pytest.raises((NoValidSignatureError, UnknownLogError)):
        witness.add_checkpoint(AddCheckpoint(5, (), unsigned))
    assert witness.store.get(LOG_KEY.name).size == 5  # type: ignore[union-attr]


def test_the_journal_only_grows_and_survives_a_torn_last_line(tmp_path: Path) -> None:
    journal = CheckpointJournal(tmp_path / "j.jsonl")
    journal.append(1, "one\n")
    journal.append(2, "two\n")
    with journal.path.open("ab") as handle:
        handle.write(b'{"size": 3, "no')
    reopened = CheckpointJournal(journal.path)
    assert reopened.latest() == type(reopened.latest())(2, "two\n")  # type: ignore[misc]
    reopened.append(3, "three\n")
    assert [r.size for r in CheckpointJournal(journal.path).records()] == [1, 2, 3]


def test_an_entry_too_large_for_an_entry_bundle_is_refused() -> None:
    with pytest.raises(ValueError, match="65535"):
        NewLeaf(entry=b"x" * 65536, kind="event", time=None, event_id="e")  # type: ignore[arg-type]
