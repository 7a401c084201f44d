"""Property tests: generated proofs verify, and any tampering makes verification raise.

A changed *size* is the one nuance: RFC 9162 roots do not commit to the tree
size, so a proof still verifies under another size that calls for a proof of
the same shape (see test_audit_merkle). Verification must fail whenever the
changed size calls for a different proof length, and a changed old size or
index must always fail.
"""

from __future__ import annotations

from functools import cache

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from nexus_audit import merkle
from nexus_audit.merkle import (
    IndexOutOfRangeError,
    InMemoryTree,
    MerkleError,
    ProofLengthError,
    RootMismatchError,
)

_MAX_SIZE = 300
_SETTINGS = settings(max_examples=200, deadline=None)


@cache
def _tree(size: int) -> InMemoryTree:
    return InMemoryTree.from_entries(index.to_bytes(2, "big") for index in range(size))


@cache
def _root(size: int) -> bytes:
    return merkle.root_hash(size, _tree(size).subtree_hash)


def _flip_bit(value: bytes, bit: int) -> bytes:
    bit %= len(value) * 8
    flipped = bytearray(value)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


@st.composite
def _leaf_in_tree(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(1, _MAX_SIZE))
    return draw(st.integers(0, size - 1)), size


@st.composite
def _tree_pair(draw: st.DrawFn) -> tuple[int, int]:
    new = draw(st.integers(1, _MAX_SIZE))
    return draw(st.integers(0, new)), new


@st.composite
def _growing_tree_pair(draw: st.DrawFn) -> tuple[int, int]:
    new = draw(st.integers(2, _MAX_SIZE))
    return draw(st.integers(1, new - 1)), new


def _inclusion(index: int, size: int) -> tuple[bytes, tuple[bytes, ...]]:
    tree = _tree(size)
    return tree.leaf_hashes[index], merkle.inclusion_proof(index, size, tree.subtree_hash)


def _consistency(old: int, new: int) -> tuple[bytes, ...]:
    return merkle.consistency_proof(old, new, _tree(new).subtree_hash)


@_SETTINGS
@given(_leaf_in_tree())
def test_every_generated_inclusion_proof_verifies(leaf: tuple[int, int]) -> None:
    index, size = leaf
    leaf_hash, proof = _inclusion(index, size)

    merkle.verify_inclusion(leaf_hash, index, size, proof, _root(size))


@_SETTINGS
@given(_leaf_in_tree(), st.integers(min_value=0), st.integers(min_value=0))
def test_altered_inclusion_proof_hash_fails_verification(
    leaf: tuple[int, int], position: int, bit: int
) -> None:
    index, size = leaf
    leaf_hash, proof = _inclusion(index, size)
    assume(proof)
    position %= len(proof)
    altered = (*proof[:position], _flip_bit(proof[position], bit), *proof[position + 1 :])

    with pytest.raises(RootMismatchError):
        merkle.verify_inclusion(leaf_hash, index, size, altered, _root(size))


@_SETTINGS
@given(_leaf_in_tree(), st.integers(min_value=0))
def test_altered_leaf_hash_fails_inclusion_verification(leaf: tuple[int, int], bit: int) -> None:
    index, size = leaf
    leaf_hash, proof = _inclusion(index, size)

    with pytest.raises(RootMismatchError):
        merkle.verify_inclusion(_flip_bit(leaf_hash, bit), index, size, proof, _root(size))


@_SETTINGS
@given(_leaf_in_tree(), st.integers(min_value=0))
def test_altered_root_fails_inclusion_verification(leaf: tuple[int, int], bit: int) -> None:
    index, size = leaf
    leaf_hash, proof = _inclusion(index, size)

    with pytest.raises(RootMismatchError):
        merkle.verify_inclusion(leaf_hash, index, size, proof, _flip_bit(_root(size), bit))


@_SETTINGS
@given(_leaf_in_tree(), st.integers(-_MAX_SIZE, _MAX_SIZE))
def test_changed_index_fails_inclusion_verification(leaf: tuple[int, int], other: int) -> None:
    index, size = leaf
    assume(other != index)
    leaf_hash, proof = _inclusion(index, size)

    with pytest.raises(MerkleError):
        merkle.verify_inclusion(leaf_hash, other, size, proof, _root(size))


@_SETTINGS
@given(_leaf_in_tree(), st.integers(1, _MAX_SIZE))
def test_changed_size_fails_inclusion_verification_when_the_proof_shape_differs(
    leaf: tuple[int, int], other: int
) -> None:
    index, size = leaf
    leaf_hash, proof = _inclusion(index, size)
    if index >= other:
        with pytest.raises(IndexOutOfRangeError):
            merkle.verify_inclusion(leaf_hash, index, other, proof, _root(size))
        return
    assume(len(_inclusion(index, other)[1]) != len(proof))

    with pytest.raises(ProofLengthError):
        merkle.verify_inclusion(leaf_hash, index, other, proof, _root(size))


@_SETTINGS
@given(_leaf_in_tree(), st.booleans())
def test_truncated_or_extended_inclusion_proof_fails_verification(
    leaf: tuple[int, int], extend: bool
) -> None:
    index, size = leaf
    leaf_hash, proof = _inclusion(index, size)
    assume(extend or proof)
    altered = (*proof, leaf_hash) if extend else proof[:-1]

    with pytest.raises(ProofLengthError):
        merkle.verify_inclusion(leaf_hash, index, size, altered, _root(size))


@_SETTINGS
@given(_tree_pair())
def test_every_generated_consistency_proof_verifies(sizes: tuple[int, int]) -> None:
    old, new = sizes

    merkle.verify_consistency(old, new, _consistency(old, new), _root(old), _root(new))


@_SETTINGS
@given(_growing_tree_pair(), st.integers(min_value=0), st.integers(min_value=0))
def test_altered_consistency_proof_hash_fails_verification(
    sizes: tuple[int, int], position: int, bit: int
) -> None:
    old, new = sizes
    proof = _consistency(old, new)
    position %= len(proof)
    altered = (*proof[:position], _flip_bit(proof[position], bit), *proof[position + 1 :])

    with pytest.raises(RootMismatchError):
        merkle.verify_consistency(old, new, altered, _root(old), _root(new))


@_SETTINGS
@given(_tree_pair(), st.integers(min_value=0), st.booleans())
def test_altered_root_fails_consistency_verification(
    sizes: tuple[int, int], bit: int, alter_old: bool
) -> None:
    old, new = sizes
    old_root, new_root = _root(old), _root(new)
    if alter_old:
        old_root = _flip_bit(old_root, bit)
    else:
        assume(old != 0)
        new_root = _flip_bit(new_root, bit)

    with pytest.raises(RootMismatchError):
        merkle.verify_consistency(old, new, _consistency(old, new), old_root, new_root)


@_SETTINGS
@given(_tree_pair(), st.integers(0, _MAX_SIZE))
def test_changed_old_size_fails_consistency_verification(
    sizes: tuple[int, int], other: int
) -> None:
    old, new = sizes
    other %= new + 1
    assume(other != old)

    with pytest.raises(MerkleError):
        merkle.verify_consistency(other, new, _consistency(old, new), _root(old), _root(new))


@_SETTINGS
@given(_tree_pair(), st.integers(1, _MAX_SIZE))
def test_changed_new_size_fails_consistency_verification_when_the_proof_shape_differs(
    sizes: tuple[int, int], other: int
) -> None:
    old, new = sizes
    proof = _consistency(old, new)
    assume(other != new and other >= old)
    assume(len(_consistency(old, other)) != len(proof))

    with pytest.raises(ProofLengthError):
        merkle.verify_consistency(old, other, proof, _root(old), _root(new))
