"""The log's lookup index (leaf hash and subject digest to entry index), kept off the commit path.

The index is *derived* data: everything in it can be recomputed from the
entry bundles. So it lives in its own SQLite file, written by its own thread
in large, amortised transactions after entries are already durable and
acknowledged, and it records how far it got (``indexed``). After a crash the
store re-indexes the few entries between ``indexed`` and the committed size.
Random 32-byte keys make every B-tree insert touch a different page; doing
that in the acknowledgement path cost a third of the log's throughput.

Rows not yet flushed are answered from memory, so a lookup sees every
acknowledged entry. They are kept packed (epoch, 32-byte key and index: 44
bytes a row), not as Python tuples and dicts: when the index falls behind,
up to ``MAX_PENDING`` rows wait, and as objects they cost ~450 bytes each
(+20 MiB by 10^6 entries while a hash-keyed index lagged; docs/benchmarks.md,
"Memory"). This module decides nothing about trust and never touches tiles.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Final

from rebuild.errors import StorageError

log = logging.getLogger(__name__)

FLUSH_ROWS: Final = 8192
FLUSH_SECONDS: Final = 0.1
MAX_PENDING: Final = 1 << 15  # backpressure: the writer waits beyond this
RETRY_FIRST_SECONDS: Final = 0.05
RETRY_MAX_SECONDS: Final = 1.0
REPORT_EVERY_SECONDS: Final = 30.0
MAX_LOOKUP_RESULTS: Final = 1000
KEY_SIZE: Final = 32  # leaf hashes and subject digests are SHA-256
# A packed row: epoch (uint32), key, index (uint64), all big-endian, so that
# sorting packed rows sorts them by (epoch, key, index): the B-tree order.
_KEY_AT: Final = 4
_REC: Final = _KEY_AT + KEY_SIZE + 8

# Rows are grouped by epoch (index >> EPOCH_BITS) ahead of the key: a new
# entry's rows land in the current epoch's slice of each B-tree, which stays
# small and cached, so an insert costs the same at 10^7 entries as at 10^4.
# Keyed by the random hash alone, every insert hit a different page of the
# whole tree: 7.5 us per entry at 2x10^5 rising to 18.5 us at 10^6 (and the
# index fell behind the log). A lookup seeks once per epoch instead of once.
EPOCH_BITS: Final = 16
# 3: ``subjects`` also holds a row per (subject, signature key ID) pair, keyed
# by rebuild.log.entry.keyed_subject, for lookups filtered by signer.
# 4: ... and each statement's package key (rebuild.log.entry.package_key).
SCHEMA_VERSION: Final = 4

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leaves(
    epoch INTEGER NOT NULL, hash BLOB NOT NULL, idx INTEGER NOT NULL,
    PRIMARY KEY(epoch, hash)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subjects(
    epoch INTEGER NOT NULL, digest BLOB NOT NULL, idx INTEGER NOT NULL,
    PRIMARY KEY(epoch, digest, idx)) WITHOUT ROWID;
"""

# One seek per epoch, lowest epoch first (so the first hit is the first entry).
_LOOKUP_LEAF = """
WITH RECURSIVE e(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM e WHERE n < ?)
SELECT t.idx FROM e JOIN leaves t ON t.epoch = e.n AND t.hash = ? ORDER BY t.idx LIMIT 1
"""
# One epoch at a time, in index order straight from the primary key (no sort):
# a digest flooded with junk costs at most a page of rows per epoch and key.
_LOOKUP_SUBJECT = """
SELECT idx FROM subjects WHERE epoch = ? AND digest = ? AND idx >= ? ORDER BY idx LIMIT ?
"""


def _migrate(db: sqlite3.Connection) -> None:
    """Drop an index of an older layout (derived data: the store re-indexes from 0)."""
    try:
        row = db.execute("SELECT v FROM meta WHERE k = 'schema'").fetchone()
    except sqlite3.OperationalError:
        row = None  # no meta table yet
    if row is not None and int(row[0]) == SCHEMA_VERSION:
        return
    db.executescript(
        "DROP TABLE IF EXISTS leaves; DROP TABLE IF EXISTS subjects; DROP TABLE IF EXISTS meta;"
    )
    db.executescript(_SCHEMA)
    db.execute("INSERT INTO meta(k, v) VALUES ('schema', ?)", (SCHEMA_VERSION,))


Row = tuple[bytes, int]


def _pack(rows: Iterable[Row], path: Path) -> bytes:
    parts = []
    for key, idx in rows:
        if len(key) != KEY_SIZE:
            raise StorageError(f"{path}: index key of {len(key)} bytes, not {KEY_SIZE}")
        parts.append((idx >> EPOCH_BITS).to_bytes(_KEY_AT, "big"))
        parts.append(key)
        parts.append(idx.to_bytes(8, "big"))
    return b"".join(parts)


def _find(buf: bytes | bytearray, key: bytes) -> list[int]:
    """Indexes recorded for ``key`` in a packed buffer (each row's key is aligned)."""
    found: list[int] = []
    if len(key) != KEY_SIZE:
        return found
    start = buf.find(key)
    while start >= 0:
        if start % _REC == _KEY_AT:
            found.append(int.from_bytes(buf[start + KEY_SIZE : start + KEY_SIZE + 8], "big"))
            start = buf.find(key, start + _REC)
        else:
            start = buf.find(key, start + 1)
    return found


class _Packed:
    """Packed rows in the chunks they arrived in: no buffer is ever grown or copied.

    (A growing buffer, copied for each transaction, left holes in the C
    heap: peak RSS at 10^6 entries ~1 MiB higher in paired runs.)
    """

    __slots__ = ("chunks", "rows")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.rows = 0

    def append(self, chunk: bytes) -> None:
        if chunk:
            self.chunks.append(chunk)
            self.rows += len(chunk) // _REC

    def find(self, key: bytes) -> list[int]:
        return [i for c in self.chunks for i in _find(c, key)]

    def sorted_rows(self) -> Iterator[tuple[int, bytes, int]]:
        """(epoch, key, index) rows in that order: the order of the B-trees."""
        records = sorted(c[i : i + _REC] for c in self.chunks for i in range(0, len(c), _REC))
        for r in records:
            idx = int.from_bytes(r[_KEY_AT + KEY_SIZE :], "big")
            yield idx >> EPOCH_BITS, r[_KEY_AT : _KEY_AT + KEY_SIZE], idx


class LookupIndex:
    """leaf hash -> first index, subject sha256 -> indexes; one writer thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # Derived data: a power loss may lose the last transactions, and
            # ``indexed`` rolls back with them, so recovery re-indexes them.
            self._db.execute("PRAGMA synchronous=NORMAL")
            # A small page cache keeps memory flat as the index grows (16 MiB
            # grew the process by ~30 MiB by 10^6 entries; 4 MiB plateaus by
            # 4x10^5 at the same throughput).
            self._db.execute("PRAGMA cache_size=-4096")
            _migrate(self._db)
            row = self._db.execute("SELECT v FROM meta WHERE k = 'indexed'").fetchone()
            self._reader = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, check_same_thread=False
            )
        except sqlite3.Error as e:
            raise StorageError(f"{path}: cannot open the lookup index: {e}") from None
        self.indexed = 0 if row is None else int(row[0])
        self._lock = threading.Condition()
        # Packed rows queued for the next transaction, and those of the
        # transaction in flight (still answered from here until committed).
        self._leaves = _Packed()
        self._subjects = _Packed()
        self._writing = (_Packed(), _Packed())
        self._pending_upto = self.indexed
        self._first_pending = 0.0
        self._stop = False
        # The last write failure (a full disk, say), cleared by the next
        # success: the thread retries, since every row is still in memory.
        self._failing: StorageError | None = None
        self._thread = threading.Thread(target=self._run, name="log-index", daemon=True)
        self._thread.start()

    # --- writer side (the store's storage thread) ---------------------------

    def wait_room(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until fewer than MAX_PENDING rows are queued.

        Called *before* a batch is committed: backpressure must never hold up
        or fail the acknowledgement of entries that are already durable.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._leaves.rows >= MAX_PENDING and not self._stop:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(min(remaining, 0.1))
            return True

    @property
    def failing(self) -> StorageError | None:
        return self._failing

    def add(self, leaf_rows: Iterable[Row], subject_rows: Iterable[Row], upto: int) -> None:
        """Queue rows for entries below ``upto`` (all already durable in tiles).

        Never blocks and never fails for storage reasons: the entries are
        committed, and a failing index write is retried by the index thread.
        """
        leaves = _pack(leaf_rows, self.path)
        subjects = _pack(subject_rows, self.path)
        with self._lock:
            if not self._leaves.rows:
                self._first_pending = time.monotonic()
            self._leaves.append(leaves)
            self._subjects.append(subjects)
            self._pending_upto = max(self._pending_upto, upto)
            self._lock.notify_all()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stop and not self._due():
                    self._lock.wait(FLUSH_SECONDS / 2)
                if not self._leaves.rows and self._pending_upto == self.indexed:
                    if self._stop:
                        return
                    continue
                leaves, subjects = self._writing = (self._leaves, self._subjects)
                upto = self._pending_upto
                self._leaves, self._subjects = _Packed(), _Packed()
            if not self._write_until_done(leaves, subjects, upto):
                return
            with self._lock:
                self.indexed = upto
                # Forget what is now in SQLite (readers check memory first).
                self._writing = (_Packed(), _Packed())
                self._lock.notify_all()

    def _write_until_done(self, leaves: _Packed, subjects: _Packed, upto: int) -> bool:
        """Write one transaction, retrying failures (e.g. a full disk) until stopped."""
        delay = RETRY_FIRST_SECONDS
        reported = 0.0
        while True:
            try:
                self._write(leaves, subjects, upto)
            except StorageError as e:
                now = time.monotonic()
                if now - reported >= REPORT_EVERY_SECONDS:
                    reported = now
                    log.error("%s; retrying (entries stay acknowledged and in the tiles)", e)
                with self._lock:
                    self._failing = e
                    self._lock.notify_all()
                    if self._stop:
                        return False  # derived data: recovery re-indexes from the tiles
                    self._lock.wait(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                continue
            if self._failing is not None:
                log.info("%s: index writes work again", self.path)
                with self._lock:
                    self._failing = None
            return True

    def _due(self) -> bool:
        if not self._leaves.rows:
            return self._pending_upto != self.indexed
        return (
            self._leaves.rows >= FLUSH_ROWS
            or time.monotonic() - self._first_pending >= FLUSH_SECONDS
        )

    def _write(self, leaves: _Packed, subjects: _Packed, upto: int) -> None:
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            # Sorted inserts touch each B-tree page once per transaction; a
            # leaf's smallest index comes first, so OR IGNORE keeps it.
            db.executemany(
                "INSERT OR IGNORE INTO leaves(epoch, hash, idx) VALUES (?, ?, ?)",
                leaves.sorted_rows(),
            )
            db.executemany(
                "INSERT OR IGNORE INTO subjects(epoch, digest, idx) VALUES (?, ?, ?)",
                subjects.sorted_rows(),
            )
            db.execute("INSERT OR REPLACE INTO meta(k, v) VALUES ('indexed', ?)", (upto,))
            db.execute("COMMIT")
        except sqlite3.Error as e:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise StorageError(f"{self.path}: index update failed: {e}") from None

    def flush(self) -> None:
        """Wait until everything queued is in SQLite (tests, shutdown, recovery).

        Raises the write failure (StorageError) if the index cannot be written.
        """
        with self._lock:
            self._first_pending = 0.0
            self._lock.notify_all()
            while self._leaves.rows or self._writing[0].rows or self._pending_upto != self.indexed:
                if self._failing is not None:
                    raise self._failing
                if not self._thread.is_alive():
                    break
                self._lock.wait(0.05)

    def close(self) -> None:
        with contextlib.suppress(StorageError):
            self.flush()
        with self._lock:
            self._stop = True
            self._lock.notify_all()
        self._thread.join(timeout=30)
        for conn in (self._reader, self._db):
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    # --- reader side (the event loop) ---------------------------------------

    def _last_epoch(self) -> int:
        """The newest epoch SQLite may hold rows for (rows beyond are in memory)."""
        return max(self.indexed, self._pending_upto, 1) - 1 >> EPOCH_BITS

    def lookup_leaf(self, leaf: bytes) -> int | None:
        # Memory before SQLite: a row leaves memory only once committed there.
        with self._lock:
            found = self._writing[0].find(leaf) + self._leaves.find(leaf)
        row = self._reader.execute(_LOOKUP_LEAF, (self._last_epoch(), leaf)).fetchone()
        if row is not None:
            found.append(int(row[0]))
        return min(found) if found else None

    def lookup_subject(
        self, keys: Sequence[bytes], cursor: int = 0, limit: int = MAX_LOOKUP_RESULTS
    ) -> tuple[list[int], int | None]:
        """Indexes >= ``cursor`` of entries with any of ``keys`` (subject digests or
        keyed subjects), ascending: at most ``limit``, and the cursor of the next
        page (None when there is none)."""
        with self._lock:
            found = {
                i
                for k in keys
                for i in self._writing[1].find(k) + self._subjects.find(k)
                if i >= cursor
            }
        last = self._last_epoch()
        for epoch in range(cursor >> EPOCH_BITS, last + 1):
            for k in keys:
                rows = self._reader.execute(_LOOKUP_SUBJECT, (epoch, k, cursor, limit + 1))
                found.update(int(r[0]) for r in rows)
            # Everything below the next epoch is known: stop once it fills a page.
            below = (epoch + 1) << EPOCH_BITS
            if sum(1 for i in found if i < below) > limit:
                break
        ordered = sorted(found)
        if len(ordered) > limit:
            return ordered[:limit], ordered[limit - 1] + 1
        return ordered, None
