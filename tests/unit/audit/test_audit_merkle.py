"""Merkle edge cases, error classes and the storage boundary of nexus_audit.merkle."""

from __future__ import annotations

import hashlib

import pytest

from nexus_audit import merkle
from nexus_audit.merkle import (
    EMPTY_ROOT,
    HashLengthError,
    IndexOutOfRangeError,
    InMemoryTree,
    InvalidTreeSizeError,
    MerkleError,
    ProofLengthError,
    RootMismatchError,
)

_TREE = InMemoryTree.from_entries(index.to_bytes(2, "big") for index in range(16))


def _root(size: int) -> bytes:
    return merkle.root_hash(size, _TREE.subtree_hash)


def test_empty_tree_root_is_sha256_of_the_empty_string() -> None:
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert _root(0) == EMPTY_ROOT


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    left, right = merkle.leaf_hash(b"a"), merkle.leaf_hash(b"b")

    assert left == hashlib.sha256(b"\x00a").digest()
    assert merkle.node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    assert merkle.leaf_hash(left + right) != merkle.node_hash(left, right)


def test_inclusion_in_the_empty_tree_is_refused() -> None:
    with pytest.raises(IndexOutOfRangeError, match="empty tree"):
        merkle.inclusion_proof(0, 0, _TREE.subtree_hash)
    with pytest.raises(IndexOutOfRangeError, match="empty tree"):
        merkle.verify_inclusion(merkle.leaf_hash(b""), 0, 0, (), EMPTY_ROOT)


@pytest.mark.parametrize("index", [-1, 5, 6])
def test_inclusion_index_outside_the_tree_is_refused(index: int) -> None:
    with pytest.raises(IndexOutOfRangeError, match=f"leaf index {index} .* size 5"):
        merkle.inclusion_proof(index, 5, _TREE.subtree_hash)
    with pytest.raises(IndexOutOfRangeError, match=f"leaf index {index}"):
        merkle.verify_inclusion(_TREE.leaf_hashes[0], index, 5, (), _root(5))


@pytest.mark.parametrize("size", [-1, merkle.MAX_TREE_SIZE + 1])
def test_tree_size_outside_uint64_is_refused(size: int) -> None:
    with pytest.raises(InvalidTreeSizeError, match="outside"):
        merkle.root_hash(size, _TREE.subtree_hash)
    with pytest.raises(InvalidTreeSizeError, match="outside"):
        merkle.verify_inclusion(_TREE.leaf_hashes[0], 0, size, (), _root(1))
    with pytest.raises(InvalidTreeSizeError, match="outside"):
        merkle.verify_consistency(1, size, (), _root(1), _root(1))


def test_consistency_between_equal_sizes_is_the_empty_proof() -> None:
    assert merkle.consistency_proof(7, 7, _TREE.subtree_hash) == ()
    merkle.verify_consistency(7, 7, (), _root(7), _root(7))


def test_consistency_between_equal_sizes_fails_when_roots_differ() -> None:
    with pytest.raises(RootMismatchError, match="equal size have different roots"):
        merkle.verify_consistency(7, 7, (), _root(7), _root(6))


def test_nonempty_proof_between_equal_sizes_fails_verification() -> None:
    with pytest.raises(ProofLengthError, match="has 1 hashes but must have 0"):
        merkle.verify_consistency(7, 7, (_root(1),), _root(7), _root(7))


def test_consistency_from_size_zero_is_the_empty_proof_and_verifies() -> None:
    assert merkle.consistency_proof(0, 9, _TREE.subtree_hash) == ()
    merkle.verify_consistency(0, 9, (), EMPTY_ROOT, _root(9))
    merkle.verify_consistency(0, 0, (), EMPTY_ROOT, EMPTY_ROOT)


def test_consistency_from_size_zero_requires_the_empty_tree_root() -> None:
    with pytest.raises(RootMismatchError, match="not the empty-tree root"):
        merkle.verify_consistency(0, 9, (), _root(1), _root(9))
    with pytest.raises(RootMismatchError, match="different roots"):
        merkle.verify_consistency(0, 0, (), EMPTY_ROOT, _root(1))


def test_consistency_from_size_zero_with_a_proof_fails_verification() -> None:
    with pytest.raises(ProofLengthError, match="must have 0"):
        merkle.verify_consistency(0, 9, (_root(9),), EMPTY_ROOT, _root(9))


def test_consistency_from_a_larger_to_a_smaller_tree_is_refused() -> None:
    with pytest.raises(InvalidTreeSizeError, match="old tree size 5 exceeds new tree size 4"):
        merkle.consistency_proof(5, 4, _TREE.subtree_hash)
    with pytest.raises(InvalidTreeSizeError, match="old tree size 5 exceeds new tree size 4"):
        merkle.verify_consistency(5, 4, (), _root(5), _root(4))


def test_empty_consistency_proof_between_different_sizes_fails_verification() -> None:
    with pytest.raises(ProofLengthError, match="from tree size 3 to 8 has 0 hashes but must have"):
        merkle.verify_consistency(3, 8, (), _root(3), _root(8))


def test_truncated_inclusion_proof_fails_with_the_expected_length() -> None:
    proof = merkle.inclusion_proof(5, 13, _TREE.subtree_hash)

    with pytest.raises(ProofLengthError, match=f"has {len(proof) - 1} hashes but must have 4"):
        merkle.verify_inclusion(_TREE.leaf_hashes[5], 5, 13, proof[:-1], _root(13))


def test_padded_consistency_proof_fails_with_the_expected_length() -> None:
    proof = merkle.consistency_proof(6, 13, _TREE.subtree_hash)

    with pytest.raises(ProofLengthError, match=f"has {len(proof) + 1} hashes but must have"):
        merkle.verify_consistency(6, 13, (*proof, proof[0]), _root(6), _root(13))


@pytest.mark.parametrize(
    ("leaf", "proof", "root", "what"),
    [
        (b"x" * 31, (), b"r" * 32, "leaf hash is 31 bytes"),
        (b"x" * 32, (), b"r" * 33, "root is 33 bytes"),
        (b"x" * 32, (b"p" * 32, b"p" * 20), b"r" * 32, "proof hash 1 is 20 bytes"),
    ],
)
def test_hash_of_the_wrong_length_is_refused(
    leaf: bytes, proof: tuple[bytes, ...], root: bytes, what: str
) -> None:
    with pytest.raises(HashLengthError, match=what):
        merkle.verify_inclusion(leaf, 0, 4, proof, root)


def test_root_mismatch_names_the_computed_and_expected_roots() -> None:
    proof = merkle.inclusion_proof(2, 8, _TREE.subtree_hash)

    with pytest.raises(RootMismatchError, match=f"not the expected {_root(7).hex()}"):
        merkle.verify_inclusion(_TREE.leaf_hashes[2], 2, 8, proof, _root(7))


def test_inclusion_proof_also_verifies_for_a_size_of_the_same_shape() -> None:
    """RFC 9162 roots do not commit to the size: leaf 0 has one proof shape in sizes 3 and 4.

    This is why a checkpoint signs size and root together.
    """
    proof = merkle.inclusion_proof(0, 3, _TREE.subtree_hash)

    merkle.verify_inclusion(_TREE.leaf_hashes[0], 0, 4, proof, _root(3))


def test_every_failure_is_a_merkle_error() -> None:
    for error in (
        InvalidTreeSizeError,
        IndexOutOfRangeError,
        HashLengthError,
        ProofLengthError,
        RootMismatchError,
    ):
        assert issubclass(error, MerkleError)


class _RecordingStore:
    """A stand-in for storage: answers any complete subtree with a made-up hash."""

    def __init__(self) -> None:
        self.reads: list[tuple[int, int]] = []

    def __call__(self, start: int, end: int, /) -> bytes:
        width = end - start
        assert width > 0
        assert width & (width - 1) == 0, f"[{start}, {end}) is not a power-of-two range"
        assert start % width == 0, f"[{start}, {end}) is not aligned"
        self.reads.append((start, end))
        return hashlib.sha256(f"{start}:{end}".encode()).digest()


@pytest.mark.parametrize("size", [1, 2, 3, 1000, 2**20, 2**40 + 12345, merkle.MAX_TREE_SIZE])
def test_generation_reads_only_complete_subtrees_logarithmically_often(size: int) -> None:
    bound = 2 * size.bit_length()
    store = _RecordingStore()
    merkle.root_hash(size, store)
    assert len(store.reads) == size.bit_count()

    for index in {0, size // 3, size - 1}:
        store = _RecordingStore()
        merkle.inclusion_proof(index, size, store)
        assert len(store.reads) <= bound

    for old in {1, size // 2, size - 1} - {0}:
        store = _RecordingStore()
        merkle.consistency_proof(old, size, store)
        assert len(store.reads) <= bound


@pytest.mark.parametrize(("start", "end"), [(-1, 2), (3, 3), (4, 2), (15, 17)])
def test_in_memory_tree_refuses_ranges_outside_the_tree(start: int, end: int) -> None:
    with pytest.raises(IndexOutOfRangeError, match=f"range \\[{start}, {end}\\)"):
        _TREE.subtree_hash(start, end)


def test_in_memory_tree_refuses_leaf_hashes_of_the_wrong_length() -> None:
    with pytest.raises(HashLengthError, match="leaf hash 1 is 3 bytes"):
        InMemoryTree((b"a" * 32, b"abc"))
