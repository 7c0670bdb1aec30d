"""Why the lookup index keys rows by (epoch, hash): insert cost as the index grows.

Inserts 2 rows per entry (a leaf hash and a subject digest, random 32-byte
keys) in sorted transactions of ``--batch`` entries into SQLite with the
lookup index's settings (WAL, synchronous=NORMAL, 4 MiB page cache), laid
out either as the index was first (``hash``: keyed by the hash alone) or as
it is now (``epoch``: keyed by index >> 16, then the hash). Prints CPU and
wall time per entry for every ``--every`` entries.

    python benchmarks/bench_log_index.py --layout hash
    python benchmarks/bench_log_index.py --layout epoch
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from pathlib import Path

SCHEMAS = {
    "hash": """
        CREATE TABLE leaves(hash BLOB PRIMARY KEY, idx INTEGER NOT NULL) WITHOUT ROWID;
        CREATE TABLE subjects(digest BLOB NOT NULL, idx INTEGER NOT NULL,
            PRIMARY KEY(digest, idx)) WITHOUT ROWID;
    """,
    "epoch": """
        CREATE TABLE leaves(epoch INTEGER NOT NULL, hash BLOB NOT NULL, idx INTEGER NOT NULL,
            PRIMARY KEY(epoch, hash)) WITHOUT ROWID;
        CREATE TABLE subjects(epoch INTEGER NOT NULL, digest BLOB NOT NULL,
            idx INTEGER NOT NULL, PRIMARY KEY(epoch, digest, idx)) WITHOUT ROWID;
    """,
}
EPOCH_BITS = 16


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layout", choices=sorted(SCHEMAS), default="epoch")
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--every", type=int, default=200_000)
    ap.add_argument("--dir", type=Path, help="where the database goes (default: a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-index-", dir=args.dir) as tmp:
        path = Path(tmp) / "index.sqlite"
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA cache_size=-4096")
        db.executescript(SCHEMAS[args.layout])
        cols = "(?, ?)" if args.layout == "hash" else "(?, ?, ?)"
        done = 0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        while done < args.entries:
            n = min(args.batch, args.entries - done)
            tables: list[list[tuple[object, ...]]] = [[], []]
            for rows in tables:
                for idx in range(done, done + n):
                    key = os.urandom(32)
                    rows.append(
                        (key, idx) if args.layout == "hash" else (idx >> EPOCH_BITS, key, idx)
                    )
                rows.sort()
            db.execute("BEGIN IMMEDIATE")
            db.executemany(f"INSERT OR IGNORE INTO leaves VALUES {cols}", tables[0])
            db.executemany(f"INSERT OR IGNORE INTO subjects VALUES {cols}", tables[1])
            db.execute("COMMIT")
            done += n
            if done % args.every == 0 or done == args.entries:
                cpu1, wall1 = time.process_time(), time.perf_counter()
                print(
                    f"{args.layout}: {done:>9,} entries  "
                    f"CPU {(cpu1 - cpu0) / args.every * 1e6:5.1f} µs/entry  "
                    f"wall {(wall1 - wall0) / args.every * 1e6:5.1f} µs/entry",
                    flush=True,
                )
                cpu0, wall0 = cpu1, wall1
        db.close()
        print(f"{args.layout}: database {path.stat().st_size / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
