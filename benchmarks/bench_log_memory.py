"""Memory of the log's storage engine (store + lookup index) as the log grows.

Runs the same workload as bench_log_store.py (distinct ~1 KiB in-toto DSSE
envelopes, checked, hashed and integrated durably in batches, the lookup
index kept by its thread) in this process, and at each milestone prints the
peak RSS (VmHWM), the current RSS split into anonymous memory (heap: what a
leak would grow) and file-backed pages (mapped files: the interpreter's
shared libraries and SQLite's mmap'd ``-shm`` WAL indexes), and the size of
both SQLite write-ahead logs. Figures are KiB.

    python benchmarks/bench_log_memory.py --entries 1000000 --batch 1024
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks.bench_log_append import envelope
from benchmarks.bench_log_store import distinct_batch
from rebuild.log.store import LogStore
from verify.keys import SigningKey

MILESTONES = (10_000, 100_000, 250_000, 500_000, 1_000_000)


def _kib_fields(path: str, names: tuple[str, ...]) -> dict[str, int]:
    found: dict[str, int] = {}
    for line in Path(path).read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in names:
            found[key] = int(rest.split()[0])
    return found


def memory_kib() -> dict[str, int]:
    """Peak and current RSS of this process, current split anonymous / file-backed."""
    status = _kib_fields("/proc/self/status", ("VmHWM", "VmRSS"))
    rollup = _kib_fields("/proc/self/smaps_rollup", ("Rss", "Anonymous"))
    return {
        "peak_rss": status["VmHWM"],
        "rss": status["VmRSS"],
        "anon": rollup["Anonymous"],
        "file": rollup["Rss"] - rollup["Anonymous"],
    }


def wal_kib(state: Path) -> dict[str, int]:
    sizes = {}
    for name in ("log", "index"):
        wal = state / f"{name}.sqlite-wal"
        sizes[f"{name}_wal"] = wal.stat().st_size // 1024 if wal.exists() else 0
    return sizes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument(
        "--milestones",
        default=",".join(map(str, MILESTONES)),
        help="entry counts at which to sample (comma-separated)",
    )
    args = ap.parse_args()
    milestones = sorted({int(m) for m in args.milestones.split(",") if int(m) <= args.entries})
    template = [envelope(i, args.size) for i in range(args.batch)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        store = LogStore.open(Path(tmp), SigningKey.generate("bench.log"), "bench.log")
        start = time.perf_counter()
        done = 0
        opened = memory_kib()
        while done < args.entries:
            n = min(args.batch, args.entries - done)
            if milestones and done < milestones[0] < done + n:
                n = milestones[0] - done  # land exactly on the milestone
            store.integrate(distinct_batch(template, done, n))
            done += n
            if milestones and done == milestones[0]:
                milestones.pop(0)
                elapsed = time.perf_counter() - start
                rows.append(
                    {
                        "entries": done,
                        "entries_per_second": round(done / elapsed),
                        **memory_kib(),
                        **wal_kib(store.state_dir),
                    }
                )
        store.flush_index()
        elapsed = time.perf_counter() - start
        store.close()
    print(
        json.dumps(
            {
                "entries": done,
                "batch": args.batch,
                "seconds": round(elapsed, 2),
                "entries_per_second": round(done / elapsed),
                "after_open_kib": opened,
                "milestones_kib": rows,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
