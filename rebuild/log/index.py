"""The log's lookup index (leaf hash and subject digest to entry index), kept off the commit path.

The index is *derived* data: everything in it can be recomputed from the
entry bundles. So it lives in its own SQLite file, written by its own thread
in large, amortised transactions after entries are already durable and
acknowledged, and it records how far it got (``indexed``). After a crash the
store re-indexes the few entries between ``indexed`` and the committed size.
Random 32-byte keys make every B-tree insert touch a different page; doing
that in the acknowledgement path cost a third of the log's throughput.

Rows not yet flushed are answered from memory, so a lookup sees every
acknowledged entry. This module decides nothing about trust and never
touches tiles.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from rebuild.errors import StorageError

FLUSH_ROWS: Final = 8192
FLUSH_SECONDS: Final = 0.1
MAX_PENDING: Final = 1 << 15  # backpressure: the writer waits beyond this
MAX_LOOKUP_RESULTS: Final = 1000

# Rows are grouped by epoch (index >> EPOCH_BITS) ahead of the key: a new
# entry's rows land in the current epoch's slice of each B-tree, which stays
# small and cached, so an insert costs the same at 10^7 entries as at 10^4.
# Keyed by the random hash alone, every insert hit a different page of the
# whole tree: 7.5 us per entry at 2x10^5 rising to 18.5 us at 10^6 (and the
# index fell behind the log). A lookup seeks once per epoch instead of once.
EPOCH_BITS: Final = 16
SCHEMA_VERSION: Final = 2

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
_LOOKUP_SUBJECT = """
WITH RECURSIVE e(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM e WHERE n < ?)
SELECT t.idx FROM e JOIN subjects t ON t.epoch = e.n AND t.digest = ? ORDER BY t.idx LIMIT ?
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
        self._leaf_rows: list[Row] = []
        self._subject_rows: list[Row] = []
        self._pending_leaves: dict[bytes, int] = {}
        self._pending_subjects: dict[bytes, list[int]] = {}
        self._pending_upto = self.indexed
        self._first_pending = 0.0
        self._stop = False
        self._error: StorageError | None = None
        self._thread = threading.Thread(target=self._run, name="log-index", daemon=True)
        self._thread.start()

    # --- writer side (the store's storage thread) ---------------------------

    def add(self, leaf_rows: Iterable[Row], subject_rows: Iterable[Row], upto: int) -> None:
        """Queue rows for entries below ``upto`` (all already durable in tiles)."""
        with self._lock:
            while len(self._leaf_rows) >= MAX_PENDING and self._error is None and not self._stop:
                self._lock.wait(1.0)
            if self._error is not None:
                raise self._error
            if not self._leaf_rows:
                self._first_pending = time.monotonic()
            for leaf, idx in leaf_rows:
                self._leaf_rows.append((leaf, idx))
                self._pending_leaves.setdefault(leaf, idx)
            for digest, idx in subject_rows:
                self._subject_rows.append((digest, idx))
                self._pending_subjects.setdefault(digest, []).append(idx)
            self._pending_upto = max(self._pending_upto, upto)
            self._lock.notify_all()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stop and not self._due():
                    self._lock.wait(FLUSH_SECONDS / 2)
                if not self._leaf_rows and self._pending_upto == self.indexed:
                    if self._stop:
                        return
                    continue
                leaf_rows, subject_rows = self._leaf_rows, self._subject_rows
                upto = self._pending_upto
                self._leaf_rows, self._subject_rows = [], []
            try:
                self._write(leaf_rows, subject_rows, upto)
            except StorageError as e:
                with self._lock:
                    self._error = e
                    self._lock.notify_all()
                return
            with self._lock:
                self.indexed = upto
                # Forget what is now in SQLite (readers check memory first).
                self._pending_leaves = {}
                self._pending_subjects = {}
                for leaf, idx in self._leaf_rows:
                    self._pending_leaves.setdefault(leaf, idx)
                for digest, idx in self._subject_rows:
                    self._pending_subjects.setdefault(digest, []).append(idx)
                self._lock.notify_all()

    def _due(self) -> bool:
        if not self._leaf_rows:
            return self._pending_upto != self.indexed
        return (
            len(self._leaf_rows) >= FLUSH_ROWS
            or time.monotonic() - self._first_pending >= FLUSH_SECONDS
        )

    def _write(self, leaf_rows: list[Row], subject_rows: list[Row], upto: int) -> None:
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            # Sorted inserts touch each B-tree page once per transaction.
            db.executemany(
                "INSERT OR IGNORE INTO leaves(epoch, hash, idx) VALUES (?, ?, ?)",
                sorted((idx >> EPOCH_BITS, leaf, idx) for leaf, idx in leaf_rows),
            )
            db.executemany(
                "INSERT OR IGNORE INTO subjects(epoch, digest, idx) VALUES (?, ?, ?)",
                sorted((idx >> EPOCH_BITS, digest, idx) for digest, idx in subject_rows),
            )
            db.execute("INSERT OR REPLACE INTO meta(k, v) VALUES ('indexed', ?)", (upto,))
            db.execute("COMMIT")
        except sqlite3.Error as e:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise StorageError(f"{self.path}: index update failed: {e}") from None

    def flush(self) -> None:
        """Wait until everything queued is in SQLite (tests, shutdown, recovery)."""
        with self._lock:
            self._first_pending = 0.0
            self._lock.notify_all()
            while (self._leaf_rows or self._pending_upto != self.indexed) and self._error is None:
                if not self._thread.is_alive():
                    break
                self._lock.wait(0.05)
            if self._error is not None:
                raise self._error

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
        with self._lock:
            pending = self._pending_leaves.get(leaf)
        row = self._reader.execute(_LOOKUP_LEAF, (self._last_epoch(), leaf)).fetchone()
        found = [i for i in (pending, None if row is None else int(row[0])) if i is not None]
        return min(found) if found else None

    def lookup_subject(self, digest: bytes) -> list[int]:
        with self._lock:
            pending = list(self._pending_subjects.get(digest, ()))
        rows = self._reader.execute(
            _LOOKUP_SUBJECT, (self._last_epoch(), digest, MAX_LOOKUP_RESULTS)
        ).fetchall()
        return sorted({int(r[0]) for r in rows} | set(pending))[:MAX_LOOKUP_RESULTS]
