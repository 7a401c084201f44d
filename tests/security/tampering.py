"""What an insider with database access (and nothing else) can do to the log's tables."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import orjson
from sqlalchemy import create_engine, text

from nexus_audit import merkle


def rewrite_leaf(url: str, index: int, change: Callable[[dict[str, object]], None]) -> None:
    """Rewrite leaf ``index``'s entry, its hash, and rebuild every stored node to match."""
    engine = create_engine(url)
    with engine.begin() as db:
        entry = db.execute(
            text("SELECT entry FROM leaves WHERE leaf_index = :i"), {"i": index}
        ).scalar_one()
        document = orjson.loads(entry)
        change(document)
        forged = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
        db.execute(
            text("UPDATE leaves SET entry = :e, leaf_hash = :h WHERE leaf_index = :i"),
            {"e": forged, "h": merkle.leaf_hash(forged), "i": index},
        )
        hashes = [
            row[0] for row in db.execute(text("SELECT leaf_hash FROM leaves ORDER BY leaf_index"))
        ]
        db.execute(text("DELETE FROM nodes"))
        level, current = 0, hashes
        while len(current) > 1:
            level += 1
            parents = [
                merkle.node_hash(current[i], current[i + 1]) for i in range(0, len(current) - 1, 2)
            ]
            for position, value in enumerate(parents):
                db.execute(
                    text("INSERT INTO nodes (level, node_index, hash) VALUES (:l, :n, :h)"),
                    {"l": level, "n": position, "h": value},
                )
            current = parents
    engine.dispose()


def delete_checkpoints_above(url: str, size: int) -> int:
    engine = create_engine(url)
    with engine.begin() as db:
        count = db.execute(text("DELETE FROM checkpoints WHERE size > :s"), {"s": size}).rowcount
    engine.dispose()
    return int(count)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
