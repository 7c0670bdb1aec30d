"""C2SP tlog-tiles: tile paths, which tiles a tree has, and proofs from tiles.

A tiled log serves its Merkle tree as static files: ``tile/<L>/<N>[.p/<W>]``
(hash tiles, 256 hashes of 32 bytes when full) and ``tile/entries/<N>[.p/<W>]``
(entry bundles). This module encodes and strictly parses those paths (one
canonical path per tile, so a server can validate a request by re-encoding),
lists the tiles of a tree of a given size, and computes subtree hashes,
roots and proofs from tile contents handed to it by a caller-supplied reader.
It never reads files or the network itself.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from verify.errors import ProofFormatError, TileFormatError
from verify.merkle import (
    HASH_SIZE,
    MAX_TREE_SIZE,
    consistency_proof_ranges,
    inclusion_proof_ranges,
    leaf_hash,
    node_hash,
    root,
)

TILE_HEIGHT: Final = 8
TILE_WIDTH: Final = 1 << TILE_HEIGHT  # 256 hashes per full tile
FULL_TILE_BYTES: Final = TILE_WIDTH * HASH_SIZE  # 8192
MAX_LEVEL: Final = 63
ENTRIES: Final = -1  # the "level" of entry bundles
MAX_ENTRY_SIZE: Final = 0xFFFF  # entry bundles length-prefix entries with a uint16
# Tile indexes are below 2**63 / 256, i.e. at most 17 decimal digits: 6 groups.
_MAX_GROUPS: Final = 7
_GROUP = re.compile(r"[0-9]{3}")
_LEVEL = re.compile(r"0|[1-9][0-9]?")
_WIDTH = re.compile(r"[1-9][0-9]{0,2}")


def _encode_index(n: int) -> str:
    digits = str(n)
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join([*("x" + g for g in groups[:-1]), groups[-1]])


@dataclass(frozen=True, order=True)
class Tile:
    """One hash tile (level 0..63) or entry bundle (level ENTRIES).

    ``width`` is the number of hashes (or entries): 256 for a full tile,
    1..255 for a partial one.
    """

    level: int
    n: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        for name in ("level", "n", "width"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise TileFormatError(f"tile {name} must be an integer")
        if not (self.level == ENTRIES or 0 <= self.level <= MAX_LEVEL):
            raise TileFormatError(f"tile level {self.level} outside 0..63")
        if not 0 <= self.n <= MAX_TREE_SIZE >> TILE_HEIGHT:
            raise TileFormatError(f"tile index {self.n} out of range")
        if not 1 <= self.width <= TILE_WIDTH:
            raise TileFormatError(f"tile width {self.width} outside 1..256")

    @property
    def is_entries(self) -> bool:
        """True for an entry bundle, False for a hash tile. Never raises."""
        return self.level == ENTRIES

    @property
    def is_partial(self) -> bool:
        """True when the tile holds fewer than 256 hashes or entries. Never raises."""
        return self.width < TILE_WIDTH

    def path(self) -> str:
        """The tile's one canonical path, ``tile/<L>/<N>[.p/<W>]``. Never raises."""
        level = "entries" if self.is_entries else str(self.level)
        suffix = f".p/{self.width}" if self.is_partial else ""
        return f"tile/{level}/{_encode_index(self.n)}{suffix}"

    def full(self) -> Tile:
        """The full tile this partial tile grows into. Never raises."""
        return Tile(self.level, self.n)


def tile_path(level: int, n: int, width: int | None = None) -> str:
    """``tile/<L>/<N>[.p/<W>]``; ``width`` None or 256 means a full tile.

    Raises TileFormatError for a level, index or width out of range.
    """
    return Tile(level, n, TILE_WIDTH if width is None else width).path()


def entries_path(n: int, width: int | None = None) -> str:
    """``tile/entries/<N>[.p/<W>]``; ``width`` None or 256 means a full bundle.

    Raises TileFormatError for an index or width out of range.
    """
    return Tile(ENTRIES, n, TILE_WIDTH if width is None else width).path()


def parse_tile_path(path: str) -> Tile:
    """Parse a tile or entry-bundle path; refuses every non-canonical spelling.

    Raises TileFormatError.
    """
    if not isinstance(path, str) or len(path) > 128 or not path.isascii():
        raise TileFormatError("tile path too long or not ASCII")
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "tile":
        raise TileFormatError(f"not a tile path: {path!r}")
    level_text, rest = parts[1], parts[2:]
    if level_text == "entries":
        level = ENTRIES
    elif _LEVEL.fullmatch(level_text) and int(level_text) <= MAX_LEVEL:
        level = int(level_text)
    else:
        raise TileFormatError(f"bad tile level in {path!r}")
    width = TILE_WIDTH
    if len(rest) >= 2 and rest[-2].endswith(".p"):
        w = rest[-1]
        if not _WIDTH.fullmatch(w) or int(w) >= TILE_WIDTH:
            raise TileFormatError(f"bad partial tile width in {path!r}")
        width = int(w)
        rest = [*rest[:-2], rest[-2][:-2]]
    if not 1 <= len(rest) <= _MAX_GROUPS:
        raise TileFormatError(f"bad tile index in {path!r}")
    digits = ""
    for i, group in enumerate(rest):
        last = i == len(rest) - 1
        body = group if last else group.removeprefix("x")
        if (not last and not group.startswith("x")) or not _GROUP.fullmatch(body):
            raise TileFormatError(f"bad tile index element {group!r} in {path!r}")
        digits += body
    tile = Tile(level, int(digits), width)
    if tile.path() != path:
        raise TileFormatError(f"non-canonical tile path {path!r}")
    return tile


def level_width(size: int, level: int) -> int:
    """How many hashes level ``level`` of a tree of ``size`` leaves has in tiles. Never raises."""
    return size >> (TILE_HEIGHT * level)


def tile_for(size: int, level: int, n: int) -> Tile:
    """The tile (full or partial) that tree ``size`` has at (level, n).

    Raises TileFormatError when the tree has no such tile.
    """
    count = level_width(size, 0 if level == ENTRIES else level)
    width = min(TILE_WIDTH, count - n * TILE_WIDTH)
    if width <= 0:
        raise TileFormatError(f"a tree of size {size} has no tile {level}/{n}")
    return Tile(level, n, width)


def tiles_between(old_size: int, new_size: int) -> Iterator[Tile]:
    """Hash tiles that a tree of ``new_size`` has and one of ``old_size`` lacks.

    With ``old_size`` 0 this is every hash tile of the tree. A partial tile
    that grew wider appears at its new width; tiles are yielded level by
    level, left to right, so a writer can lay lower levels down first.

    Raises TileFormatError unless 0 <= old_size <= new_size <= 2**63-1.
    """
    if not 0 <= old_size <= new_size <= MAX_TREE_SIZE:
        raise TileFormatError(f"bad size range {old_size}..{new_size}")
    level = 0
    while level <= MAX_LEVEL and level_width(new_size, level) > 0:
        old_count = level_width(old_size, level)
        new_count = level_width(new_size, level)
        for n in range(old_count // TILE_WIDTH, -(-new_count // TILE_WIDTH)):
            width = min(TILE_WIDTH, new_count - n * TILE_WIDTH)
            if n * TILE_WIDTH + width > old_count:
                yield Tile(level, n, width)
        level += 1


def hash_tiles(size: int) -> list[Tile]:
    """Every hash tile (full and partial) of a tree of ``size`` leaves.

    Raises TileFormatError for a size outside 0..2**63-1.
    """
    return list(tiles_between(0, size))


def entry_bundles_between(old_size: int, new_size: int) -> Iterator[Tile]:
    """Entry bundles that a tree of ``new_size`` has and one of ``old_size`` lacks.

    Raises TileFormatError unless 0 <= old_size <= new_size <= 2**63-1.
    """
    for t in tiles_between(old_size, new_size):
        if t.level != 0:
            break
        yield Tile(ENTRIES, t.n, t.width)


def entry_bundles(size: int) -> list[Tile]:
    """Every entry bundle (full and partial) of a tree of ``size`` entries.

    Raises TileFormatError for a size outside 0..2**63-1.
    """
    return list(entry_bundles_between(0, size))


def split_hashes(data: bytes, width: int) -> list[bytes]:
    """Split tile data into ``width`` 32-byte hashes, checking its length.

    Raises TileFormatError when the data is not ``width`` * 32 bytes.
    """
    if len(data) != width * HASH_SIZE:
        raise TileFormatError(f"tile data is {len(data)} bytes, expected {width * HASH_SIZE}")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def encode_entry_bundle(entries: Sequence[bytes]) -> bytes:
    """An entry bundle: each entry prefixed with its big-endian uint16 length.

    Raises TileFormatError for no entry, more than 256 or one over 65535 bytes.
    """
    if not 1 <= len(entries) <= TILE_WIDTH:
        raise TileFormatError("an entry bundle holds 1..256 entries")
    out = bytearray()
    for e in entries:
        if len(e) > MAX_ENTRY_SIZE:
            raise TileFormatError(f"entry of {len(e)} bytes exceeds the uint16 bundle limit")
        out += struct.pack(">H", len(e)) + e
    return bytes(out)


def parse_entry_bundle(data: bytes, width: int) -> list[bytes]:
    """Parse an entry bundle of exactly ``width`` entries; nothing may trail.

    Raises TileFormatError for a truncated bundle, trailing data or another count.
    """
    entries: list[bytes] = []
    pos = 0
    while pos < len(data):
        if len(entries) == width:
            raise TileFormatError("entry bundle has data after its last entry")
        if pos + 2 > len(data):
            raise TileFormatError("entry bundle truncated in a length prefix")
        (n,) = struct.unpack_from(">H", data, pos)
        pos += 2
        if pos + n > len(data):
            raise TileFormatError("entry bundle truncated in an entry")
        entries.append(bytes(data[pos : pos + n]))
        pos += n
    if len(entries) != width:
        raise TileFormatError(f"entry bundle has {len(entries)} entries, expected {width}")
    return entries


# --- hashes from tiles -------------------------------------------------------


def perfect_root(hashes: Sequence[bytes]) -> bytes:
    """MTH of 2**k hashes already checked to be 32 bytes each (split_hashes did).

    Level by level with hashlib directly: about twice as fast as the general
    streaming :func:`verify.merkle.root`, and this runs for every subtree a
    proof, an audit or a monitor computes from tiles.

    Raises ProofFormatError when the number of hashes is not a power of two.
    """
    level = list(hashes)
    if not level or len(level) & (len(level) - 1):
        raise ProofFormatError(f"{len(level)} hashes are not a perfect subtree")
    sha256 = hashlib.sha256
    while len(level) > 1:
        level = [
            sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)
        ]
    return level[0]


TileReader = Callable[[Tile], bytes]
"""Returns the bytes of a hash tile exactly as served (width * 32 bytes)."""


class TileHashes:
    """Subtree hashes of a tree of ``size`` leaves, computed from its tiles.

    ``read`` is called at most once per tile (results are cached for the
    lifetime of this object); it gets the tile at the width this tree size
    has, so a reader over a static directory or HTTP prefix can serve it.
    """

    def __init__(self, size: int, read: TileReader) -> None:
        if not 0 <= size <= MAX_TREE_SIZE:
            raise TileFormatError(f"tree size {size} out of range")
        self.size = size
        self._read = read
        self._cache: dict[Tile, list[bytes]] = {}

    def _tile(self, level: int, n: int) -> list[bytes]:
        tile = tile_for(self.size, level, n)
        hashes = self._cache.get(tile)
        if hashes is None:
            hashes = split_hashes(self._read(tile), tile.width)
            self._cache[tile] = hashes
        return hashes

    def node(self, height: int, k: int) -> bytes:
        """The hash of the perfect subtree covering leaves [k*2^height, (k+1)*2^height).

        Raises ProofFormatError for a node outside the tree, TileFormatError for tile
        data of the wrong length; what the reader raises propagates.
        """
        if ((k + 1) << height) > self.size:
            raise ProofFormatError(f"node {height}/{k} is outside a tree of size {self.size}")
        level, rest = divmod(height, TILE_HEIGHT)
        first = k << rest  # index of the node's first hash at tile level ``level``
        tile = self._tile(level, first // TILE_WIDTH)
        offset = first % TILE_WIDTH
        return perfect_root(tile[offset : offset + (1 << rest)])

    def subtree(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a range that is a subtree of the tree (as in proofs).

        Raises ProofFormatError for a range outside the tree or not aligned as in
        proofs, TileFormatError for tile data of the wrong length; what the reader
        raises propagates.
        """
        if not 0 <= start < end <= self.size:
            raise ProofFormatError(f"range [{start}, {end}) outside a tree of size {self.size}")
        n = end - start
        if n & (n - 1) == 0:
            if start % n:
                raise ProofFormatError(f"range [{start}, {end}) is not an aligned subtree")
            return self.node(n.bit_length() - 1, start // n)
        k = 1 << ((n - 1).bit_length() - 1)
        return node_hash(self.subtree(start, start + k), self.subtree(start + k, end))

    def root(self) -> bytes:
        """The tree's root hash, computed from its tiles.

        Raises TileFormatError for tile data of the wrong length; what the reader raises
        propagates.
        """
        return root([]) if self.size == 0 else self.subtree(0, self.size)

    def inclusion_proof(self, index: int) -> list[bytes]:
        """The inclusion proof of leaf ``index``, computed from the tiles.

        Raises ProofFormatError for an index outside the tree, TileFormatError for tile
        data of the wrong length; what the reader raises propagates.
        """
        return [self.subtree(a, b) for a, b in inclusion_proof_ranges(index, self.size)]

    def consistency_proof(self, old_size: int) -> list[bytes]:
        """The consistency proof from ``old_size`` to this tree, computed from the tiles.

        Raises ProofFormatError unless 0 < old_size <= size, TileFormatError for tile
        data of the wrong length; what the reader raises propagates.
        """
        return [self.subtree(a, b) for a, b in consistency_proof_ranges(old_size, self.size)]


def tiles_from_leaf_hashes(leaf_hashes: Sequence[bytes]) -> dict[Tile, bytes]:
    """Every hash tile of the tree over ``leaf_hashes`` (in memory; tests, small logs).

    Never raises.
    """
    out: dict[Tile, bytes] = {}
    level_hashes = list(leaf_hashes)
    level = 0
    while level_hashes:
        nxt: list[bytes] = []
        for n in range(0, len(level_hashes), TILE_WIDTH):
            chunk = level_hashes[n : n + TILE_WIDTH]
            out[Tile(level, n // TILE_WIDTH, len(chunk))] = b"".join(chunk)
            if len(chunk) == TILE_WIDTH:
                nxt.append(root(chunk))
        level_hashes = nxt
        level += 1
    return out


# --- auditing tiles against a signed root -------------------------------------


@dataclass(frozen=True)
class TileProblem:
    """One tile whose bytes do not belong to the tree a checkpoint signs."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def audit_tiles(
    size: int,
    root_hash: bytes,
    read_tile: TileReader,
    read_bundle: TileReader | None = None,
    *,
    start: int = 0,
    max_problems: int = 100,
) -> list[TileProblem]:
    """Check that the tiles a tree of ``size`` adds to one of ``start`` are that tree.

    Rules, in order (a problem is recorded, and checking goes on, up to
    ``max_problems``):

    1. Every entry bundle the range adds (when ``read_bundle`` is given)
       parses at its width and each entry's RFC 6962 leaf hash is the hash at
       the same position of the level-0 tile.
    2. Every full hash tile the range adds hashes (MTH of its 256 hashes) to
       its hash in the tile one level up.
    3. The root computed from the tree's tiles equals ``root_hash`` (the
       signed root): this binds the partial tiles of the right edge and the
       top of the tree.

    With ``start`` 0 this proves every byte of every tile and bundle is the
    signed tree. With ``start`` > 0 it covers what a tree grew by; the caller
    must prove the old part consistent (a consistency proof from these tiles).
    Readers return a tile exactly at ``tile.width`` and may raise
    :class:`TileFormatError` for a tile that is missing or unusable (recorded
    as a problem); any other exception propagates. Memory is one tile per
    level, whatever the size.

    Raises TileFormatError for a range outside ``0 <= start <= size <=
    MAX_TREE_SIZE``, and whatever a reader raises other than TileFormatError.
    """
    if not 0 <= start <= size <= MAX_TREE_SIZE:
        raise TileFormatError(f"bad audit range {start}..{size}")
    audit = _Audit(size, read_tile, read_bundle)
    for tile in tiles_between(start, size):
        if len(audit.problems) >= max_problems:
            return audit.problems
        hashes = audit.hashes_of(tile)
        if hashes is None:
            continue
        if tile.level == 0 and read_bundle is not None:
            audit.check_bundle(tile, hashes, read_bundle)  # rule 1
        if tile.width == TILE_WIDTH:
            audit.check_parent(tile, hashes)  # rule 2
    if audit.problems:
        return audit.problems
    return audit.check_root(root_hash)  # rule 3


class _Audit:
    """What :func:`audit_tiles` found so far, and the one parent tile per level it holds."""

    def __init__(self, size: int, read_tile: TileReader, read_bundle: TileReader | None) -> None:
        self.size = size
        self.read_tile = read_tile
        self.read_bundle = read_bundle
        self.problems: list[TileProblem] = []
        self.parents: dict[int, tuple[Tile, list[bytes] | None]] = {}

    def hashes_of(self, tile: Tile) -> list[bytes] | None:
        """The tile's hashes, or None (and a problem) when it is missing or unusable."""
        try:
            return split_hashes(self.read_tile(tile), tile.width)
        except TileFormatError as e:
            self.problems.append(TileProblem(tile.path(), str(e)))
            return None

    def parent_hash(self, tile: Tile) -> tuple[Tile, bytes | None]:
        """The tile one level up and the hash it holds for ``tile`` (None: unreadable)."""
        parent = tile_for(self.size, tile.level + 1, tile.n // TILE_WIDTH)
        cached = self.parents.get(parent.level)
        if cached is None or cached[0] != parent:
            cached = (parent, self.hashes_of(parent))
            self.parents[parent.level] = cached
        hs = cached[1]
        return parent, None if hs is None else hs[tile.n % TILE_WIDTH]

    def check_bundle(self, tile: Tile, hashes: list[bytes], read_bundle: TileReader) -> None:
        """Rule 1: each entry of the bundle hashes to its hash in level-0 ``tile``."""
        bundle = Tile(ENTRIES, tile.n, tile.width)
        try:
            entries = parse_entry_bundle(read_bundle(bundle), tile.width)
        except TileFormatError as e:
            self.problems.append(TileProblem(bundle.path(), str(e)))
            return
        for i, (entry, h) in enumerate(zip(entries, hashes, strict=True)):
            if leaf_hash(entry) != h:
                self.problems.append(
                    TileProblem(
                        bundle.path(),
                        f"entry {tile.n * TILE_WIDTH + i} does not hash to "
                        f"hash {i} of {tile.path()}",
                    )
                )
                return

    def check_parent(self, tile: Tile, hashes: list[bytes]) -> None:
        """Rule 2: a full tile hashes to its hash in the tile one level up."""
        parent, expected = self.parent_hash(tile)
        if expected is not None and perfect_root(hashes) != expected:
            self.problems.append(
                TileProblem(
                    tile.path(),
                    f"does not hash to hash {tile.n % TILE_WIDTH} of {parent.path()}",
                )
            )

    def check_root(self, root_hash: bytes) -> list[TileProblem]:
        """Rule 3: the tree's tiles reproduce the signed root."""
        try:
            computed = TileHashes(self.size, self.read_tile).root()
        except TileFormatError as e:
            return [TileProblem("tile/", str(e))]
        if computed != root_hash:
            self.problems.append(
                TileProblem(
                    "tile/", f"the tiles do not reproduce the signed root of size {self.size}"
                )
            )
        return self.problems
