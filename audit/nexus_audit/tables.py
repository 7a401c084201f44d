"""The audit log's database schema (SQLAlchemy 2), one class per table.

Alembic migrations in ``migrations/`` create these tables; the application
never calls ``create_all``. Times are UTC.

Only ``leaves.entry`` (and the checkpoints' signed notes) are evidence: every
other column of ``leaves``, and all of ``leaf_controls``, is derived from the
entry for lookups, and ``nodes`` caches hashes that `nexus_audit.verify`
recomputes. Rows of ``leaves``, ``nodes`` and ``checkpoints`` are only ever
inserted; payload rows are deleted by the retention job, and data keys are
destroyed in place by erasure.

The intake tables (``leaf_controls``, ``payloads``) declare no foreign keys:
PostgreSQL checks each with a trigger per inserted row, which cost an eighth
of intake throughput, and their rows are only ever written by
`nexus_audit.storage.append` and `nexus_audit.payloads.PayloadVault.seal` in
the same transaction as the leaf (and data key) they belong to.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "SEQUENCER_ROW",
    "Base",
    "CheckpointRow",
    "ControlDay",
    "DataKey",
    "DeadLetter",
    "DecisionFacet",
    "DecisionRule",
    "ErasureRequest",
    "Leaf",
    "LeafControl",
    "LogSecret",
    "LogState",
    "Node",
    "Payload",
    "SearchState",
    "StoredTile",
    "WitnessSize",
]

SEQUENCER_ROW = 1
"""The id of the single ``log_state`` row every append locks."""

# SQLite makes only an INTEGER PRIMARY KEY the rowid; BIGINT would add a second index.
_Index = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class LogState(Base):
    """The sequencer: one row (id 1) holding the tree size, locked by every append."""

    __tablename__ = "log_state"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)
    keys_epoch: Mapped[int] = mapped_column(BigInteger, default=0)
    """Bumped whenever data keys are destroyed, so every writer drops its cache of live keys."""


class Leaf(Base):
    """One log entry: leaf ``leaf_index`` of the tree, hash SHA-256(0x00 || entry)."""

    __tablename__ = "leaves"

    leaf_index: Mapped[int] = mapped_column(_Index, primary_key=True, autoincrement=False)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary)
    entry: Mapped[bytes] = mapped_column(LargeBinary)
    """Canonical JSON (`nexus_audit.entry`): the exact bytes the leaf hash covers."""
    kind: Mapped[str] = mapped_column(String(8))
    """'decision' or 'event'."""
    decision_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    event_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    tenant: Mapped[str | None] = mapped_column(String(160))
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    """When the decision was made or the event happened (the entry's ``time``)."""
    allowed: Mapped[bool | None] = mapped_column(Boolean)
    appended_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    content_mac: Mapped[bytes | None] = mapped_column(LargeBinary)
    """HMAC (under the log secret) of what the enforcer sent for a decision: a repeated
    ``decision_id`` with other content is refused. Dropped when the tenant is erased."""


class Node(Base):
    """Hash of the complete subtree of 2**level leaves starting at node_index * 2**level.

    Only levels >= 1: level 0 is ``leaves.leaf_hash``. Written in the same
    transaction as the leaf that completes the subtree, never changed.
    """

    __tablename__ = "nodes"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    node_index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary)


class StoredTile(Base):
    """A full C2SP tile, kept whole: 256 hashes of tree level 8 * level, ``hashes`` 8,192 bytes.

    Derived from ``leaves`` (level 0) or ``nodes`` in the transaction whose leaf completes the
    tile, never changed, and checked by `nexus_audit.verify`. A tile is served (and a proof
    from tiles computed) with one row read instead of 256; a log written before these rows
    existed falls back to the hashes it is made of. Partial tiles are never stored.
    """

    __tablename__ = "tiles"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    tile_index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hashes: Mapped[bytes] = mapped_column(LargeBinary)


class LeafControl(Base):
    """A leaf is evidence for ``control`` (qualified id); denormalised for coverage queries."""

    __tablename__ = "leaf_controls"

    control: Mapped[str] = mapped_column(String(64), primary_key=True)
    leaf_index: Mapped[int] = mapped_column(_Index, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(8))
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    allowed: Mapped[bool | None] = mapped_column(Boolean)

    __table_args__ = (
        Index("ix_leaf_controls_control_time", "control", "time"),
        Index("ix_leaf_controls_control_kind", "control", "kind", "leaf_index", "time"),
    )


class DataKey(Base):
    """An AES-256 data key for one tenant (subject NULL) or one subject in a tenant.

    ``wrapped_key`` is the key wrapped by the master key (`nexus_audit.envelope`).
    Erasure deletes the row and every payload under it, then compacts the
    database so no copy of either survives in free pages or the WAL.
    """

    __tablename__ = "data_keys"

    key_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(160))
    subject: Mapped[str | None] = mapped_column(String(300))
    wrapped_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    destroyed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_data_keys_tenant_subject", "tenant", "subject"),)


class Payload(Base):
    """The full payload of a leaf, AES-GCM encrypted under ``key_id``.

    The plaintext is the canonical JSON the leaf's ``payload_commitment``
    commits to with ``salt``. Erasure and the retention job delete the row.
    """

    __tablename__ = "payloads"

    leaf_index: Mapped[int] = mapped_column(_Index, primary_key=True, autoincrement=False)
    tenant: Mapped[str] = mapped_column(String(160))
    subject: Mapped[str | None] = mapped_column(String(300))
    key_id: Mapped[str] = mapped_column(String(36))
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    salt: Mapped[bytes | None] = mapped_column(LargeBinary)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    """The leaf's time; retention counts from it."""

    __table_args__ = (
        Index("ix_payloads_tenant_time", "tenant", "time"),
        Index("ix_payloads_key_id", "key_id"),
    )


class CheckpointRow(Base):
    """A signed C2SP checkpoint of the tree at ``size``; the note is served verbatim."""

    __tablename__ = "checkpoints"

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary)
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    cosigned_note: Mapped[str | None] = mapped_column(Text)
    """The same note with the witnesses' ``cosignature/v1`` lines, once collected."""


class DecisionFacet(Base):
    """Search fields of one decision leaf, derived from its entry (and payload) after append.

    Written by `nexus_audit.search.index_decisions`, which follows the log a
    batch at a time; never read as evidence. ``tool`` comes from the route
    (``/v1/tools/{tool}:invoke``).
    """

    __tablename__ = "decision_facets"

    leaf_index: Mapped[int] = mapped_column(_Index, primary_key=True, autoincrement=False)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    tenant: Mapped[str] = mapped_column(String(160))
    allowed: Mapped[bool] = mapped_column(Boolean)
    route: Mapped[str] = mapped_column(String(512))
    tool: Mapped[str | None] = mapped_column(String(128))
    region: Mapped[str] = mapped_column(String(64))
    http_status: Mapped[int | None] = mapped_column(SmallInteger)

    __table_args__ = (
        Index("ix_decision_facets_time", "time"),
        Index("ix_decision_facets_tenant", "tenant", "leaf_index"),
        Index("ix_decision_facets_route", "route", "leaf_index"),
        Index("ix_decision_facets_tool", "tool", "leaf_index"),
    )


class DecisionRule(Base):
    """A rule (a reason's ``rule``, a policy identifier) that decided a decision leaf.

    Read from the payload when the indexer reaches the leaf; only the rule
    name is kept, never payload content, so erasure leaves nothing here to erase.
    """

    __tablename__ = "decision_rules"

    rule: Mapped[str] = mapped_column(String(200), primary_key=True)
    leaf_index: Mapped[int] = mapped_column(_Index, primary_key=True, autoincrement=False)


class SearchState(Base):
    """How far the decision indexer has read the log: every leaf below ``indexed_size``."""

    __tablename__ = "search_state"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    indexed_size: Mapped[int] = mapped_column(BigInteger)


class ControlDay(Base):
    """How many indexed leaves evidenced ``control`` on ``day`` (UTC), by outcome.

    ``outcome`` is ``allowed`` or ``denied`` for decisions, ``event`` for
    events. Kept by the decision indexer, so the console counts a period's
    evidence per control from a few rows per day instead of every leaf.
    """

    __tablename__ = "control_days"

    control: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(8), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class WitnessSize(Base):
    """The latest tree size a witness cosigned for this log (the ``old`` it expects next)."""

    __tablename__ = "witness_sizes"

    witness: Mapped[str] = mapped_column(String(200), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LogSecret(Base):
    """A secret of the log (e.g. the salt of tenant hashes), wrapped by the master key."""

    __tablename__ = "log_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)


class ErasureRequest(Base):
    """A two-person erasure: requested by one principal, approved (and run) by another.

    ``subject`` is needed until the erasure runs, then cleared.
    """

    __tablename__ = "erasure_requests"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(160))
    subject: Mapped[str | None] = mapped_column(String(300))
    scope: Mapped[str] = mapped_column(String(8))
    reference: Mapped[str | None] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(12))
    requested_by: Mapped[str] = mapped_column(String(200))
    requester_id: Mapped[str | None] = mapped_column(String(64))
    """The requesting principal's id (its token), compared with the approver's."""
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    keys_destroyed: Mapped[int | None] = mapped_column(Integer)
    payloads_erased: Mapped[int | None] = mapped_column(Integer)


class DeadLetter(Base):
    """A control-plane outbox event that failed validation, kept for repair (not a leaf)."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(_Index, primary_key=True, autoincrement=True)
    source_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    event_type: Mapped[str] = mapped_column(Text)
    error: Mapped[str] = mapped_column(Text)
    record: Mapped[str] = mapped_column(Text)
    """The outbox row as JSON, as it failed."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
