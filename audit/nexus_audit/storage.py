"""The log in the database: one sequencer, append-only leaves, stored subtree hashes.

Every append runs inside the caller's transaction and starts by locking the
single ``log_state`` row (``UPDATE ... SET size = size``: a row lock on
PostgreSQL, the database write lock on SQLite), so two writers never race on
leaf indexes; the primary and unique keys are the backstop. A batch is one
transaction: its leaves, their control rows, the subtree hashes they
complete and the new size commit together or not at all.

``nodes`` keeps the hash of every complete, aligned subtree (level >= 1), so
`nexus_audit.merkle` gets any subtree it asks for in one lookup. Appending
reads only the tree's right edge (one complete subtree per set bit of the
old size), and a root or proof fetches all the subtrees it needs in at most
two queries: the request pattern of a proof depends only on index and sizes,
so it is recorded with placeholder hashes first and then fetched at once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    String,
    Table,
    and_,
    any_,
    bindparam,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute, Session

from nexus_audit import merkle
from nexus_audit.tables import (
    SEQUENCER_ROW,
    CheckpointRow,
    Leaf,
    LeafControl,
    LogState,
    Node,
    StoredTile,
)
from nexus_contract.errors import NexusError

__all__ = [
    "MAX_ENTRY_BYTES",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "Appended",
    "CorruptStorageError",
    "NewLeaf",
    "Sequencer",
    "StorageError",
    "StoredLeaf",
    "append",
    "as_utc",
    "bulk_insert",
    "bump_keys_epoch",
    "checkpoint_at",
    "consistency_proof",
    "decision_leaves",
    "hashes_at",
    "inclusion_proof",
    "inclusion_proofs",
    "latest_checkpoint",
    "leaf_at",
    "leaf_index_of_decision",
    "leaves_for_control",
    "lock_for_writing_first",
    "lock_sequencer",
    "root_hash",
    "save_checkpoint",
    "stored_tile",
    "tree_size",
]

MAX_ENTRY_BYTES = 0xFFFF
"""Every entry fits a C2SP tlog-tiles entry bundle (uint16 length prefix)."""

_LOOKUP_CHUNK = 1000
"""Ids per ``IN (...)`` query: well under every driver's parameter limit."""

_PLACEHOLDER = bytes(merkle.HASH_SIZE)

_LEAVES: Table = Leaf.__table__  # type: ignore[assignment]
_LEAF_COLUMNS = (
    "leaf_index", "leaf_hash", "entry", "kind", "decision_id", "event_id", "tenant", "time",
    "allowed", "appended_at", "content_mac",
)  # fmt: skip
_LEAF_CONTROLS: Table = LeafControl.__table__  # type: ignore[assignment]
_LEAF_CONTROL_COLUMNS = ("control", "leaf_index", "kind", "time", "allowed")
_NODES: Table = Node.__table__  # type: ignore[assignment]
_NODE_COLUMNS = ("level", "node_index", "hash")
_TILES: Table = StoredTile.__table__  # type: ignore[assignment]
_TILE_COLUMNS = ("level", "tile_index", "hashes")

TILE_HEIGHT = 8
"""C2SP tlog-tiles: a tile holds 2**8 hashes of one tree level, 8 levels apart."""
TILE_WIDTH = 1 << TILE_HEIGHT

_T = TypeVar("_T")


class StorageError(NexusError):
    """The log's tables cannot serve a request."""


class CorruptStorageError(StorageError):
    """A row the tree needs is missing: the tables were altered outside the log."""


@dataclass(frozen=True)
class NewLeaf:
    """A leaf to append. Invariant: exactly one of ``decision_id`` / ``event_id`` is set."""

    entry: bytes
    kind: str
    time: datetime
    decision_id: str | None = None
    event_id: str | None = None
    tenant: str | None = None
    allowed: bool | None = None
    controls: tuple[str, ...] = ()
    content_mac: bytes | None = None
    """HMAC of what the enforcer sent (decisions): a restated decision id is told apart."""

    def __post_init__(self) -> None:
        if (self.decision_id is None) == (self.event_id is None):
            raise ValueError("a leaf has exactly one of decision_id and event_id")
        if len(self.entry) > MAX_ENTRY_BYTES:
            raise ValueError(
                f"a log entry is at most {MAX_ENTRY_BYTES} bytes (tlog-tiles entry bundles "
                f"prefix each with a uint16); this one is {len(self.entry)}"
            )


@dataclass(frozen=True)
class Appended:
    """What one append did: ``indexes[i]`` is leaf i's index, or None for a duplicate."""

    old_size: int
    size: int
    indexes: tuple[int | None, ...]
    keys_epoch: int
    """The sequencer's data-key epoch in this transaction (see `bump_keys_epoch`)."""

    @property
    def accepted(self) -> int:
        return self.size - self.old_size

    @property
    def duplicates(self) -> int:
        return len(self.indexes) - self.accepted


@dataclass(frozen=True)
class StoredLeaf:
    index: int
    leaf_hash: bytes
    entry: bytes
    kind: str
    decision_id: str | None
    event_id: str | None
    time: datetime
    allowed: bool | None


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class Sequencer:
    """The sequencer row as the lock holder sees it."""

    size: int
    keys_epoch: int


def lock_sequencer(session: Session) -> Sequencer:
    """Take the sequencer lock for the rest of the transaction and read the row.

    One statement: ``UPDATE ... RETURNING`` locks and reads at once.
    """
    row = session.execute(
        update(LogState)
        .where(LogState.id == SEQUENCER_ROW)
        .values(size=LogState.size)
        .returning(LogState.size, LogState.keys_epoch)
    ).first()
    if row is None:
        raise CorruptStorageError("the log_state row is missing; run the audit migrations")
    return Sequencer(row[0], row[1])


def bump_keys_epoch(session: Session) -> None:
    """Tell every writer that data keys were destroyed (the caller holds the sequencer lock)."""
    session.execute(
        update(LogState)
        .where(LogState.id == SEQUENCER_ROW)
        .values(keys_epoch=LogState.keys_epoch + 1)
    )


def lock_for_writing_first(session: Session) -> Sequencer | None:
    """On SQLite, take the database's write lock before the transaction's first read.

    A deferred SQLite transaction that reads, then writes after another writer
    committed, fails at once with "database is locked" (SQLITE_BUSY_SNAPSHOT:
    its snapshot is stale) rather than waiting on the busy timeout. SQLite has
    one writer at a time anyway, so a read-then-write transaction gives nothing
    up by queueing for the lock first, as the appenders do (`lock_sequencer`).
    PostgreSQL reads under MVCC without it. Returns the sequencer row it locked (None on
    PostgreSQL), for `append` to use instead of locking again.
    """
    bind = session.get_bind()
    if bind.dialect.name == "sqlite":
        return lock_sequencer(session)
    return None


def tree_size(session: Session) -> int:
    """The number of leaves committed (no lock)."""
    size = session.scalar(select(LogState.size).where(LogState.id == SEQUENCER_ROW))
    if size is None:
        raise CorruptStorageError("the log_state row is missing; run the audit migrations")
    return size


def append(
    session: Session,
    leaves: Sequence[NewLeaf],
    *,
    now: datetime,
    locked: Sequencer | None = None,
) -> Appended:
    """Append ``leaves`` in order, skipping any whose decision or event id is already logged.

    Runs in the caller's transaction (which then holds the sequencer lock), so
    the caller can write rows that refer to the new indexes before committing.
    ``locked`` is the sequencer row when the transaction already holds its lock
    (`lock_for_writing_first`).
    """
    sequencer = locked if locked is not None else lock_sequencer(session)
    old_size = sequencer.size
    seen = _existing_ids(session, leaves)
    indexes: list[int | None] = []
    fresh: list[tuple[int, NewLeaf]] = []
    for leaf in leaves:
        key = leaf.decision_id if leaf.decision_id is not None else f"\0{leaf.event_id}"
        if key in seen:
            indexes.append(None)
            continue
        seen.add(key)
        index = old_size + len(fresh)
        indexes.append(index)
        fresh.append((index, leaf))
    if not fresh:
        return Appended(old_size, old_size, tuple(indexes), sequencer.keys_epoch)

    leaf_hashes = [merkle.leaf_hash(leaf.entry) for _, leaf in fresh]
    nodes = _completed_nodes(session, old_size, leaf_hashes)
    utc_now = now.astimezone(UTC)
    leaf_rows: list[tuple[Any, ...]] = []
    control_rows: list[tuple[Any, ...]] = []
    for (index, leaf), digest in zip(fresh, leaf_hashes, strict=True):
        time = leaf.time.astimezone(UTC)
        leaf_rows.append(
            (index, digest, leaf.entry, leaf.kind, leaf.decision_id, leaf.event_id, leaf.tenant,
             time, leaf.allowed, utc_now, leaf.content_mac)
        )  # fmt: skip
        control_rows.extend(
            (control, index, leaf.kind, time, leaf.allowed) for control in set(leaf.controls)
        )
    bulk_insert(session, _LEAVES, _LEAF_COLUMNS, leaf_rows)
    bulk_insert(session, _LEAF_CONTROLS, _LEAF_CONTROL_COLUMNS, control_rows)
    bulk_insert(session, _NODES, _NODE_COLUMNS, nodes)
    bulk_insert(session, _TILES, _TILE_COLUMNS, _full_tiles(session, old_size, leaf_hashes, nodes))
    new_size = old_size + len(fresh)
    session.execute(update(LogState).where(LogState.id == SEQUENCER_ROW).values(size=new_size))
    return Appended(old_size, new_size, tuple(indexes), sequencer.keys_epoch)


def _existing_ids(session: Session, leaves: Sequence[NewLeaf]) -> set[str]:
    """Decision ids, and event ids prefixed with NUL, of ``leaves`` that are already logged."""
    decision_ids = sorted({leaf.decision_id for leaf in leaves if leaf.decision_id is not None})
    event_ids = sorted({leaf.event_id for leaf in leaves if leaf.event_id is not None})
    found: set[str] = set()
    for value in _present(session, Leaf.decision_id, decision_ids):
        found.add(value)
    for value in _present(session, Leaf.event_id, event_ids):
        found.add(f"\0{value}")
    return found


def _present(
    session: Session, column: InstrumentedAttribute[str | None], values: Sequence[str]
) -> Iterator[str]:
    """Which of ``values`` the unique ``column`` holds.

    PostgreSQL gets one array parameter (``= ANY(...)``), which it plans far
    faster than a thousand-item ``IN`` list; other databases chunked ``IN``.
    """
    if not values:
        return
    if session.get_bind().dialect.name == "postgresql":
        parameter = bindparam("ids", list(values), type_=postgresql.ARRAY(String))
        queries = [select(column).where(column == any_(parameter))]
    else:
        queries = [select(column).where(column.in_(chunk)) for chunk in _chunks(values)]
    for query in queries:
        yield from (value for value in session.scalars(query) if value is not None)


def _completed_nodes(
    session: Session, old_size: int, leaf_hashes: Sequence[bytes]
) -> list[tuple[int, int, bytes]]:
    """Every (level >= 1, index, hash) subtree that the new leaves complete.

    Starts from the right edge of the old tree, the complete subtrees that
    make up ``old_size`` (one per set bit), and folds the new leaves in.
    """
    stack = _right_edge(session, old_size)
    completed: list[tuple[int, int, bytes]] = []
    next_index = old_size
    for digest in leaf_hashes:
        level, index, value = 0, next_index, digest
        next_index += 1
        while stack and stack[-1][0] == level:
            _, left_index, left = stack.pop()
            level, index, value = level + 1, left_index >> 1, merkle.node_hash(left, value)
            completed.append((level, index, value))
        stack.append((level, index, value))
    return completed


def _full_tiles(
    session: Session,
    old_size: int,
    leaf_hashes: Sequence[bytes],
    nodes: Sequence[tuple[int, int, bytes]],
) -> list[tuple[int, int, bytes]]:
    """(level, index, hashes) of every tile the new leaves complete, for `stored_tile`.

    Tile ``i`` of level ``L`` is complete when the node of tree level ``8L + 8``
    and index ``i`` is. Its hashes come from this batch where it has them (so an
    intake of 256 leaves reads nothing back) and from the tables otherwise.
    """
    completed = [
        (level // TILE_HEIGHT - 1, index) for level, index, _ in nodes if level % TILE_HEIGHT == 0
    ]
    if not completed:
        return []
    fresh = {(0, old_size + offset): digest for offset, digest in enumerate(leaf_hashes)} | {
        (level, index): digest for level, index, digest in nodes if level % TILE_HEIGHT == 0
    }
    tiles = []
    for tile_level, tile_index in completed:
        tree_level = tile_level * TILE_HEIGHT
        first = tile_index * TILE_WIDTH
        held = [fresh.get((tree_level, first + i)) for i in range(TILE_WIDTH)]
        missing = [first + i for i, digest in enumerate(held) if digest is None]
        if missing:
            stored = dict(hashes_at(session, tree_level, missing[0], missing[-1] + 1))
            held = [d if d is not None else stored.get(first + i) for i, d in enumerate(held)]
        if any(digest is None for digest in held):
            raise CorruptStorageError(
                f"tile {tile_level}/{tile_index}: stored hashes are missing; "
                "run `nexus-policy audit verify`"
            )
        tiles.append((tile_level, tile_index, b"".join(d for d in held if d is not None)))
    return tiles


_LEVEL0 = (
    select(_LEAVES.c.leaf_index, _LEAVES.c.leaf_hash)
    .where(_LEAVES.c.leaf_index >= bindparam("first"), _LEAVES.c.leaf_index < bindparam("end"))
    .order_by(_LEAVES.c.leaf_index)
)
_LEVEL_N = (
    select(_NODES.c.node_index, _NODES.c.hash)
    .where(
        _NODES.c.level == bindparam("level"),
        _NODES.c.node_index >= bindparam("first"),
        _NODES.c.node_index < bindparam("end"),
    )
    .order_by(_NODES.c.node_index)
)


def hashes_at(session: Session, level: int, first: int, end: int) -> list[tuple[int, bytes]]:
    """(index, hash) of tree level ``level`` over ``[first, end)`` in index order: leaf hashes
    at level 0, stored nodes above.

    Core statements on the session's connection: tiles are read on every proof from
    tiles, and the ORM's per-row machinery would cost more than the read.
    """
    connection = session.connection()
    if level == 0:
        rows = connection.execute(_LEVEL0, {"first": first, "end": end})
    else:
        rows = connection.execute(_LEVEL_N, {"level": level, "first": first, "end": end})
    return [(index, digest) for index, digest in rows.tuples()]


_STORED_TILE = select(_TILES.c.hashes).where(
    _TILES.c.level == bindparam("level"), _TILES.c.tile_index == bindparam("index")
)


def stored_tile(session: Session, level: int, index: int) -> bytes | None:
    """The full tile ``index`` of tile level ``level`` if it was stored whole, else None.

    A Core statement on the session's connection: it runs for every tile a proof
    from tiles reads, where the ORM's per-call machinery costs more than the read.
    """
    hashes: bytes | None = (
        session.connection().execute(_STORED_TILE, {"level": level, "index": index}).scalar()
    )
    return hashes


def _right_edge(session: Session, size: int) -> list[tuple[int, int, bytes]]:
    """The complete subtrees making up a tree of ``size``, left to right: (level, index, hash)."""
    spans: list[tuple[int, int]] = []
    start = 0
    for level in reversed(range(size.bit_length())):
        if size >> level & 1:
            spans.append((start, start + (1 << level)))
            start += 1 << level
    hashes = _read_subtrees(session, spans)
    return [
        ((end - start).bit_length() - 1, start // (end - start), hashes[(start, end)])
        for start, end in spans
    ]


def _read_subtrees(
    session: Session, spans: Iterable[tuple[int, int]]
) -> dict[tuple[int, int], bytes]:
    """Hashes of complete aligned subtrees ``[start, end)``, in at most two queries."""
    leaf_spans: dict[int, tuple[int, int]] = {}
    node_spans: dict[tuple[int, int], tuple[int, int]] = {}
    for start, end in spans:
        width = end - start
        if width == 1:
            leaf_spans[start] = (start, end)
        else:
            level = width.bit_length() - 1
            node_spans[(level, start >> level)] = (start, end)
    found: dict[tuple[int, int], bytes] = {}
    if leaf_spans:
        rows = session.execute(
            select(Leaf.leaf_index, Leaf.leaf_hash).where(Leaf.leaf_index.in_(list(leaf_spans)))
        )
        for index, digest in rows:
            found[leaf_spans[index]] = digest
    if node_spans:
        rows = session.execute(
            select(Node.level, Node.node_index, Node.hash).where(
                tuple_(Node.level, Node.node_index).in_(list(node_spans))
            )
        )
        for level, index, digest in rows:
            found[node_spans[(level, index)]] = digest
    missing = [span for span in (*leaf_spans.values(), *node_spans.values()) if span not in found]
    if missing:
        start, end = missing[0]
        raise CorruptStorageError(
            f"the stored hash of leaves [{start}, {end}) is missing; the log's tables were "
            "altered outside the log: run `nexus-policy audit verify`"
        )
    return found


def _prefetched(session: Session, compute: Callable[[merkle.SubtreeHasher], _T]) -> _T:
    """Run a merkle computation with every subtree it needs fetched in one round."""
    wanted: list[tuple[int, int]] = []

    def record(start: int, end: int, /) -> bytes:
        wanted.append((start, end))
        return _PLACEHOLDER

    compute(record)
    hashes = _read_subtrees(session, wanted)
    return compute(lambda start, end, /: hashes[(start, end)])


def root_hash(session: Session, size: int) -> bytes:
    """The root of the first ``size`` leaves (`merkle.EMPTY_ROOT` for 0)."""
    return _prefetched(session, lambda hasher: merkle.root_hash(size, hasher))


def inclusion_proof(session: Session, index: int, size: int) -> tuple[bytes, ...]:
    """RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size``."""
    _check_within(session, size)
    return _prefetched(session, lambda hasher: merkle.inclusion_proof(index, size, hasher))


def consistency_proof(session: Session, old_size: int, new_size: int) -> tuple[bytes, ...]:
    """RFC 9162 consistency proof from ``old_size`` to ``new_size``."""
    _check_within(session, new_size)
    return _prefetched(session, lambda hasher: merkle.consistency_proof(old_size, new_size, hasher))


def _check_within(session: Session, size: int) -> None:
    current = tree_size(session)
    if size > current:
        raise merkle.InvalidTreeSizeError(f"tree size {size} exceeds the log's size {current}")


def leaf_at(session: Session, index: int) -> StoredLeaf | None:
    row = session.get(Leaf, index)
    return None if row is None else _stored(row)


def leaf_index_of_decision(session: Session, decision_id: str) -> int | None:
    index: int | None = session.scalar(
        select(Leaf.leaf_index).where(Leaf.decision_id == decision_id)
    )
    return index


def leaves_for_control(
    session: Session,
    control: str,
    since: datetime,
    until: datetime,
    *,
    below: int,
    tenant: str | None = None,
) -> Iterator[StoredLeaf]:
    """Leaves evidencing ``control`` with ``since <= time < until`` and index < ``below``.

    With ``tenant``, only that tenant's decisions and events, and events of no
    tenant (the control plane's changes); streamed in index order.
    """
    query = (
        select(Leaf)
        .join(LeafControl, LeafControl.leaf_index == Leaf.leaf_index)
        .where(
            LeafControl.control == control,
            LeafControl.time >= since.astimezone(UTC),
            LeafControl.time < until.astimezone(UTC),
            Leaf.leaf_index < below,
        )
        .order_by(Leaf.leaf_index)
        .execution_options(yield_per=500)
    )
    if tenant is not None:
        query = query.where(
            or_(Leaf.tenant == tenant, and_(Leaf.kind == "event", Leaf.tenant.is_(None)))
        )
    for row in session.scalars(query):
        yield _stored(row)


def inclusion_proofs(
    session: Session, indexes: Sequence[int], size: int
) -> dict[int, tuple[bytes, ...]]:
    """Inclusion proofs of many leaves in tree ``size``: every subtree fetched in one round.

    Proofs of nearby leaves share most of their hashes, so a sorted batch of
    a few hundred costs one query of a few thousand distinct subtrees.
    """
    _check_within(session, size)
    wanted: list[tuple[int, int]] = []

    def record(start: int, end: int, /) -> bytes:
        wanted.append((start, end))
        return _PLACEHOLDER

    for index in indexes:
        merkle.inclusion_proof(index, size, record)
    hashes = _read_subtrees(session, set(wanted))
    return {
        index: merkle.inclusion_proof(index, size, lambda s, e, /: hashes[(s, e)])
        for index in indexes
    }


def _stored(row: Leaf) -> StoredLeaf:
    return StoredLeaf(
        index=row.leaf_index,
        leaf_hash=row.leaf_hash,
        entry=row.entry,
        kind=row.kind,
        decision_id=row.decision_id,
        event_id=row.event_id,
        time=as_utc(row.time),
        allowed=row.allowed,
    )


# --- checkpoints -------------------------------------------------------------


def save_checkpoint(session: Session, size: int, root: bytes, note: str, *, now: datetime) -> None:
    """Store a signed checkpoint; a second one for the same size is ignored."""
    dialect = session.get_bind().dialect.name
    values = {"size": size, "root_hash": root, "note": note, "created_at": now.astimezone(UTC)}
    if dialect == "postgresql":
        session.execute(postgresql.insert(CheckpointRow).values(values).on_conflict_do_nothing())
    elif dialect == "sqlite":
        session.execute(sqlite.insert(CheckpointRow).values(values).on_conflict_do_nothing())
    elif session.get(CheckpointRow, size) is None:
        session.execute(insert(CheckpointRow).values(values))


def latest_checkpoint(session: Session) -> CheckpointRow | None:
    return session.scalars(
        select(CheckpointRow).order_by(CheckpointRow.size.desc()).limit(1)
    ).first()


def checkpoint_at(session: Session, size: int) -> CheckpointRow | None:
    return session.get(CheckpointRow, size)


# --- bulk writes -------------------------------------------------------------


def bulk_insert(
    session: Session, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Insert ``rows`` (values in ``columns`` order) into ``table`` in the session's transaction.

    PostgreSQL gets a binary ``COPY ... FROM STDIN``, several times faster
    than a multi-row INSERT or a text COPY for intake-sized batches (values
    are encoded by psycopg's C dumpers for the columns' types); other
    databases an executemany.
    """
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        raw = session.connection().connection.driver_connection
        names = ", ".join(f'"{name}"' for name in columns)
        statement = f"COPY {table.name} ({names}) FROM STDIN (FORMAT BINARY)"
        with raw.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[union-attr]
            copy.set_types(_copy_types(table, tuple(columns)))
            for row in rows:
                copy.write_row(row)
        return
    session.execute(insert(table), [dict(zip(columns, row, strict=True)) for row in rows])


_COPY_TYPES = {
    "BIGINT": "int8",
    "INTEGER": "int4",
    "SMALLINT": "int2",
    "BYTEA": "bytea",
    "VARCHAR": "text",
    "TEXT": "text",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "BOOLEAN": "bool",
}


@functools.cache
def _copy_types(table: Table, columns: tuple[str, ...]) -> list[str]:
    """The PostgreSQL type of each column, as psycopg's binary COPY needs them."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    names = []
    for name in columns:
        compiled = table.columns[name].type.compile(dialect=dialect).split("(", 1)[0]
        names.append(_COPY_TYPES[compiled])
    return names


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), _LOOKUP_CHUNK):
        yield values[start : start + _LOOKUP_CHUNK]


def decision_leaves(
    session: Session,
    since: datetime,
    until: datetime,
    *,
    below: int,
    tenant: str | None = None,
) -> Iterator[StoredLeaf]:
    """Decision leaves with ``since <= time < until`` and index < ``below``, in index order."""
    query = (
        select(Leaf)
        .where(
            Leaf.kind == "decision",
            Leaf.time >= since.astimezone(UTC),
            Leaf.time < until.astimezone(UTC),
            Leaf.leaf_index < below,
        )
        .order_by(Leaf.leaf_index)
        .execution_options(yield_per=500)
    )
    if tenant is not None:
        query = query.where(Leaf.tenant == tenant)
    for row in session.scalars(query):
        yield _stored(row)
