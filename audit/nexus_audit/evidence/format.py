"""The evidence archive's format: its members, and how an archive is written and read.

Members are written in a fixed order with zeroed owners and times, so the
same content gives the same bytes; reading refuses anything but regular files
of bounded size (see `nexus_audit.evidence` for what each member holds).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from nexus_audit.payloads import PayloadStatus
from nexus_contract.errors import NexusError

__all__ = [
    "ARCHIVE_FORMAT",
    "CHECKPOINT_FILE",
    "CONTENT_FILES",
    "CONTROLS_FILE",
    "EXPORT_EVENT",
    "EXPORT_EVENT_FILE",
    "INLINE_STATUS",
    "LOG_KEY_FILE",
    "MANIFEST_FILE",
    "OSCAL_FILE",
    "POLICY_FILE",
    "PROOFS_DIR",
    "RECORDS_FILE",
    "REPORT_FILE",
    "ArchiveWriter",
    "EvidenceError",
    "RecordCounts",
    "json_file",
    "proof_name",
    "read_archive",
    "sha256_hex",
    "tar_gz",
]

ARCHIVE_FORMAT = "nexus-evidence/v1"
EXPORT_EVENT = "evidence.exported"

CHECKPOINT_FILE = "checkpoint.txt"
LOG_KEY_FILE = "log-key.pub"
CONTROLS_FILE = "controls.json"
RECORDS_FILE = "records.jsonl"
REPORT_FILE = "report.html"
OSCAL_FILE = "assessment-results.json"
EXPORT_EVENT_FILE = "export-event.json"
MANIFEST_FILE = "manifest.json"
POLICY_FILE = "witness-policy.txt"
"""The C2SP tlog-policy (witnesses and quorum) the checkpoint is cosigned under."""
PROOFS_DIR = "proofs/"

CONTENT_FILES = (RECORDS_FILE, CONTROLS_FILE, REPORT_FILE, OSCAL_FILE)
"""Files whose SHA-256 the export event records in the log."""


_MAX_MEMBER_BYTES = 1 << 31
INLINE_STATUS = "inline"


class EvidenceError(NexusError):
    """An evidence archive does not verify. ``file`` and ``record`` say where."""

    def __init__(self, file: str, problem: str, *, record: str | None = None) -> None:
        where = file if record is None else f"{file}, {record}"
        super().__init__(f"{where}: {problem}")
        self.file = file
        self.record = record
        self.problem = problem


def json_file(document: Any) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def proof_name(index: int) -> str:
    return f"{PROOFS_DIR}{index}.tlog-proof"


def tar_gz(members: Iterable[tuple[str, bytes]]) -> bytes:
    """A reproducible tar.gz: members in the given order, no owners, times or modes of ours."""
    raw = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


class ArchiveWriter:
    """A reproducible tar.gz written member by member to a file, each member's SHA-256 returned.

    Memory holds one member at a time (or a file's chunk): the archive of any
    number of records streams to disk.
    """

    def __init__(self, path: Path) -> None:
        self._raw = path.open("wb")
        self._gzip = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0)
        self._tar = tarfile.open(fileobj=self._gzip, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, *_: object) -> None:
        self._tar.close()
        self._gzip.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()

    def add_bytes(self, name: str, data: bytes) -> str:
        self._tar.addfile(_info(name, len(data)), io.BytesIO(data))
        self._forget()
        return sha256_hex(data)

    def _forget(self) -> None:
        # TarFile keeps every member's TarInfo for reading back; a writer needs none.
        self._tar.members.clear()  # type: ignore[attr-defined]

    def add_file(self, name: str, path: Path) -> str:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        with path.open("rb") as handle:
            self._tar.addfile(_info(name, path.stat().st_size), handle)
        self._forget()
        return digest.hexdigest()


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def read_archive(data: bytes, name: str) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar:
                if not member.isfile():
                    raise EvidenceError(name, f"member {member.name!r} is not a regular file")
                if (
                    member.name.startswith("/")
                    or ".." in member.name.split("/")
                    or member.size > _MAX_MEMBER_BYTES
                ):
                    raise EvidenceError(name, f"member {member.name!r} is not allowed")
                if member.name in files:
                    raise EvidenceError(member.name, "appears twice in the archive")
                handle = tar.extractfile(member)
                files[member.name] = handle.read() if handle is not None else b""
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise EvidenceError(name, f"not a readable .tar.gz archive: {exc}") from None
    for required in (
        MANIFEST_FILE,
        CHECKPOINT_FILE,
        LOG_KEY_FILE,
        EXPORT_EVENT_FILE,
        *CONTENT_FILES,
    ):
        if required not in files:
            raise EvidenceError(required, "is missing from the archive")
    return files


@dataclass
class RecordCounts:
    """How many records an archive holds, by outcome and by payload status."""

    records: int = 0
    allowed: int = 0
    denied: int = 0
    events: int = 0
    payloads: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys([*map(str, PayloadStatus), INLINE_STATUS], 0)
    )

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "decisions": self.allowed + self.denied,
            "allowed": self.allowed,
            "denied": self.denied,
            "events": self.events,
            "payloads": dict(self.payloads),
        }
