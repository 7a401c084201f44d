"""The checkpoint journal: an append-only copy of every signed checkpoint, outside the database.

Someone with write access to the audit database alone could rewrite leaves,
rebuild ``nodes`` and delete the checkpoints that covered the old tree; the
log key would then sign a fresh checkpoint over the rewritten tree. The
journal is what stops that: before a checkpoint is signed, it is proven
consistent with the newest checkpoint in the journal, and `verify_log`
checks every journal checkpoint against the tree recomputed from the leaves.

The file is JSON lines, ``{"size": n, "note": "<signed note>"}``, opened with
``O_APPEND`` and fsynced after every record; a later record for the same size
(the checkpoint with its witnesses' cosignatures) supersedes the earlier one.
It lives on the audit host's filesystem (``NEXUS_AUDIT_CHECKPOINT_JOURNAL``),
so the database's operator cannot touch it; make it append-only at the
filesystem level (``chattr +a``) and ship it off the host with the logs for
more. A torn last line (a crash mid-write) is ignored and overwritten by the
next record's leading newline.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from nexus_contract.errors import NexusError

__all__ = ["CheckpointJournal", "JournalError", "JournalRecord"]

log = logging.getLogger("nexus.audit")

_TAIL_BYTES = 256 * 1024
"""How far back from the end `latest` reads: far more than one record."""


class JournalError(NexusError):
    """The checkpoint journal cannot be read or written."""


@dataclass(frozen=True)
class JournalRecord:
    size: int
    note: str


class CheckpointJournal:
    """Append-only checkpoint copy at ``path``. Thread-safe within a process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._latest: JournalRecord | None = None
        self._loaded = False

    def append(self, size: int, note: str) -> None:
        """Append a record and fsync it before returning."""
        line = orjson.dumps({"size": size, "note": note}) + b"\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            except OSError as exc:
                raise JournalError(
                    f"{self.path}: cannot open the checkpoint journal: {exc}"
                ) from exc
            try:
                if os.fstat(fd).st_size and not self._ends_with_newline():
                    line = b"\n" + line
                os.write(fd, line)
                os.fsync(fd)
            except OSError as exc:
                raise JournalError(f"{self.path}: cannot append a checkpoint: {exc}") from exc
            finally:
                os.close(fd)
            if self._latest is None or size >= self._latest.size:
                self._latest = JournalRecord(size, note)
            self._loaded = True

    def latest(self) -> JournalRecord | None:
        """The newest record (largest size; for equal sizes the last written)."""
        with self._lock:
            if not self._loaded:
                self._latest = self._read_tail()
                self._loaded = True
            return self._latest

    def reload(self) -> None:
        """Forget the cached newest record: the next `latest` reads the file again.

        A replica taking the signer over calls this, since the file may have been
        appended to (or restored) while it was not the signer.
        """
        with self._lock:
            self._latest = None
            self._loaded = False

    def exists(self) -> bool:
        return self.path.exists()

    def records(self) -> Iterator[JournalRecord]:
        """Every complete record in file order (streamed)."""
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise JournalError(f"{self.path}: cannot read the checkpoint journal: {exc}") from exc
        with handle:
            for number, raw in enumerate(handle, start=1):
                record = _record(raw)
                if record is None:
                    if raw.strip():
                        log.warning(
                            "checkpoint journal line is not a record (a torn write?)",
                            extra={"journal": str(self.path), "line": number},
                        )
                    continue
                yield record

    def by_size(self) -> dict[int, str]:
        """The last note written for each size (bounded by the number of checkpoints)."""
        found: dict[int, str] = {}
        for record in self.records():
            found[record.size] = record.note
        return found

    def _read_tail(self) -> JournalRecord | None:
        try:
            with self.path.open("rb") as handle:
                handle.seek(0, os.SEEK_END)
                end = handle.tell()
                start = max(0, end - _TAIL_BYTES)
                handle.seek(start)
                tail = handle.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise JournalError(f"{self.path}: cannot read the checkpoint journal: {exc}") from exc
        best: JournalRecord | None = None
        lines = tail.split(b"\n")
        if start > 0:
            lines = lines[1:]
        for raw in lines:
            record = _record(raw)
            if record is not None and (best is None or record.size >= best.size):
                best = record
        if best is None and start > 0:
            raise JournalError(f"{self.path}: no complete record in its last {_TAIL_BYTES} bytes")
        return best

    def _ends_with_newline(self) -> bool:
        with contextlib.suppress(OSError), self.path.open("rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"
        return True


def _record(raw: bytes) -> JournalRecord | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict):
        return None
    size, note = document.get("size"), document.get("note")
    if not isinstance(size, int) or size < 0 or not isinstance(note, str):
        return None
    return JournalRecord(size, note)
