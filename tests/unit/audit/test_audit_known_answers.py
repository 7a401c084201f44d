"""Known answers: the RFC 9162 8-leaf test tree and the C2SP / Go signed-note examples.

Reads only tests/data/merkle-and-notes.json (a copy of the shared vectors).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nexus_audit import merkle
from nexus_audit.note import (
    InvalidSignatureError,
    Signer,
    Verifier,
    key_id,
    open_note,
    sign_note,
)

_VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parents[2] / "data" / "merkle-and-notes.json").read_text(encoding="utf-8")
)
_TREE = merkle.InMemoryTree.from_entries(bytes.fromhex(leaf) for leaf in _VECTORS["leaves_hex"])
_ROOTS = {int(size): bytes.fromhex(root) for size, root in _VECTORS["roots"].items()}
_NOTES: dict[str, dict[str, str]] = {
    name: example for name, example in _VECTORS["signed_note"].items() if isinstance(example, dict)
}


def _hashes(hex_hashes: list[str]) -> tuple[bytes, ...]:
    return tuple(bytes.fromhex(value) for value in hex_hashes)


def test_vectors_cover_every_proof_up_to_size_8() -> None:
    assert sorted(_ROOTS) == list(range(9))
    assert sorted((v["size"], v["index"]) for v in _VECTORS["inclusion"]) == [
        (size, index) for size in range(1, 9) for index in range(size)
    ]
    assert sorted((v["size1"], v["size2"]) for v in _VECTORS["consistency"]) == [
        (old, new) for old in range(1, 9) for new in range(old, 9)
    ]
    assert set(_NOTES) == {"c2sp_example", "go_note_example"}


@pytest.mark.parametrize("size", sorted(_ROOTS), ids=lambda size: f"size={size}")
def test_root_matches_known_answer(size: int) -> None:
    assert merkle.root_hash(size, _TREE.subtree_hash) == _ROOTS[size]


@pytest.mark.parametrize(
    "vector", _VECTORS["inclusion"], ids=lambda v: f"index={v['index']}-size={v['size']}"
)
def test_inclusion_proof_matches_known_answer_and_verifies(vector: dict[str, Any]) -> None:
    index, size = vector["index"], vector["size"]
    leaf_hash = bytes.fromhex(vector["leaf_hash"])
    expected = _hashes(vector["proof"])

    assert _TREE.leaf_hashes[index] == leaf_hash
    assert merkle.inclusion_proof(index, size, _TREE.subtree_hash) == expected
    merkle.verify_inclusion(leaf_hash, index, size, expected, _ROOTS[size])


@pytest.mark.parametrize(
    "vector", _VECTORS["consistency"], ids=lambda v: f"old={v['size1']}-new={v['size2']}"
)
def test_consistency_proof_matches_known_answer_and_verifies(vector: dict[str, Any]) -> None:
    old, new = vector["size1"], vector["size2"]
    expected = _hashes(vector["proof"])

    assert merkle.consistency_proof(old, new, _TREE.subtree_hash) == expected
    merkle.verify_consistency(old, new, expected, _ROOTS[old], _ROOTS[new])


@pytest.mark.parametrize("new", range(9), ids=lambda new: f"new={new}")
def test_consistency_from_the_empty_known_tree_is_the_empty_proof(new: int) -> None:
    assert merkle.consistency_proof(0, new, _TREE.subtree_hash) == ()
    merkle.verify_consistency(0, new, (), _ROOTS[0], _ROOTS[new])


@pytest.mark.parametrize("name", sorted(_NOTES))
def test_known_note_verifies_under_its_public_key(name: str) -> None:
    example = _NOTES[name]
    verifier = Verifier.parse(example["vkey"])

    opened = open_note(example["note"], [verifier])

    assert [signature.name for signature in opened.signatures] == [verifier.name]
    assert opened.unverified == ()
    assert example["note"].startswith(opened.text + "\n\u2014 ")


@pytest.mark.parametrize("name", sorted(_NOTES))
def test_known_key_id_is_reproduced_from_name_and_key(name: str) -> None:
    vkey = _NOTES[name]["vkey"]
    verifier = Verifier.parse(vkey)

    assert key_id(verifier.name, verifier.public_key).hex() == vkey.split("+")[1]
    assert str(verifier) == vkey


@pytest.mark.parametrize("name", sorted(_NOTES))
def test_known_note_with_altered_text_fails_verification(name: str) -> None:
    example = _NOTES[name]
    altered = example["note"].replace(" ", "  ", 1)
    signature_line = altered.index("\u2014")
    line_number = altered.count("\n", 0, signature_line) + 1

    with pytest.raises(InvalidSignatureError, match=f"line {line_number}: "):
        open_note(altered, [Verifier.parse(example["vkey"])])


def test_known_private_key_reproduces_the_exact_signature() -> None:
    example = _NOTES["go_note_example"]
    signer = Signer.parse(example["skey"])
    text = example["note"][: example["note"].rindex("\n\n") + 1]

    assert signer.verifier == Verifier.parse(example["vkey"])
    assert signer.private_key_string() == example["skey"]
    assert sign_note(text, signer) == example["note"]
