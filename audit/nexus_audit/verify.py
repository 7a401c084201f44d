"""Full verification of the stored log: every leaf, every stored node, every checkpoint.

`verify_log` reads the log in one snapshot and recomputes it from scratch:
each leaf hash from its entry, each stored subtree hash from the leaves, and
each checkpoint's root at its size, whose signed note must open with the
log's key. It streams: leaves and nodes are read in index order, page by
page, and the only tree state kept is the right edge of the tree so far (one
hash per level), so memory is O(log n).

Checkpoints come from three places, and every one must match the tree
recomputed from the leaves at its size: the database's, the checkpoint
journal's (the append-only copy outside the database, `nexus_audit.journal`:
a tree rewritten with its database checkpoints deleted fails here), and any
``trusted`` checkpoint an outsider kept (``audit verify --trusted FILE``:
proves the current tree extends what they saw). Matching roots at every size
from one leaf sequence is the chain: each checkpoint is consistent with every
earlier one.

The first problem raises a `LogVerificationError` subclass naming where it is:
the first bad leaf (with its decision or event id), the node and the leaves
it covers, or the checkpoint. A verifier never returns a flag.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, select

from nexus_audit import merkle
from nexus_audit.checkpoint import Checkpoint, CheckpointError
from nexus_audit.database import AuditDatabase
from nexus_audit.gc_pause import cyclic_gc_paused
from nexus_audit.journal import CheckpointJournal
from nexus_audit.note import NoteError, Verifier
from nexus_audit.storage import TILE_HEIGHT, TILE_WIDTH
from nexus_audit.tables import SEQUENCER_ROW, CheckpointRow, Leaf, LogState, Node, StoredTile
from nexus_contract.errors import NexusError

__all__ = [
    "CheckpointMismatchError",
    "LeafEntryMismatchError",
    "LeafHashMismatchError",
    "LeafMissingError",
    "LogReport",
    "LogVerificationError",
    "NodeMismatchError",
    "TileMismatchError",
    "verify_log",
]

_PAGE = 10_000
_TILE_PAGE = 256
"""Whole tiles per query while verifying: 2 MiB of hashes."""


class LogVerificationError(NexusError):
    """The stored log does not verify; the message says where."""


class LeafMissingError(LogVerificationError):
    """A leaf index below the tree size has no row."""

    def __init__(self, index: int, size: int) -> None:
        super().__init__(
            f"leaf {index} is missing: the tree has {size} leaves but no row for index {index}"
        )
        self.index = index


class LeafHashMismatchError(LogVerificationError):
    """A leaf's entry does not hash to its stored leaf hash: the entry or the hash was altered."""

    def __init__(self, index: int, record_id: str | None, computed: bytes, stored: bytes) -> None:
        super().__init__(
            f"leaf {index}{_naming(record_id)} was altered: its entry hashes to "
            f"{computed.hex()} but the stored leaf hash is {stored.hex()}"
        )
        self.index = index
        self.record_id = record_id


class LeafEntryMismatchError(LogVerificationError):
    """A leaf's lookup columns (kind, decision id, event id) disagree with its entry."""

    def __init__(self, index: int, record_id: str | None, problem: str) -> None:
        super().__init__(f"leaf {index}{_naming(record_id)}: {problem}")
        self.index = index
        self.record_id = record_id


class NodeMismatchError(LogVerificationError):
    """A stored subtree hash is wrong or missing, or one exists that the tree does not have."""

    def __init__(self, level: int, node_index: int, problem: str) -> None:
        first, end = node_index << level, (node_index + 1) << level
        super().__init__(
            f"stored node (level {level}, index {node_index}) over leaves [{first}, {end}): "
            f"{problem}; leaf {first} is the first leaf it covers"
        )
        self.level = level
        self.node_index = node_index
        self.first_leaf = first


class TileMismatchError(LogVerificationError):
    """A stored whole tile differs from the hashes it is made of, or the tree has no such tile."""

    def __init__(self, level: int, tile_index: int, problem: str) -> None:
        first = tile_index << (TILE_HEIGHT * (level + 1))
        super().__init__(
            f"stored tile {level}/{tile_index} (from leaf {first}): {problem}; proofs from the "
            "served tiles would not match the signed checkpoints"
        )
        self.level = level
        self.tile_index = tile_index


class CheckpointMismatchError(LogVerificationError):
    """A stored checkpoint does not open with the log key or does not match the tree."""

    def __init__(self, size: int, problem: str) -> None:
        super().__init__(f"checkpoint of tree size {size}: {problem}")
        self.size = size


@dataclass(frozen=True)
class LogReport:
    """What a successful verification covered."""

    size: int
    root_hash: bytes
    nodes: int
    checkpoints: int
    seconds: float
    journal_checkpoints: int = 0
    trusted: tuple[int, ...] = ()
    """Sizes of the outsiders' checkpoints the tree was proven to extend."""


def verify_log(
    db: AuditDatabase,
    verifier: Verifier,
    *,
    journal: CheckpointJournal | None = None,
    trusted: Sequence[str] = (),
) -> LogReport:
    """Recompute the whole log and check it against every stored hash and checkpoint.

    ``journal`` adds the checkpoints kept outside the database; ``trusted``
    notes are checkpoints an outsider saved, each of which the tree must
    extend. Returns a `LogReport`; raises a `LogVerificationError` subclass at
    the first problem.
    """
    started = time.perf_counter()
    outside: list[tuple[int, str, bytes]] = []
    journal_count = 0
    if journal is not None:
        roots: dict[int, bytes] = {}
        for record in journal.records():
            checkpoint = _open_outside(
                record.note, verifier, f"{journal.path} (size {record.size})"
            )
            if checkpoint.size != record.size:
                raise CheckpointMismatchError(
                    record.size, f"{journal.path}: its note is of another size"
                )
            known = roots.setdefault(checkpoint.size, checkpoint.root_hash)
            if known != checkpoint.root_hash:
                raise CheckpointMismatchError(
                    checkpoint.size,
                    f"{journal.path} holds two checkpoints of this size with different roots: "
                    "the log forked",
                )
        journal_count = len(roots)
        outside.extend((size, f"journal {journal.path}", root) for size, root in roots.items())
    trusted_sizes = []
    for number, note in enumerate(trusted, start=1):
        checkpoint = _open_outside(note, verifier, f"trusted checkpoint {number}")
        outside.append((checkpoint.size, f"trusted checkpoint {number}", checkpoint.root_hash))
        trusted_sizes.append(checkpoint.size)
    with cyclic_gc_paused(), db.engine.connect() as connection:
        if db.is_postgresql:
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
        with connection.begin():
            report = _verify(connection, verifier, sorted(outside))
    return LogReport(
        report.size,
        report.root_hash,
        report.nodes,
        report.checkpoints,
        time.perf_counter() - started,
        journal_count,
        tuple(trusted_sizes),
    )


def _open_outside(note: str, verifier: Verifier, where: str) -> Checkpoint:
    try:
        return Checkpoint.open(note, verifier)
    except (NoteError, CheckpointError) as exc:
        raise LogVerificationError(f"{where}: does not open with the log key: {exc}") from None


def _verify(
    connection: Connection, verifier: Verifier, outside: Sequence[tuple[int, str, bytes]] = ()
) -> LogReport:
    size = connection.scalar(select(LogState.size).where(LogState.id == SEQUENCER_ROW))
    if size is None:
        raise LogVerificationError("the log_state row is missing")
    pending = list(
        connection.execute(
            select(CheckpointRow.size, CheckpointRow.root_hash, CheckpointRow.note).order_by(
                CheckpointRow.size
            )
        ).tuples()
    )
    for checkpoint_size, _, _ in pending:
        if checkpoint_size > size:
            raise CheckpointMismatchError(
                checkpoint_size, f"it is larger than the tree, which has {size} leaves"
            )
    for checkpoint_size, source, _ in outside:
        if checkpoint_size > size:
            raise CheckpointMismatchError(
                checkpoint_size,
                f"{source} covers {checkpoint_size} leaves but the log holds only {size}: "
                "leaves were deleted",
            )
    next_outside = 0
    levels = _LevelStreams(connection)
    tiles = _TileChecks(connection)
    stack: list[tuple[int, int, bytes]] = []
    next_checkpoint = 0
    nodes_checked = 0

    def check_checkpoints(tree_size: int) -> None:
        nonlocal next_checkpoint, next_outside
        while next_checkpoint < len(pending) and pending[next_checkpoint][0] == tree_size:
            _check_checkpoint(pending[next_checkpoint], _root(stack), verifier)
            next_checkpoint += 1
        while next_outside < len(outside) and outside[next_outside][0] == tree_size:
            _, source, root = outside[next_outside]
            recomputed = _root(stack)
            if root != recomputed:
                raise CheckpointMismatchError(
                    tree_size,
                    f"{source} signs root {root.hex()}, but the tree recomputed from the "
                    f"leaves has root {recomputed.hex()} at this size: the log was rewritten "
                    "below this size (its database checkpoints deleted or replaced)",
                )
            next_outside += 1

    check_checkpoints(0)
    sha256 = hashlib.sha256
    node_hash = merkle.node_hash
    checked = 0
    rows = _leaves(connection, size)
    for expected, (index, stored_hash, entry, kind, decision_id, event_id) in enumerate(rows):
        if index != expected:
            raise LeafMissingError(expected, size)
        computed = sha256(b"\x00" + entry).digest()
        record_id = _record_label(decision_id, event_id)
        if computed != stored_hash:
            raise LeafHashMismatchError(index, record_id, computed, stored_hash)
        _check_columns(index, record_id, entry, kind, decision_id, event_id)
        tiles.add(0, computed)
        level, node_index, value = 0, index, computed
        while stack and stack[-1][0] == level:
            _, left_index, left = stack.pop()
            level, node_index, value = level + 1, left_index >> 1, node_hash(left, value)
            levels.expect(level, node_index, value)
            if level % TILE_HEIGHT == 0:
                tiles.add(level // TILE_HEIGHT, value)
            nodes_checked += 1
        stack.append((level, node_index, value))
        checked = expected + 1
        check_checkpoints(checked)
    if checked != size:
        raise LeafMissingError(checked, size)
    levels.expect_exhausted()
    tiles.expect_exhausted()
    return LogReport(size, _root(stack), nodes_checked, len(pending), 0.0)


def _root(stack: list[tuple[int, int, bytes]]) -> bytes:
    if not stack:
        return merkle.EMPTY_ROOT
    root = stack[-1][2]
    for _, _, value in reversed(stack[:-1]):
        root = merkle.node_hash(value, root)
    return root


def _check_checkpoint(row: tuple[int, bytes, str], root: bytes, verifier: Verifier) -> None:
    size, stored_root, note = row
    try:
        checkpoint = Checkpoint.open(note, verifier)
    except (NoteError, CheckpointError) as exc:
        raise CheckpointMismatchError(size, f"its signed note does not verify: {exc}") from None
    if checkpoint.size != size:
        raise CheckpointMismatchError(size, f"its note is for tree size {checkpoint.size}")
    if checkpoint.root_hash != stored_root:
        raise CheckpointMismatchError(size, "its stored root differs from its signed note's")
    if checkpoint.root_hash != root:
        raise CheckpointMismatchError(
            size,
            f"the tree recomputed from the leaves has root {root.hex()}, but the signed "
            f"checkpoint says {checkpoint.root_hash.hex()}: leaves below {size} were altered "
            "together with their stored hashes",
        )


_ENFORCER_RECORD_KINDS = frozenset({"receipt", "shadow"})
"""The leaf kinds of `nexus_audit.enforcer_records`."""


def _check_columns(
    index: int,
    record_id: str | None,
    entry: bytes,
    kind: str,
    decision_id: str | None,
    event_id: str | None,
) -> None:
    try:
        document: Any = orjson.loads(entry)
    except orjson.JSONDecodeError:
        raise LeafEntryMismatchError(index, record_id, "its entry is not JSON") from None
    if not isinstance(document, dict):
        raise LeafEntryMismatchError(index, record_id, "its entry is not an object")
    expected = (document.get("kind"), document.get("decision_id"), document.get("event_id"))
    if kind in _ENFORCER_RECORD_KINDS and document.get("kind") == kind:
        # An enforcer record names the decision it is about; its leaf is found by its
        # event id, <kind>:<decision id>, and holds no decision id of its own.
        expected = (kind, None, f"{kind}:{document.get('decision_id')}")
    if expected != (kind, decision_id, event_id):
        raise LeafEntryMismatchError(
            index,
            record_id,
            f"its columns (kind {kind!r}, decision_id {decision_id!r}, event_id {event_id!r}) "
            f"disagree with its entry (kind {document.get('kind')!r}, decision_id "
            f"{document.get('decision_id')!r}, event_id {document.get('event_id')!r})",
        )


def _leaves(
    connection: Connection, size: int
) -> Iterator[tuple[int, bytes, bytes, str, str | None, str | None]]:
    """Leaves below ``size`` in index order, read in index ranges of one page.

    Ranges, not ``LIMIT`` pages: right after a bulk load the planner's
    statistics are stale, and a ``LIMIT`` query then sorts everything above
    the cursor for every page.
    """
    for start in range(0, size, _PAGE):
        yield from connection.execute(
            select(
                Leaf.leaf_index, Leaf.leaf_hash, Leaf.entry, Leaf.kind, Leaf.decision_id,
                Leaf.event_id,
            )
            .where(Leaf.leaf_index >= start, Leaf.leaf_index < min(start + _PAGE, size))
            .order_by(Leaf.leaf_index)
        ).tuples().all()  # fmt: skip


class _LevelStreams:
    """The stored nodes of each level, read in index order as the verifier reaches them."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._streams: dict[int, Iterator[tuple[int, bytes]]] = {}

    def expect(self, level: int, node_index: int, value: bytes) -> None:
        stream = self._streams.get(level)
        if stream is None:
            stream = self._streams[level] = self._read(level)
        stored = next(stream, None)
        if stored is None or stored[0] > node_index:
            raise NodeMismatchError(level, node_index, "it is missing")
        if stored[0] < node_index:
            raise NodeMismatchError(level, stored[0], "the tree has no such node")
        if stored[1] != value:
            raise NodeMismatchError(
                level,
                node_index,
                f"stored hash {stored[1].hex()} differs from the recomputed {value.hex()}: "
                "the node, or a leaf's entry together with its leaf hash, was altered",
            )

    def expect_exhausted(self) -> None:
        present = self._connection.scalars(select(Node.level).distinct()).all()
        for level in sorted(present):
            stream = self._streams.get(level) or self._read(level)
            extra = next(stream, None)
            if extra is not None:
                raise NodeMismatchError(level, extra[0], "the tree has no such node")

    def _read(self, level: int) -> Iterator[tuple[int, bytes]]:
        """The level's stored nodes in index order, one index range at a time."""
        start = 0
        while True:
            page = (
                self._connection.execute(
                    select(Node.node_index, Node.hash)
                    .where(
                        Node.level == level,
                        Node.node_index >= start,
                        Node.node_index < start + _PAGE,
                    )
                    .order_by(Node.node_index)
                )
                .tuples()
                .all()
            )
            if not page:
                beyond = self._connection.scalar(
                    select(Node.node_index)
                    .where(Node.level == level, Node.node_index >= start)
                    .order_by(Node.node_index)
                    .limit(1)
                )
                if beyond is None:
                    return
                start = beyond
                continue
            yield from page
            start += _PAGE


class _TileChecks:
    """Each stored whole tile against the recomputed hashes of its level, in index order.

    Hashes of tree level ``8L`` arrive in index order; every 256 make tile ``L/N``,
    which is compared with the stored row when there is one (a log written before
    whole tiles were stored has none for its older tiles).
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._filling: dict[int, list[bytes]] = {}
        self._done: dict[int, int] = {}
        self._stored: dict[int, Iterator[tuple[int, bytes]]] = {}
        self._next: dict[int, tuple[int, bytes] | None] = {}

    def add(self, level: int, value: bytes) -> None:
        filling = self._filling.setdefault(level, [])
        filling.append(value)
        if len(filling) < TILE_WIDTH:
            return
        tile_index = self._done.get(level, 0)
        self._done[level] = tile_index + 1
        self._check(level, tile_index, b"".join(filling))
        filling.clear()

    def expect_exhausted(self) -> None:
        levels = self._connection.scalars(select(StoredTile.level).distinct()).all()
        for level in sorted(levels):
            extra = self._peek(level)
            if extra is not None:
                raise TileMismatchError(level, extra[0], "the tree has no such tile")

    def _check(self, level: int, tile_index: int, hashes: bytes) -> None:
        stored = self._peek(level)
        if stored is None or stored[0] > tile_index:
            return
        if stored[0] < tile_index:
            raise TileMismatchError(level, stored[0], "the tree has no such tile")
        self._next[level] = next(self._stored[level], None)
        if stored[1] != hashes:
            raise TileMismatchError(
                level, tile_index, "its hashes differ from the recomputed tree's"
            )

    def _peek(self, level: int) -> tuple[int, bytes] | None:
        if level not in self._stored:
            self._stored[level] = self._read(level)
            self._next[level] = next(self._stored[level], None)
        return self._next[level]

    def _read(self, level: int) -> Iterator[tuple[int, bytes]]:
        start = 0
        while True:
            page = (
                self._connection.execute(
                    select(StoredTile.tile_index, StoredTile.hashes)
                    .where(StoredTile.level == level, StoredTile.tile_index >= start)
                    .order_by(StoredTile.tile_index)
                    .limit(_TILE_PAGE)
                )
                .tuples()
                .all()
            )
            if not page:
                return
            yield from page
            start = page[-1][0] + 1


def _record_label(decision_id: str | None, event_id: str | None) -> str | None:
    if decision_id is not None:
        return f"decision {decision_id}"
    return None if event_id is None else f"event {event_id}"


def _naming(record_id: str | None) -> str:
    return "" if record_id is None else f" ({record_id})"
