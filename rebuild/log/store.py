"""The log's storage engine: tiles as files, an SQLite index, one writer.

Layout of a log directory ``D`` (everything under ``D/checkpoint`` and
``D/tile/`` is exactly what a static web server or object store serves)::

    D/checkpoint                     the published (cosigned) checkpoint
    D/tile/<L>/<N>[.p/<W>]           hash tiles (C2SP tlog-tiles)
    D/tile/entries/<N>[.p/<W>]       entry bundles (uint16 length-prefixed)
    D/state/lock                     one server per directory (flock)
    D/state/log.sqlite               committed size, every checkpoint ever
                                     signed (and cosigned)
    D/state/index.sqlite             lookup index (derived; see rebuild.log.index)

Durability protocol for one batch (sizes ``S`` to ``S'``):

1. write every new tile and bundle to a temporary name, fsync it, rename it
   into place, fsync each directory touched; files beyond ``S`` are not part
   of any committed tree, so nothing visible changes meaning;
2. in one small SQLite transaction (WAL, ``synchronous=FULL``): the size
   ``S'`` and the checkpoint signed for ``S'``;
3. only then are the batch's entries acknowledged; the lookup index catches
   up in the background (:mod:`rebuild.log.index`).

A crash before step 2 leaves files beyond the committed size, which
:meth:`LogStore.open` deletes; a crash after it loses nothing. A checkpoint is
signed only inside the transaction that commits its size, and the root for a
committed size never changes, so the log never signs two different
checkpoints for one size (``open`` refuses to start if the tiles disagree with
the last signature).

The store is also its own witness: it refuses to start when published data
(``checkpoint``, tiles) exists without the state that produced it, or when
the published checkpoint is not consistent with the committed tree (a state
restored from an old backup), and before each signature it verifies a
consistency proof, computed from the tiles on disk, from the last checkpoint
it signed to the new one. This module never serves HTTP and never talks to
witnesses; it must never acknowledge anything it has not made durable.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sqlite3
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NamedTuple

from rebuild.errors import StorageError
from rebuild.fsio import atomic_write, fsync_dir
from rebuild.log.entry import EntryError, check_entry, keyed_subject
from rebuild.log.index import LookupIndex
from verify import merkle
from verify.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from verify.errors import FormatError, ProofError, TileFormatError, VerifyError
from verify.keys import SigningKey
from verify.parsing import parse_decimal
from verify.tiles import (
    ENTRIES,
    TILE_WIDTH,
    Tile,
    TileHashes,
    audit_tiles,
    encode_entry_bundle,
    level_width,
    parse_entry_bundle,
    split_hashes,
    tile_for,
)

# The largest batch one transaction integrates. Bounds the work per commit
# and how far beyond the committed size an interrupted batch can have
# written files (recovery probes that far).
MAX_BATCH: Final = 4096
_PROBE_TILES: Final = MAX_BATCH // TILE_WIDTH + 2
INDEX_WAIT_SECONDS: Final = 1.0
SCHEMA_VERSION: Final = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS signed(
    seq INTEGER PRIMARY KEY AUTOINCREMENT, size INTEGER NOT NULL,
    root BLOB NOT NULL, note TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS signed_size ON signed(size);
CREATE TABLE IF NOT EXISTS cosigned(size INTEGER PRIMARY KEY, note TEXT NOT NULL);
"""


# A NamedTuple rather than a frozen dataclass: one is made per entry on the
# hot path, and a tuple is several times cheaper to build.
class Pending(NamedTuple):
    """An entry waiting to be sequenced (already checked by the caller).

    ``subjects`` are its lookup keys (:attr:`rebuild.log.entry.EntryInfo.index_keys`).
    """

    data: bytes
    leaf: bytes
    subjects: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Sequenced:
    """Where an entry ended up."""

    index: int
    leaf: bytes


@dataclass(frozen=True)
class SignedCheckpoint:
    size: int
    root: bytes
    note: str


@dataclass(frozen=True)
class _Edge:
    """The right edge of the committed tree: all a writer keeps in memory."""

    size: int
    levels: tuple[tuple[bytes, ...], ...]  # hashes of the partial tile per level
    bundle: tuple[bytes, ...]  # entries of the partial entry bundle


@dataclass(frozen=True)
class _Plan:
    """What integrating one batch will write and commit."""

    edge: _Edge
    results: list[Sequenced]
    files: dict[str, bytes]
    became_full: list[Tile]
    leaf_rows: list[tuple[bytes, int]]
    subject_rows: list[tuple[bytes, int]]


def perfect_root(hashes: Sequence[bytes]) -> bytes:
    """Root of a perfect subtree (2**k hashes); the writer's hot loop, unchecked."""
    node = merkle.node_hash
    level = list(hashes)
    while len(level) > 1:
        level = [node(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def edge_root(levels: Sequence[Sequence[bytes]]) -> bytes:
    """Root of the tree whose right edge is ``levels`` (see :class:`_Edge`)."""
    peaks: list[bytes] = []  # perfect subtrees, left (largest) to right
    for level in reversed(range(len(levels))):
        hashes = levels[level]
        i = 0
        for bit in reversed(range(8)):
            if len(hashes) & (1 << bit):
                peaks.append(perfect_root(hashes[i : i + (1 << bit)]))
                i += 1 << bit
    if not peaks:
        return merkle.EMPTY_ROOT
    acc = peaks[-1]
    for p in reversed(peaks[:-1]):
        acc = merkle.node_hash(p, acc)
    return acc


def _partial_width(name: str) -> int:
    """The width a partial tile's file name spells; past any width when it spells none."""
    try:
        return parse_decimal(name, "partial tile width", ValueError, maximum=TILE_WIDTH)
    except ValueError:
        return TILE_WIDTH + 1


class TileDirectory:
    """Reads the tiles and entry bundles of a log directory (the store's and fsck's reader).

    A partial tile may have been deleted once its full tile exists
    (tlog-tiles allows it): it is then read as the full tile's prefix.
    """

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def tile(self, tile: Tile) -> bytes:
        """A hash tile's bytes at ``tile.width``; StorageError when missing."""
        path = self.dir / tile.path()
        try:
            return path.read_bytes()
        except FileNotFoundError:
            if not tile.is_partial:
                raise StorageError(f"{path}: tile missing") from None
        full = self.dir / tile.full().path()
        try:
            return full.read_bytes()[: tile.width * merkle.HASH_SIZE]
        except FileNotFoundError:
            raise StorageError(f"{path}: tile missing (and no full tile)") from None

    def bundle_bytes(self, tile: Tile) -> bytes:
        """An entry bundle's bytes at ``tile.width``; StorageError when missing."""
        path = self.dir / tile.path()
        try:
            return path.read_bytes()
        except FileNotFoundError:
            if not tile.is_partial:
                raise StorageError(f"{path}: entry bundle missing") from None
        full = self.dir / tile.full().path()
        try:
            entries = parse_entry_bundle(full.read_bytes(), TILE_WIDTH)[: tile.width]
        except FileNotFoundError:
            raise StorageError(f"{path}: entry bundle missing (and no full bundle)") from None
        except VerifyError as e:
            raise StorageError(f"{full}: {e}") from None
        return encode_entry_bundle(entries)

    def bundle(self, tile: Tile) -> list[bytes]:
        try:
            return parse_entry_bundle(self.bundle_bytes(tile), tile.width)
        except VerifyError as e:
            raise StorageError(f"{self.dir / tile.path()}: {e}") from None

    # Readers for verify.tiles.audit_tiles: a missing tile is a problem found.

    def audit_tile(self, tile: Tile) -> bytes:
        try:
            return self.tile(tile)
        except StorageError as e:
            raise TileFormatError(str(e)) from None

    def audit_bundle(self, tile: Tile) -> bytes:
        try:
            return self.bundle_bytes(tile)
        except StorageError as e:
            raise TileFormatError(str(e)) from None


class LogStore:
    """One log directory, opened by exactly one process.

    Mutating methods (:meth:`integrate`, :meth:`publish`,
    :meth:`record_cosigned`) must be called from a single thread; reads of
    tiles, proofs and lookups may run on another.
    """

    def __init__(self, directory: Path, key: SigningKey, origin: str) -> None:
        self.dir = directory
        self.key = key
        self.origin = origin
        self.state_dir = directory / "state"
        self.tiles = TileDirectory(directory)
        self._lock_fd = -1
        self._db: sqlite3.Connection | None = None
        self._index: LookupIndex | None = None
        self._edge = _Edge(0, (), ())
        self._latest: SignedCheckpoint | None = None
        self._published_size = -1
        self._io = ThreadPoolExecutor(16, thread_name_prefix="log-fsync")

    # --- opening and recovery ---------------------------------------------

    @classmethod
    def open(cls, directory: str | os.PathLike[str], key: SigningKey, origin: str) -> LogStore:
        """Lock ``directory``, recover it to its last committed size, return it."""
        store = cls(Path(directory), key, origin)
        try:
            store._open()
        except BaseException:
            store.close()
            raise
        return store

    def _open(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "tile").mkdir(exist_ok=True)
            self.state_dir.mkdir(exist_ok=True)
        except OSError as e:
            raise StorageError(
                f"{self.dir}: cannot create the log directory: {e.strerror}"
            ) from None
        self._lock()
        db_path = self.state_dir / "log.sqlite"
        if not db_path.exists():
            self._refuse_published_data_without_state(db_path)
        try:
            self._db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA cache_size=-2048")  # a few small tables
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as e:
            raise StorageError(f"{db_path}: cannot open the index: {e}") from None
        self._check_identity()
        size = self._meta_int("size", 0)
        # Before anything is deleted: what was published must not be beyond
        # the state (a state restored from an older backup would otherwise
        # re-use published indexes and sign conflicting trees).
        published = self._published_checkpoint()
        if published is not None and published.size > size:
            raise StorageError(
                f"{self.dir}: the published checkpoint is for size {published.size} but the "
                f"state only knows size {size}: {self.state_dir} is older than the published "
                "log (restored from a backup?); refusing to start rather than sign a "
                "conflicting tree"
            )
        self._refuse_tiles_far_beyond(size)
        self._edge = self._load_edge(size)
        self._remove_uncommitted(size)
        root = edge_root(self._edge.levels)
        latest = self.signed_at(size)
        if latest is None:
            if size != 0:
                raise StorageError(f"{self.dir}: committed size {size} has no signed checkpoint")
            latest = self._sign_and_record(0, root)
        elif latest.root != root:
            raise self._damaged(f"tiles for size {size} do not match the checkpoint signed for it")
        self._latest = latest
        if published is not None:
            self._check_extends(published.size, published.root_hash, size, root, "published")
        self._audit_recent(size, root)
        self._remove_stale_partials()
        self._index = LookupIndex(self.state_dir / "index.sqlite")
        self._reindex(size)
        self._published_size = -1 if published is None else published.size

    def _refuse_published_data_without_state(self, db_path: Path) -> None:
        """A log directory with published data but no state must not start afresh."""
        found = []
        if (self.dir / "checkpoint").exists():
            found.append("a checkpoint")
        if next((p for p in (self.dir / "tile").rglob("*") if not p.is_dir()), None):
            found.append("tiles")
        if found:
            raise StorageError(
                f"{self.dir}: holds a published log ({' and '.join(found)}) but no state "
                f"({db_path} is missing). Starting afresh would re-use published indexes "
                f"and sign trees that conflict with published checkpoints: restore "
                f"{self.state_dir} from a backup, or move {self.dir} aside to start a new log"
            )

    def _published_checkpoint(self) -> Checkpoint | None:
        """The served checkpoint, verified as this log's own; None before the first."""
        path = self.dir / "checkpoint"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StorageError(f"{path}: cannot read: {e.strerror}") from None
        try:
            cp, _ = open_checkpoint(data, self.key.verifier_key(), self.origin)
        except VerifyError as e:
            raise StorageError(
                f"{path}: the published checkpoint is not a checkpoint this log signed "
                f"({e}); refusing to start"
            ) from None
        return cp

    def _refuse_tiles_far_beyond(self, size: int) -> None:
        """Tiles beyond what any interrupted batch can have written: the state is old."""
        n = size // TILE_WIDTH + _PROBE_TILES
        for level in (ENTRIES, 0):
            full = self.dir / Tile(level, n).path()
            if full.exists() or full.with_name(full.name + ".p").exists():
                raise StorageError(
                    f"{self.dir}: tiles exist far beyond the committed size {size} "
                    f"({full.relative_to(self.dir)}): {self.state_dir} is older than the "
                    "tiles (restored from a backup?); refusing to start"
                )

    def _check_extends(
        self, old_size: int, old_root: bytes, size: int, root: bytes, what: str
    ) -> None:
        """The log's own witness: prove from the tiles that ``size`` extends ``old_size``."""
        try:
            if old_size == 0:
                if old_root != merkle.EMPTY_ROOT:
                    raise ProofError("a size-0 checkpoint must carry the empty tree's root")
            elif old_size == size:
                if old_root != root:
                    raise ProofError("two different roots for one size")
            else:
                proof = self.tile_hashes_upto(size).consistency_proof(old_size)
                merkle.verify_consistency(old_size, size, proof, old_root, root)
        except (ProofError, FormatError) as e:
            raise StorageError(
                f"{self.dir}: refusing to sign or serve size {size}: it is not consistent "
                f"with the {what} checkpoint of size {old_size} ({e}); "
                "run 'rebuild log fsck' on this directory"
            ) from None

    def _audit_recent(self, size: int, root: bytes) -> None:
        """Verify the tiles and bundles of the last batches (those a restart reads)."""
        problems = audit_tiles(
            size,
            root,
            self.tiles.audit_tile,
            self.tiles.audit_bundle,
            start=max(0, size - MAX_BATCH),
            max_problems=5,
        )
        if problems:
            raise self._damaged("; ".join(str(p) for p in problems))

    def _damaged(self, what: str) -> StorageError:
        return StorageError(
            f"{self.dir}: damaged tiles ({what}); refusing to serve them: "
            f"run 'rebuild log fsck --dir {self.dir}'"
        )

    def _remove_stale_partials(self) -> None:
        """Delete partial tiles whose full tile exists (a kill can leave them behind)."""
        for parent, dirs, _ in os.walk(self.dir / "tile"):
            for d in dirs:
                if d.endswith(".p") and os.path.isfile(os.path.join(parent, d[:-2])):
                    shutil.rmtree(os.path.join(parent, d), ignore_errors=True)

    def _lock(self) -> None:
        path = self.state_dir / "lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise StorageError(f"{path}: cannot open the lock file: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StorageError(
                f"{self.dir}: another log server is using this directory (lock held)"
            ) from None
        self._lock_fd = fd

    def _check_identity(self) -> None:
        vkey = self.key.verifier_key().encode()
        stored_key = self._meta("log_key")
        stored_origin = self._meta("origin")
        if stored_key is None:
            self._db_exec_commit(
                [
                    ("INSERT INTO meta(k, v) VALUES ('log_key', ?)", (vkey,)),
                    ("INSERT INTO meta(k, v) VALUES ('origin', ?)", (self.origin,)),
                    ("INSERT INTO meta(k, v) VALUES ('schema', ?)", (SCHEMA_VERSION,)),
                ]
            )
            return
        if stored_key != vkey:
            raise StorageError(f"{self.dir}: this log was created with another key ({stored_key})")
        if stored_origin != self.origin:
            raise StorageError(
                f"{self.dir}: this log's origin is {stored_origin!r}, not {self.origin!r}"
            )

    def _load_edge(self, size: int) -> _Edge:
        levels: list[tuple[bytes, ...]] = []
        level = 0
        while level_width(size, level) > 0:
            count = level_width(size, level)
            width = count % TILE_WIDTH
            if width:
                tile = tile_for(size, level, count // TILE_WIDTH)
                try:
                    levels.append(tuple(split_hashes(self.tiles.tile(tile), width)))
                except VerifyError as e:
                    raise self._damaged(f"{tile.path()}: {e}") from None
            else:
                levels.append(())
            level += 1
        bundle: tuple[bytes, ...] = ()
        if size % TILE_WIDTH:
            tile = tile_for(size, ENTRIES, size // TILE_WIDTH)
            bundle = tuple(self.tiles.bundle(tile))
            if tuple(merkle.leaf_hash(e) for e in bundle) != levels[0]:
                raise self._damaged("the partial entry bundle does not match the level-0 tile")
        return _Edge(size, tuple(levels), bundle)

    def _remove_uncommitted(self, size: int) -> None:
        """Delete tiles an interrupted batch wrote beyond the committed size."""
        touched: set[Path] = set()
        level = ENTRIES
        while True:
            count = level_width(size, 0 if level == ENTRIES else level)
            if level > 0 and level_width(size + MAX_BATCH, level) == 0:
                break
            first, width = divmod(count, TILE_WIDTH)
            for n in range(first, first + _PROBE_TILES):
                full = self.dir / Tile(level, n).path()
                if full.exists():
                    full.unlink()
                    touched.add(full.parent)
                pdir = full.with_name(full.name + ".p")
                if pdir.is_dir():
                    for child in pdir.iterdir():
                        keep = n == first and _partial_width(child.name) <= width
                        if not keep:
                            child.unlink()
                            touched.add(pdir)
                parent = full.parent
                if parent.is_dir():
                    for child in parent.glob(".*.tmp"):
                        child.unlink()
            level = 0 if level == ENTRIES else level + 1
        for tmp in self.dir.glob(".checkpoint.*.tmp"):
            tmp.unlink()
        for d in touched:
            fsync_dir(d)

    # --- reading ----------------------------------------------------------

    def tile_hashes_upto(self, size: int) -> TileHashes:
        """Subtree hashes of a tree of ``size`` leaves from the tiles on disk (unchecked size)."""
        return TileHashes(size, self.tiles.tile)

    def tile_hashes(self, size: int) -> TileHashes:
        """Subtree hashes of the committed tree of ``size`` leaves, from disk."""
        if not 0 <= size <= self.size:
            raise StorageError(f"size {size} is beyond the committed size {self.size}")
        return self.tile_hashes_upto(size)

    def entry(self, index: int) -> bytes:
        if not 0 <= index < self.size:
            raise StorageError(f"index {index} is not below the committed size {self.size}")
        tile = tile_for(self.size, ENTRIES, index // TILE_WIDTH)
        return self.tiles.bundle(tile)[index % TILE_WIDTH]

    @property
    def size(self) -> int:
        return self._edge.size

    @property
    def latest(self) -> SignedCheckpoint:
        assert self._latest is not None
        return self._latest

    @property
    def published_size(self) -> int:
        return self._published_size

    def published_note(self) -> bytes:
        try:
            return (self.dir / "checkpoint").read_bytes()
        except FileNotFoundError:
            raise StorageError(f"{self.dir}: no checkpoint published yet") from None

    def signed_at(self, size: int) -> SignedCheckpoint | None:
        row = self._conn.execute(
            "SELECT root, note FROM signed WHERE size = ? ORDER BY seq DESC LIMIT 1", (size,)
        ).fetchone()
        return None if row is None else SignedCheckpoint(size, bytes(row[0]), str(row[1]))

    def signed_history(self) -> list[SignedCheckpoint]:
        """Every checkpoint this log ever signed, in signing order (for audits)."""
        rows = self._conn.execute("SELECT size, root, note FROM signed ORDER BY seq").fetchall()
        return [SignedCheckpoint(int(s), bytes(r), str(n)) for s, r, n in rows]

    def lookup_subject(
        self, digest: bytes, key_ids: Sequence[bytes] = (), cursor: int = 0
    ) -> tuple[list[int], int | None]:
        """Entries whose in-toto subjects include this sha256 (with a signature hint
        naming one of ``key_ids``, when given), from index ``cursor``: one page of
        indexes, ascending, and the next page's cursor (None when complete)."""
        keys = [keyed_subject(digest, k) for k in key_ids] if key_ids else [digest]
        return self._lookup.lookup_subject(keys, cursor)

    def lookup_leaf(self, leaf: bytes) -> int | None:
        """The first index of the entry with this leaf hash."""
        return self._lookup.lookup_leaf(leaf)

    def flush_index(self) -> None:
        self._lookup.flush()

    @property
    def _lookup(self) -> LookupIndex:
        if self._index is None:
            raise StorageError(f"{self.dir}: log store is closed")
        return self._index

    def _reindex(self, size: int) -> None:
        """Index entries a crash kept out of the lookup index (they are in the tiles)."""
        index = self._lookup
        start = index.indexed
        if start > size:
            raise StorageError(f"{index.path}: indexes {start} entries but the log has {size}")
        leaf_rows: list[tuple[bytes, int]] = []
        subject_rows: list[tuple[bytes, int]] = []
        for n in range(start // TILE_WIDTH, -(-size // TILE_WIDTH)):
            bundle = self.tiles.bundle(tile_for(size, ENTRIES, n))
            level0 = self.tiles.tile(tile_for(size, 0, n))
            for i, data in enumerate(bundle):
                idx = n * TILE_WIDTH + i
                if idx < start:
                    continue
                leaf = merkle.leaf_hash(data)
                if level0[i * merkle.HASH_SIZE : (i + 1) * merkle.HASH_SIZE] != leaf:
                    # Never index what the signed tree does not hold.
                    raise self._damaged(f"entry {idx} does not match its level-0 hash")
                leaf_rows.append((leaf, idx))
                try:
                    subjects = check_entry(data).index_keys
                except EntryError:
                    subjects = ()
                subject_rows.extend((d, idx) for d in subjects)
            if len(leaf_rows) >= MAX_BATCH:  # bounded memory, even re-indexing from 0
                index.add(leaf_rows, subject_rows, min(size, (n + 1) * TILE_WIDTH))
                leaf_rows, subject_rows = [], []
        if size > start:
            index.add(leaf_rows, subject_rows, size)
            index.flush()

    # --- writing ----------------------------------------------------------

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StorageError(f"{self.dir}: log store is closed")
        return self._db

    def _meta(self, k: str) -> object:
        row = self._conn.execute("SELECT v FROM meta WHERE k = ?", (k,)).fetchone()
        return None if row is None else row[0]

    def _meta_int(self, k: str, default: int) -> int:
        v = self._meta(k)
        return default if v is None else int(str(v))

    def _db_exec_commit(self, statements: Iterable[tuple[str, tuple[object, ...]]]) -> None:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            for sql, params in statements:
                conn.execute(sql, params)
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise StorageError(f"{self.state_dir}: index update failed: {e}") from None

    def _sign(self, size: int, root: bytes) -> SignedCheckpoint:
        existing = self.signed_at(size)
        if existing is not None:
            if existing.root != root:
                raise StorageError(
                    f"refusing to sign size {size} again with a different root (equivocation)"
                )
            return existing
        note = sign_checkpoint(Checkpoint(self.origin, size, root), self.key)
        return SignedCheckpoint(size, root, note)

    def _sign_and_record(self, size: int, root: bytes) -> SignedCheckpoint:
        signed = self._sign(size, root)
        if self.signed_at(size) is None:
            self._db_exec_commit(
                [
                    (
                        "INSERT INTO signed(size, root, note) VALUES (?, ?, ?)",
                        (size, signed.root, signed.note),
                    )
                ]
            )
        return signed

    def integrate(self, batch: Sequence[Pending]) -> list[Sequenced]:
        """Sequence ``batch`` durably; return where each entry is (see module doc).

        Every entry is appended, even one already in the log: the log records
        submissions, and deduplicating would put a random-key index lookup on
        the acknowledgement path. ``lookup_leaf`` finds the first copy.
        """
        if len(batch) > MAX_BATCH:
            raise StorageError(f"batch of {len(batch)} entries exceeds {MAX_BATCH}")
        if not batch:
            return []
        conn = self._conn
        if not self._lookup.wait_room(INDEX_WAIT_SECONDS):
            # Refused before anything is written: the entries are not in the
            # log, so the client's retry cannot duplicate them.
            failing = self._lookup.failing
            raise StorageError(
                "lookup index is behind" + (f" ({failing})" if failing else "") + "; retry later"
            )
        plan = self._plan(batch)
        self._write_files(plan.files)
        root = edge_root(plan.edge.levels)
        latest = self.latest
        self._check_extends(latest.size, latest.root, plan.edge.size, root, "last signed")
        signed = self._sign(plan.edge.size, root)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT OR REPLACE INTO meta(k, v) VALUES ('size', ?)", (plan.edge.size,))
            conn.execute(
                "INSERT INTO signed(size, root, note) VALUES (?, ?, ?)",
                (signed.size, signed.root, signed.note),
            )
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise StorageError(f"{self.state_dir}: committing a batch failed: {e}") from None
        # Committed: from here on the batch is durable and must be acknowledged;
        # nothing below may fail it (a failing index write is retried by its thread).
        self._edge = plan.edge
        self._latest = signed
        self._lookup.add(plan.leaf_rows, plan.subject_rows, plan.edge.size)
        if plan.became_full:
            # Partial tiles may go once the full tile exists (tlog-tiles); off
            # the commit path, since nothing durable depends on it.
            self._io.submit(self._collect_partials, plan.became_full)
        return plan.results

    def _plan(self, batch: Sequence[Pending]) -> _Plan:
        """Assign indexes and compute every tile the batch changes (no I/O)."""
        edge = self._edge
        size = edge.size
        levels = [list(hs) for hs in edge.levels]
        bundle = list(edge.bundle)
        files: dict[str, bytes] = {}
        became_full: list[Tile] = []
        results: list[Sequenced] = []
        leaf_rows: list[tuple[bytes, int]] = []
        subject_rows: list[tuple[bytes, int]] = []
        for p in batch:
            idx = size
            size += 1
            results.append(Sequenced(idx, p.leaf))
            leaf_rows.append((p.leaf, idx))
            for d in p.subjects:
                subject_rows.append((d, idx))
            bundle.append(p.data)
            if len(bundle) == TILE_WIDTH:
                t = Tile(ENTRIES, idx // TILE_WIDTH)
                files[t.path()] = encode_entry_bundle(bundle)
                became_full.append(t)
                bundle = []
            h = p.leaf
            level = 0
            while True:
                if level == len(levels):
                    levels.append([])
                hashes = levels[level]
                hashes.append(h)
                if len(hashes) < TILE_WIDTH:
                    break
                t = Tile(level, idx >> (8 * (level + 1)))
                files[t.path()] = b"".join(hashes)
                became_full.append(t)
                h = perfect_root(hashes)
                levels[level] = []
                level += 1
        old_size = edge.size
        if size != old_size:
            for level, hashes in enumerate(levels):
                if hashes and level_width(size, level) != level_width(old_size, level):
                    t = tile_for(size, level, level_width(size, level) // TILE_WIDTH)
                    files[t.path()] = b"".join(hashes)
            if bundle:
                t = tile_for(size, ENTRIES, size // TILE_WIDTH)
                files[t.path()] = encode_entry_bundle(bundle)
        new_edge = _Edge(size, tuple(tuple(hs) for hs in levels), tuple(bundle))
        return _Plan(new_edge, results, files, became_full, leaf_rows, subject_rows)

    def _write_files(self, files: dict[str, bytes]) -> None:
        """Write new tile files durably: each file and its directory, fsynced in parallel.

        Files are written in place, not via a temporary name: every path here
        lies beyond the committed tree, so until the SQLite commit nothing
        refers to it, the HTTP server does not serve it, and recovery deletes
        it after a crash. That saves a rename round, and issuing all fsyncs at
        once lets the filesystem fold them into one journal commit: a batch
        costs about two fsync latencies (this, then SQLite's) however many
        tiles it touches.
        """
        dirs: set[Path] = set()
        fds: list[int] = []
        try:
            try:
                for rel, data in files.items():
                    path = self.dir / rel
                    parent = path.parent
                    if not parent.is_dir():
                        self._make_dirs(parent, dirs)
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                    fds.append(fd)
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    dirs.add(parent)
                syncs = [self._io.submit(os.fsync, fd) for fd in fds]
                syncs += [self._io.submit(fsync_dir, d) for d in dirs]
                for f in syncs:
                    f.result()
            finally:
                for fd in fds:
                    os.close(fd)
        except OSError as e:
            raise StorageError(f"{self.dir}: writing tiles failed: {e.strerror}") from None

    @staticmethod
    def _make_dirs(parent: Path, dirs: set[Path]) -> None:
        """mkdir -p, remembering every new directory and its parent for fsync."""
        missing = parent
        while not missing.parent.is_dir():
            missing = missing.parent
        parent.mkdir(parents=True, exist_ok=True)
        p = parent
        while True:
            dirs.add(p)
            if p == missing:
                dirs.add(p.parent)
                return
            p = p.parent

    def _collect_partials(self, tiles: list[Tile]) -> None:
        for t in tiles:
            shutil.rmtree(self.dir / (t.path() + ".p"), ignore_errors=True)

    # --- publishing -------------------------------------------------------

    def publish(self, note: str, size: int) -> bool:
        """Make ``note`` (for ``size``) the served checkpoint; never go backwards."""
        if size < self._published_size:
            return False
        atomic_write(self.dir / "checkpoint", note.encode())
        self._published_size = size
        return True

    def record_cosigned(self, size: int, note: str) -> None:
        """Keep a cosigned checkpoint before publishing it (history for audits)."""
        self._db_exec_commit(
            [("INSERT OR REPLACE INTO cosigned(size, note) VALUES (?, ?)", (size, note))]
        )

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        self._io.shutdown(wait=True)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> LogStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
