"""RFC 9162 (Certificate Transparency v2) Merkle tree hashing and proofs.

Pure: no storage, no I/O. Hashes are SHA-256 with RFC 9162 section 2.1 domain
separation, so a leaf can never be passed off as an interior node:

    leaf hash = SHA-256(0x00 || entry)
    node hash = SHA-256(0x01 || left || right)

The storage boundary is `SubtreeHasher`: proof and root generation ask it for
the hashes of *complete* subtrees only (ranges ``[start, end)`` whose length is
a power of two and whose ``start`` is a multiple of that length). A store that
keeps one hash per interior node therefore answers every request with a single
read, and any proof or root costs O(log n) reads. The ragged right edge of a
tree whose size is not a power of two is composed here, never in storage.

Verifiers raise a `MerkleError` subclass on every failure and return ``None``
on success; there is no boolean to forget to check.

Edge cases, decided once for every caller:

- The root of the empty tree is SHA-256 of the empty string (`EMPTY_ROOT`).
- Inclusion in a tree of size 0 is impossible: `IndexOutOfRangeError`.
- Consistency between equal sizes is the empty proof, which verifies iff the
  two roots are equal.
- Consistency from size 0 (RFC 9162 defines no proof for it) is the empty
  proof; it verifies iff the old root is `EMPTY_ROOT` (and, when the new size
  is also 0, the new root too). Every tree extends the empty tree, but a
  "size 0" head carrying any other root is not a tree head at all.
- Sizes are unsigned 64-bit, as in C2SP checkpoints; larger values are
  refused with `InvalidTreeSizeError`.
- A proof for (index, size) also verifies for another size whose proof has the
  same shape (e.g. leaf 0 in sizes 3 and 4), because an RFC 9162 root does not
  commit to the tree size. Size and root must come from one signed checkpoint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, Self

from nexus_contract.errors import NexusError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_TREE_SIZE",
    "NODE_PREFIX",
    "HashLengthError",
    "InMemoryTree",
    "IndexOutOfRangeError",
    "InvalidTreeSizeError",
    "MerkleError",
    "ProofLengthError",
    "RootMismatchError",
    "SubtreeHasher",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
"""Length in bytes of every hash in the tree (SHA-256)."""

MAX_TREE_SIZE = 2**64 - 1
"""Largest tree size accepted: C2SP checkpoints carry sizes as uint64."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""Root hash of the tree with no leaves (RFC 9162 section 2.1.1)."""

_LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
"""RFC 9162: an interior node hashes 0x01 || left || right."""


class MerkleError(NexusError):
    """A Merkle proof, hash or tree parameter was rejected."""


class InvalidTreeSizeError(MerkleError):
    """A tree size is negative, above `MAX_TREE_SIZE`, or an old size exceeds the new one."""


class IndexOutOfRangeError(MerkleError):
    """A leaf index (or a subtree range) lies outside the tree."""


class HashLengthError(MerkleError):
    """A leaf hash, root or proof element is not `HASH_SIZE` bytes."""


class ProofLengthError(MerkleError):
    """A proof has more or fewer hashes than its index and sizes call for."""


class RootMismatchError(MerkleError):
    """A proof, hashed up from its starting point, does not reach the expected root."""


class SubtreeHasher(Protocol):
    """Storage boundary: the Merkle tree hash of leaves ``[start, end)``.

    Callers in this module only ask for complete subtrees: ``end - start`` is a
    power of two and ``start`` is a multiple of it; ``(i, i + 1)`` is leaf hash
    ``i``. Implementations may answer other ranges too (`InMemoryTree` does).
    """

    def __call__(self, start: int, end: int, /) -> bytes: ...


def leaf_hash(entry: bytes) -> bytes:
    """Return SHA-256(0x00 || entry), the hash of one log entry."""
    return hashlib.sha256(_LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return SHA-256(0x01 || left || right), the hash of an interior node."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def root_hash(size: int, subtree_hash: SubtreeHasher) -> bytes:
    """Return the root of the first ``size`` leaves, `EMPTY_ROOT` when ``size`` is 0.

    Reads at most one complete subtree per set bit of ``size``.
    """
    _check_size("tree size", size)
    if size == 0:
        return EMPTY_ROOT
    return _range_hash(0, size, subtree_hash)


def inclusion_proof(index: int, size: int, subtree_hash: SubtreeHasher) -> tuple[bytes, ...]:
    """Return the RFC 9162 section 2.1.3.1 inclusion proof of leaf ``index`` in tree ``size``.

    Hashes run from the leaf's sibling up to the child of the root. Raises
    `IndexOutOfRangeError` unless ``0 <= index < size`` (so always for size 0).
    """
    _check_size("tree size", size)
    _check_index(index, size)
    siblings: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        split = start + _largest_power_of_two_below(end - start)
        if index < split:
            siblings.append(_range_hash(split, end, subtree_hash))
            end = split
        else:
            siblings.append(_range_hash(start, split, subtree_hash))
            start = split
    siblings.reverse()
    return tuple(siblings)


def consistency_proof(
    old_size: int, new_size: int, subtree_hash: SubtreeHasher
) -> tuple[bytes, ...]:
    """Return the RFC 9162 section 2.1.4.1 proof that tree ``old_size`` is a prefix of ``new_size``.

    The proof is empty when ``old_size`` is 0 or equals ``new_size``.
    """
    _check_sizes(old_size, new_size)
    if old_size in (0, new_size):
        return ()
    nodes: list[bytes] = []
    start, end = 0, new_size
    old_tree_is_a_complete_subtree = True
    while old_size != end:
        split = start + _largest_power_of_two_below(end - start)
        if old_size <= split:
            nodes.append(_range_hash(split, end, subtree_hash))
            end = split
        else:
            nodes.append(_range_hash(start, split, subtree_hash))
            start = split
            old_tree_is_a_complete_subtree = False
    if not old_tree_is_a_complete_subtree:
        nodes.append(_range_hash(start, end, subtree_hash))
    nodes.reverse()
    return tuple(nodes)


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` with ``root``.

    RFC 9162 section 2.1.3.2. Returns ``None`` on success; raises
    `InvalidTreeSizeError`, `IndexOutOfRangeError` (always for size 0),
    `HashLengthError`, `ProofLengthError` or `RootMismatchError`.
    """
    _check_hash("leaf hash", leaf_hash)
    _check_hash("root", root)
    _check_proof_hashes(proof)
    _check_size("tree size", size)
    _check_index(index, size)
    where = f"inclusion proof for leaf {index} in tree size {size}"

    fn, sn = index, size - 1
    computed = leaf_hash
    for sibling in proof:
        if sn == 0:
            raise _proof_length_error(where, len(proof), _inclusion_proof_length(index, size))
        if fn & 1 or fn == sn:
            computed = node_hash(sibling, computed)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            computed = node_hash(computed, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise _proof_length_error(where, len(proof), _inclusion_proof_length(index, size))
    if computed != root:
        raise RootMismatchError(
            f"{where} leads to root {computed.hex()}, not the expected {root.hex()}: "
            "the leaf, the proof or the root was altered, or they come from different trees"
        )


def verify_consistency(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> None:
    """Check that the tree ``old_size``/``old_root`` is a prefix of ``new_size``/``new_root``.

    RFC 9162 section 2.1.4.2, plus the edge cases in the module docstring:
    equal sizes need an empty proof and equal roots; old size 0 needs an empty
    proof and ``old_root == EMPTY_ROOT``. Returns ``None`` on success; raises
    `InvalidTreeSizeError`, `HashLengthError`, `ProofLengthError` or
    `RootMismatchError`.
    """
    _check_hash("old root", old_root)
    _check_hash("new root", new_root)
    _check_proof_hashes(proof)
    _check_sizes(old_size, new_size)
    where = f"consistency proof from tree size {old_size} to {new_size}"

    if old_size in (0, new_size):
        if proof:
            raise _proof_length_error(where, len(proof), 0)
        if old_size == 0 and old_root != EMPTY_ROOT:
            raise RootMismatchError(
                f"{where}: the old root {old_root.hex()} is not the empty-tree root "
                f"{EMPTY_ROOT.hex()}, so the old tree head is invalid"
            )
        if old_size == new_size and old_root != new_root:
            raise RootMismatchError(
                f"{where}: trees of equal size have different roots "
                f"{old_root.hex()} and {new_root.hex()}, so the log forked"
            )
        return

    expected_length = _consistency_proof_length(old_size, new_size)
    if not proof:
        raise _proof_length_error(where, 0, expected_length)
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    old_computed = new_computed = path[0]
    for node in path[1:]:
        if sn == 0:
            raise _proof_length_error(where, len(proof), expected_length)
        if fn & 1 or fn == sn:
            old_computed = node_hash(node, old_computed)
            new_computed = node_hash(node, new_computed)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            new_computed = node_hash(new_computed, node)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise _proof_length_error(where, len(proof), expected_length)
    if old_computed != old_root:
        raise RootMismatchError(
            f"{where} leads to old root {old_computed.hex()}, not the expected "
            f"{old_root.hex()}: the proof or the old root was altered"
        )
    if new_computed != new_root:
        raise RootMismatchError(
            f"{where} leads to new root {new_computed.hex()}, not the expected "
            f"{new_root.hex()}: the proof or the new root was altered, or the log forked"
        )


@dataclass(frozen=True)
class InMemoryTree:
    """Leaf hashes held in memory, answering `SubtreeHasher` requests for any range.

    For tests and small tools: every request rehashes its range, O(end - start).
    """

    leaf_hashes: tuple[bytes, ...]

    def __post_init__(self) -> None:
        for position, value in enumerate(self.leaf_hashes):
            _check_hash(f"leaf hash {position}", value)

    @classmethod
    def from_entries(cls, entries: Iterable[bytes]) -> Self:
        """Build the tree whose leaves are the hashes of ``entries``, in order."""
        return cls(tuple(leaf_hash(entry) for entry in entries))

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self.leaf_hashes)

    def subtree_hash(self, start: int, end: int, /) -> bytes:
        """Return the Merkle tree hash of leaves ``[start, end)``, 0 <= start < end <= size."""
        if not 0 <= start < end <= self.size:
            raise IndexOutOfRangeError(
                f"range [{start}, {end}) is not a non-empty range of the {self.size}-leaf tree"
            )
        return _tree_hash(self.leaf_hashes[start:end])


def _tree_hash(leaves: Sequence[bytes]) -> bytes:
    """MTH of a non-empty list of leaf hashes, straight from RFC 9162 section 2.1.1."""
    if len(leaves) == 1:
        return leaves[0]
    split = _largest_power_of_two_below(len(leaves))
    return node_hash(_tree_hash(leaves[:split]), _tree_hash(leaves[split:]))


def _range_hash(start: int, end: int, subtree_hash: SubtreeHasher) -> bytes:
    """MTH of leaves ``[start, end)``, asking the store only for aligned complete subtrees."""
    width = end - start
    if width & (width - 1) == 0 and start % width == 0:
        return subtree_hash(start, end)
    split = start + _largest_power_of_two_below(width)
    return node_hash(_range_hash(start, split, subtree_hash), _range_hash(split, end, subtree_hash))


def _largest_power_of_two_below(n: int) -> int:
    """The k of RFC 9162: the largest power of two strictly less than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _inclusion_proof_length(index: int, size: int) -> int:
    """Hashes in the inclusion proof of ``index`` in ``size``: inner path plus right border."""
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def _consistency_proof_length(old_size: int, new_size: int) -> int:
    """Hashes in the consistency proof for ``0 < old_size < new_size``."""
    shift = (old_size & -old_size).bit_length() - 1
    length = _inclusion_proof_length(old_size - 1, new_size) - shift
    return length if old_size == 1 << shift else length + 1


def _proof_length_error(where: str, got: int, expected: int) -> ProofLengthError:
    return ProofLengthError(
        f"{where} has {got} hashes but must have {expected}: it was made for a different "
        "index or tree size, or was truncated or padded"
    )


def _check_hash(what: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise HashLengthError(f"{what} is {len(value)} bytes; SHA-256 hashes are {HASH_SIZE}")


def _check_proof_hashes(proof: Sequence[bytes]) -> None:
    for position, value in enumerate(proof):
        _check_hash(f"proof hash {position}", value)


def _check_size(what: str, size: int) -> None:
    if not 0 <= size <= MAX_TREE_SIZE:
        raise InvalidTreeSizeError(f"{what} {size} is outside 0..{MAX_TREE_SIZE}")


def _check_sizes(old_size: int, new_size: int) -> None:
    _check_size("old tree size", old_size)
    _check_size("new tree size", new_size)
    if old_size > new_size:
        raise InvalidTreeSizeError(
            f"old tree size {old_size} exceeds new tree size {new_size}; "
            "a log only grows, so pass the smaller tree first"
        )


def _check_index(index: int, size: int) -> None:
    if not 0 <= index < size:
        raise IndexOutOfRangeError(
            f"leaf index {index} is outside the tree of size {size} (valid: 0..{size - 1})"
            if size
            else f"leaf index {index} cannot be in the empty tree: no leaf is included in size 0"
        )
