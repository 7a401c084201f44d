"""C2SP tlog-tiles (https://c2sp.org/tlog-tiles): the log as static, immutable resources.

Under a prefix, a tiled log serves

``checkpoint``
    the latest signed checkpoint (with its witnesses' cosignatures);
``tile/<L>/<N>[.p/<W>]``
    level ``L``'s tile ``N``: 256 (or, partial, ``W``) consecutive hashes of
    subtrees of 256**L leaves, i.e. stored nodes of tree level 8L;
``tile/entries/<N>[.p/<W>]``
    the entries of level-0 tile ``N``, each a big-endian uint16 length and the
    entry bytes (so an entry is at most `MAX_ENTRY_SIZE` bytes).

``N`` is written in zero-padded 3-digit path elements, all but the last
prefixed with ``x`` (1234067 → ``x001/x234/067``). A tile of a given width
never changes, so every tile is cacheable forever; only tiles a signed
checkpoint covers are served.

`TileHasher` answers `nexus_audit.merkle.SubtreeHasher` requests from tiles,
so proofs can be computed from tiles alone, exactly as an outside verifier
does.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from nexus_audit import merkle, storage
from nexus_audit.tables import Leaf
from nexus_contract.errors import NexusError

__all__ = [
    "MAX_ENTRY_SIZE",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "Tile",
    "TileFetcher",
    "TileHasher",
    "TileNotFoundError",
    "TilePathError",
    "encode_index",
    "entry_bundle",
    "parse_tile_path",
    "read_tile",
    "split_entry_bundle",
]

TILE_HEIGHT = storage.TILE_HEIGHT
TILE_WIDTH = storage.TILE_WIDTH
MAX_ENTRY_SIZE = 0xFFFF
"""Entries are uint16 length-prefixed in entry bundles: at most 65,535 bytes each."""
_MAX_LEVEL = 63
_SEGMENT = re.compile(r"x\d{3}")
_LAST = re.compile(r"\d{3}")


class TilePathError(NexusError):
    """A tile path is not in the tlog-tiles form."""


class TileNotFoundError(NexusError):
    """The tile lies beyond the latest checkpoint."""


@dataclass(frozen=True)
class Tile:
    """Tile ``index`` of ``level`` (``level`` None: an entry bundle), ``width`` hashes wide."""

    level: int | None
    index: int
    width: int = TILE_WIDTH

    @property
    def tree_level(self) -> int:
        return 0 if self.level is None else self.level * TILE_HEIGHT

    @property
    def path(self) -> str:
        base = "tile/entries/" if self.level is None else f"tile/{self.level}/"
        suffix = "" if self.width == TILE_WIDTH else f".p/{self.width}"
        return base + encode_index(self.index) + suffix


def encode_index(index: int) -> str:
    """1234067 → ``x001/x234/067``."""
    digits = f"{index:d}"
    digits = digits.zfill(-(-len(digits) // 3) * 3)
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join([*(f"x{group}" for group in groups[:-1]), groups[-1]])


def parse_tile_path(path: str) -> Tile:
    """Parse ``tile/<L>/<N>[.p/<W>]`` or ``tile/entries/<N>[.p/<W>]`` (after the prefix)."""
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "tile":
        raise TilePathError(f"{path!r} is not a tile path")
    level: int | None
    if parts[1] == "entries":
        level = None
    elif parts[1].isdigit() and parts[1] == str(int(parts[1])) and int(parts[1]) <= _MAX_LEVEL:
        level = int(parts[1])
    else:
        raise TilePathError(f"tile level {parts[1]!r} is not 0..{_MAX_LEVEL} or 'entries'")
    rest = parts[2:]
    width = TILE_WIDTH
    if len(rest) >= 2 and rest[-2].endswith(".p"):
        w = rest[-1]
        if not w.isdigit() or w != str(int(w)) or not 1 <= int(w) < TILE_WIDTH:
            raise TilePathError(f"partial tile width {w!r} is not 1..255")
        width = int(w)
        rest = [*rest[:-2], rest[-2][: -len(".p")]]
    *prefix, last = rest
    if not _LAST.fullmatch(last) or not all(_SEGMENT.fullmatch(p) for p in prefix):
        raise TilePathError(f"tile index {'/'.join(rest)!r} is not in x000/.../000 form")
    digits = "".join(p[1:] for p in prefix) + last
    if prefix and prefix[0] == "x000":
        raise TilePathError("tile index has a leading zero group")
    return Tile(level, int(digits), width)


def read_tile(session: Session, tile: Tile, tree_size: int) -> bytes:
    """The tile's bytes in a tree of ``tree_size`` (checkpointed) leaves; raises if beyond it."""
    span = 1 << tile.tree_level
    first = tile.index * TILE_WIDTH
    available = tree_size // span - first
    if available < tile.width or (tile.width < TILE_WIDTH and available >= TILE_WIDTH):
        raise TileNotFoundError(
            f"{tile.path} is not part of the tree of the latest checkpoint (size {tree_size})"
        )
    end = first + tile.width
    if tile.level is None:
        raise ValueError("use entry_bundle for entry tiles")
    if tile.width == TILE_WIDTH:
        whole = storage.stored_tile(session, tile.level, tile.index)
        if whole is not None:
            return whole
    rows = storage.hashes_at(session, tile.tree_level, first, end)
    if len(rows) != tile.width or any(row[0] != first + i for i, row in enumerate(rows)):
        raise storage.CorruptStorageError(
            f"{tile.path}: stored hashes are missing; run `nexus-policy audit verify`"
        )
    return b"".join(row[1] for row in rows)


def entry_bundle(session: Session, tile: Tile, tree_size: int) -> bytes:
    """The entry bundle of level-0 tile ``tile.index``: uint16 length-prefixed entries."""
    first = tile.index * TILE_WIDTH
    available = tree_size - first
    if available < tile.width or (tile.width < TILE_WIDTH and available >= TILE_WIDTH):
        raise TileNotFoundError(
            f"{tile.path} is not part of the tree of the latest checkpoint (size {tree_size})"
        )
    rows = session.execute(
        select(Leaf.leaf_index, Leaf.entry)
        .where(Leaf.leaf_index >= first, Leaf.leaf_index < first + tile.width)
        .order_by(Leaf.leaf_index)
    ).all()
    if len(rows) != tile.width:
        raise storage.CorruptStorageError(f"{tile.path}: leaves are missing")
    out = bytearray()
    for _, entry in rows:
        if len(entry) > MAX_ENTRY_SIZE:
            raise storage.CorruptStorageError(f"{tile.path}: an entry exceeds {MAX_ENTRY_SIZE}")
        out += len(entry).to_bytes(2, "big") + entry
    return bytes(out)


def split_entry_bundle(data: bytes) -> Iterator[bytes]:
    """The entries of an entry bundle; raises `TilePathError` if it is truncated."""
    offset = 0
    while offset < len(data):
        if offset + 2 > len(data):
            raise TilePathError("entry bundle ends inside a length prefix")
        length = int.from_bytes(data[offset : offset + 2], "big")
        offset += 2
        if offset + length > len(data):
            raise TilePathError("entry bundle ends inside an entry")
        yield data[offset : offset + length]
        offset += length


TileFetcher = Callable[[Tile], bytes]


class TileHasher:
    """`merkle.SubtreeHasher` over tiles fetched by ``fetch`` for one tree size.

    A complete subtree of height h starting at ``start`` is a node of the
    tile at level h // 8 holding it. Each tile is fetched once and its 255
    inner nodes hashed once (kept as a heap), so any subtree is then a lookup.
    Tiles of this tree size never change (a partial tile of a given width
    included), so every one is cached, up to ``cache_tiles`` (LRU).
    """

    def __init__(self, fetch: TileFetcher, tree_size: int, *, cache_tiles: int = 4096) -> None:
        self._fetch = fetch
        self._size = tree_size
        self._cache: OrderedDict[tuple[int, int], list[list[bytes]]] = OrderedDict()
        self._cache_tiles = cache_tiles
        self._lock = threading.Lock()

    def __call__(self, start: int, end: int, /) -> bytes:
        width = end - start
        height = width.bit_length() - 1
        level, within = divmod(height, TILE_HEIGHT)
        first_hash = start >> (level * TILE_HEIGHT)
        tile_index, offset = divmod(first_hash, TILE_WIDTH)
        layers = self._tile(level, tile_index)
        layer = layers[within]
        position = offset >> within
        if position >= len(layer):
            raise storage.CorruptStorageError(f"tile {level}/{tile_index} is too short")
        return layer[position]

    def _tile(self, level: int, index: int) -> list[list[bytes]]:
        key = (level, index)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        span = 1 << (level * TILE_HEIGHT)
        available = self._size // span - index * TILE_WIDTH
        width = min(TILE_WIDTH, available)
        data = self._fetch(Tile(level, index, width))
        if len(data) != width * merkle.HASH_SIZE:
            raise storage.CorruptStorageError(f"tile {level}/{index} is not {width} hashes")
        size = merkle.HASH_SIZE
        layers = [[data[i : i + size] for i in range(0, len(data), size)]]
        # merkle.node_hash inlined: this loop is most of a cold proof's CPU
        sha256, prefix = hashlib.sha256, merkle.NODE_PREFIX
        while len(layers[-1]) > 1:
            below = layers[-1]
            layers.append(
                [
                    sha256(prefix + below[i] + below[i + 1]).digest()
                    for i in range(0, len(below) - 1, 2)
                ]
            )
        with self._lock:
            self._cache[key] = layers
            if len(self._cache) > self._cache_tiles:
                self._cache.popitem(last=False)
        return layers
