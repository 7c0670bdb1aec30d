"""``rebuild log fsck``: check a log directory's published data against its signatures.

Read-only and lock-free, so it can run beside a live server. Checks, in
order (each problem found is reported; the check goes on):

1. The state exists when published data does (``checkpoint``, tiles), and
   names the log's key and origin.
2. Every checkpoint the log ever signed (``signed``) verifies under that key
   and origin, and no size has two roots.
3. Every tile and entry bundle of the committed tree is that tree
   (:func:`verify.tiles.audit_tiles` from size 0: each entry hashes to its
   level-0 hash, each full tile to its hash one level up, the tiles to the
   signed root).
4. Every signed, cosigned and published checkpoint's root is the root the
   tiles give for its size (one tree, every checkpoint a prefix of it).
5. The published checkpoint is not beyond the committed size, and the
   lookup index is not beyond it either.

Trust decisions are :mod:`verify`'s; this module only reads files.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from rebuild.errors import InputError
from rebuild.log.store import TileDirectory
from verify import merkle
from verify.checkpoint import Checkpoint, open_checkpoint
from verify.errors import VerifyError
from verify.keys import VerifierKey
from verify.tiles import TileHashes, audit_tiles, tiles_between

MAX_PROBLEMS: Final = 100
# Roots are recomputed for many sizes; a fresh TileHashes every so often keeps
# its tile cache (one tile per level per size checked) bounded.
_ROOTS_PER_CACHE: Final = 256


@dataclass
class FsckReport:
    directory: str
    size: int | None = None
    published_size: int | None = None
    tiles_checked: int = 0
    entries_checked: int = 0
    checkpoints_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, message: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(message)

    def as_json(self) -> dict[str, Any]:
        return {
            "dir": self.directory,
            "ok": self.ok,
            "size": self.size,
            "published_size": self.published_size,
            "tiles_checked": self.tiles_checked,
            "entries_checked": self.entries_checked,
            "checkpoints_checked": self.checkpoints_checked,
            "problems": list(self.problems),
        }


def fsck(directory: Path) -> FsckReport:
    """Check ``directory`` (see module docstring); never writes anything."""
    if not directory.is_dir():
        raise InputError(f"{directory}: no such log directory")
    report = FsckReport(str(directory))
    published = directory / "checkpoint"
    db_path = directory / "state" / "log.sqlite"
    # Step 1: state, key and origin.
    if not db_path.is_file():
        has_tiles = any(not p.is_dir() for p in (directory / "tile").rglob("*"))
        if published.exists() or has_tiles:
            report.problem(f"{db_path}: missing, but the directory holds a published log")
        else:
            report.problem(f"{directory}: not a log directory (no {db_path})")
        return report
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise InputError(f"{db_path}: cannot open: {e}") from None
    try:
        return _check(directory, db, report)
    except sqlite3.Error as e:
        report.problem(f"{db_path}: unreadable: {e}")
        return report
    finally:
        db.close()


def _check(directory: Path, db: sqlite3.Connection, report: FsckReport) -> FsckReport:
    meta = dict(db.execute("SELECT k, v FROM meta").fetchall())
    try:
        key = VerifierKey.parse(str(meta["log_key"]))
        origin = str(meta["origin"])
        size = int(meta.get("size", 0))
    except (KeyError, ValueError, VerifyError) as e:
        report.problem(f"state: the log's key, origin or size is unreadable ({e})")
        return report
    report.size = size
    tiles = TileDirectory(directory)

    # Step 2: every signed checkpoint verifies, one root per size.
    roots: dict[int, bytes] = {}
    rows = db.execute("SELECT size, root, note FROM signed ORDER BY seq").fetchall()
    for s, r, note in rows:
        cp = _open(note, key, origin, f"signed checkpoint {s}", report)
        if cp is None:
            continue
        if (cp.size, cp.root_hash) != (s, bytes(r)):
            report.problem(f"signed checkpoint {s}: the note does not match its row")
        elif roots.setdefault(cp.size, cp.root_hash) != cp.root_hash:
            report.problem(f"two different roots signed for size {cp.size}")
    if size not in roots:
        report.problem(f"committed size {size} has no signed checkpoint")
        return report

    # Step 3: every tile and bundle of the committed tree.
    problems = audit_tiles(
        size, roots[size], tiles.audit_tile, tiles.audit_bundle, max_problems=MAX_PROBLEMS
    )
    for p in problems:
        report.problem(str(p))
    report.tiles_checked = sum(1 for _ in tiles_between(0, size))
    report.entries_checked = size
    if problems:
        return report

    # Step 4: every checkpoint is a prefix of that tree.
    published = directory / "checkpoint"
    checkpoints: dict[int, set[bytes]] = {}
    for s, r in roots.items():
        checkpoints.setdefault(s, set()).add(r)
    for s, note in db.execute("SELECT size, note FROM cosigned").fetchall():
        cp = _open(note, key, origin, f"cosigned checkpoint {s}", report)
        if cp is not None:
            checkpoints.setdefault(cp.size, set()).add(cp.root_hash)
    if published.exists():
        cp = _open(published.read_bytes(), key, origin, "published checkpoint", report)
        if cp is not None:
            report.published_size = cp.size
            checkpoints.setdefault(cp.size, set()).add(cp.root_hash)
    hashes = TileHashes(size, tiles.tile)
    for n, s in enumerate(sorted(checkpoints)):
        if n % _ROOTS_PER_CACHE == 0:
            hashes = TileHashes(size, tiles.tile)
        if s > size:
            report.problem(f"a checkpoint for size {s} is beyond the committed size {size}")
            continue
        expected = merkle.EMPTY_ROOT if s == 0 else hashes.subtree(0, s)
        if checkpoints[s] != {expected}:
            report.problem(f"the checkpoint for size {s} is not a prefix of the committed tree")
        report.checkpoints_checked += 1

    # Step 5: the lookup index is derived from the tree, never ahead of it.
    index = directory / "state" / "index.sqlite"
    if index.is_file():
        try:
            idb = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
            try:
                row = idb.execute("SELECT v FROM meta WHERE k = 'indexed'").fetchone()
            finally:
                idb.close()
        except sqlite3.Error:
            row = None  # derived data: the server rebuilds an unreadable index
        if row is not None and int(row[0]) > size:
            report.problem(f"{index}: indexes {row[0]} entries but the log has {size}")
    return report


def _open(
    note: str | bytes, key: VerifierKey, origin: str, what: str, report: FsckReport
) -> Checkpoint | None:
    try:
        cp, _ = open_checkpoint(note, key, origin)
    except VerifyError as e:
        report.problem(f"{what}: does not verify under the log's key ({e})")
        return None
    return cp
