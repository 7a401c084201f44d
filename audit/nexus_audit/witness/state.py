"""The witness's own storage: per log origin, the latest checkpoint it cosigned.

One SQLite file of the witness's own (never the log's database). An update
checks the stored size and writes the new checkpoint in one ``BEGIN
IMMEDIATE`` transaction, committed with ``synchronous=FULL`` before the
witness signs, so two racing submissions can never roll the witness back
(the race C2SP tlog-witness warns about) and a crash never forgets a size it
has cosigned.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WitnessStore", "Witnessed"]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS witnessed (
    origin TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    root_hash BLOB NOT NULL,
    note TEXT NOT NULL,
    updated_at REAL NOT NULL
)
"""


@dataclass(frozen=True)
class Witnessed:
    origin: str
    size: int
    root_hash: bytes
    note: str


class WitnessStore:
    """Latest cosigned checkpoint per origin, in the SQLite file at ``path``."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=30
        )
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=FULL")
        self._connection.execute(_SCHEMA)

    def get(self, origin: str) -> Witnessed | None:
        with self._lock:
            row = self._connection.execute(
                "SELECT origin, size, root_hash, note FROM witnessed WHERE origin = ?", (origin,)
            ).fetchone()
        return None if row is None else Witnessed(row[0], row[1], row[2], row[3])

    def update(
        self, origin: str, decide: Callable[[Witnessed | None], Witnessed | None]
    ) -> Witnessed | None:
        """Atomically read ``origin``'s state, let ``decide`` check it, store what it returns.

        ``decide`` raises to refuse (nothing is written) or returns the new
        state (None: keep the old one). The write is durable when this returns.
        """
        with self._lock:
            cursor = self._connection.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                row = cursor.execute(
                    "SELECT origin, size, root_hash, note FROM witnessed WHERE origin = ?",
                    (origin,),
                ).fetchone()
                current = None if row is None else Witnessed(row[0], row[1], row[2], row[3])
                new = decide(current)
                if new is not None:
                    cursor.execute(
                        "INSERT INTO witnessed (origin, size, root_hash, note, updated_at) "
                        "VALUES (?, ?, ?, ?, julianday('now')) ON CONFLICT(origin) DO UPDATE "
                        "SET size = excluded.size, root_hash = excluded.root_hash, "
                        "note = excluded.note, updated_at = excluded.updated_at",
                        (new.origin, new.size, new.root_hash, new.note),
                    )
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")
            return new if new is not None else current

    def close(self) -> None:
        with self._lock:
            self._connection.close()
