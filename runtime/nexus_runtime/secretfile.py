"""Files that hold a secret: created with mode 0600 before a byte is written, replaced atomically.

A key or token file is written to a temporary name in the same directory,
opened with ``O_CREAT | O_EXCL`` and mode 0600 (so no other account can ever
open it, not even for the moment before a ``chmod``), flushed to disk, then
renamed over the target. A reader sees the old file or the new one, never a
half-written one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

__all__ = ["SECRET_FILE_MODE", "write_secret"]

SECRET_FILE_MODE = 0o600
SECRET_DIR_MODE = 0o700


def write_secret(path: Path, data: bytes, *, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` readable by its owner only.

    Raises FileExistsError when ``path`` exists and ``overwrite`` is false.
    A missing parent directory is created with mode 0700.
    """
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=SECRET_DIR_MODE, exist_ok=True)
    if not overwrite and path.exists():
        raise FileExistsError(path)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(temporary, path)
        else:
            # link() fails if the target appeared meanwhile: never clobber a key.
            os.link(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
