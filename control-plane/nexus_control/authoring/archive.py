"""Tarballs in and out: byte-identical bundle archives, and bounded reading of any upload.

Writing: members in a fixed order (``.signatures.json``, ``.manifest``, then
by path), each a regular file with mode 0644, owner 0, time 0, and a gzip
header without a name or time, so the same files give the same bytes.

Reading: every limit is checked from the member's header *before* its bytes
are read, and the total as it grows, so a small archive that claims a huge
member costs nothing: only regular files and directories, relative paths
without ``..``, at most :data:`MAX_MEMBERS` members.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from nexus_contract.errors import NexusError

__all__ = [
    "MAX_MEMBERS",
    "MAX_MEMBER_BYTES",
    "MAX_PATH_CHARS",
    "MAX_TOTAL_BYTES",
    "ArchiveError",
    "ArchiveLimits",
    "read_archive",
    "write_archive",
]

MAX_MEMBER_BYTES = 64 * 1024 * 1024
MAX_TOTAL_BYTES = 256 * 1024 * 1024
MAX_MEMBERS = 20_000
MAX_PATH_CHARS = 512
_FIRST = (".signatures.json", ".manifest")
_HEADER_ALLOWANCE = 16 * 1024 * 1024
"""Room for tar headers and padding above the members' own bytes."""


class ArchiveError(NexusError):
    """An archive is unreadable, or breaks a limit or a rule about its members."""


@dataclass(frozen=True)
class ArchiveLimits:
    member_bytes: int = MAX_MEMBER_BYTES
    total_bytes: int = MAX_TOTAL_BYTES
    members: int = MAX_MEMBERS


def _order(name: str) -> tuple[int, str]:
    bare = name.lstrip("/")
    return (_FIRST.index(bare), "") if bare in _FIRST else (len(_FIRST), bare)


def write_archive(files: Mapping[str, bytes]) -> bytes:
    """A deterministic ``.tar.gz`` of ``files`` (bundle path → content), paths rooted at ``/``."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files, key=_order):
            content = files[name]
            info = tarfile.TarInfo("/" + name.lstrip("/"))
            info.size = len(content)
            info.mode = 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), compresslevel=9, mtime=0)


def _safe_name(name: str) -> str:
    path = PurePosixPath(name.lstrip("/"))
    if len(name) > MAX_PATH_CHARS:
        raise ArchiveError(f"member name longer than {MAX_PATH_CHARS} characters: {name[:60]}…")
    if any(part in ("..", "") for part in path.parts) or "\\" in name or "\0" in name:
        raise ArchiveError(f"member {name!r} escapes the archive")
    return path.as_posix()


class _Bounded(io.RawIOBase):
    """The decompressed stream, refusing to yield more than ``limit`` bytes.

    tarfile reads PAX and GNU long-name headers whole before a caller sees
    the member, so the bound sits under tarfile, on the bytes themselves.
    """

    def __init__(self, raw: bytes, limit: int, what: str) -> None:
        self._inner = gzip.GzipFile(fileobj=io.BytesIO(raw))
        self._left = limit
        self._what = what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)
        chunk = self._inner.read(min(len(view), self._left + 1))
        if len(chunk) > self._left:
            raise ArchiveError(f"{self._what} unpacks to more than the limit")
        self._left -= len(chunk)
        view[: len(chunk)] = chunk
        return len(chunk)


def read_archive(
    raw: bytes, what: str, limits: ArchiveLimits = ArchiveLimits()
) -> dict[str, bytes]:
    """Every regular file of the ``.tar.gz`` ``raw`` (path without leading ``/`` → content).

    Raises ArchiveError naming ``what`` on a limit, a link, a device, a path
    that escapes, a name given twice, or a damaged archive.
    """
    files: dict[str, bytes] = {}
    total = 0
    count = 0
    try:
        stream = _Bounded(raw, limits.total_bytes + _HEADER_ALLOWANCE, what)
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                count += 1
                if count > limits.members:
                    raise ArchiveError(f"{what} has more than {limits.members} members")
                if member.isdir():
                    _safe_name(member.name)
                    continue
                if not member.isfile():
                    raise ArchiveError(f"{what}: {member.name!r} is not a regular file")
                name = _safe_name(member.name)
                if member.size > limits.member_bytes:
                    raise ArchiveError(
                        f"{what}: {name} is {member.size} bytes; "
                        f"the limit is {limits.member_bytes} per file"
                    )
                total += member.size
                if total > limits.total_bytes:
                    raise ArchiveError(f"{what} unpacks to more than {limits.total_bytes} bytes")
                if name in files:
                    raise ArchiveError(f"{what}: {name} appears twice")
                handle = tar.extractfile(member)
                content = handle.read(member.size + 1) if handle is not None else b""
                if len(content) != member.size:
                    raise ArchiveError(f"{what}: {name} is cut short")
                files[name] = content
    except ArchiveError:
        raise
    except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ArchiveError(f"{what} is not a readable .tar.gz: {exc}") from None
    return files
