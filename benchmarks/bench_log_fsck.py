"""How long ``rebuild log fsck`` takes to check every byte of a log, and a restart's audit.

Builds a log of ``--entries`` distinct 1 KiB entries with the storage engine
(batches of ``--batch``), then times ``rebuild log fsck --json`` on it (every
entry bundle and hash tile hashed up to the signed root, every signed
checkpoint checked) and a ``LogStore.open`` (a restart: recovery, the audit
of the last 4,096 entries' tiles, the consistency check of the published
checkpoint). Prints one JSON document.

    PYTHONPATH=. python benchmarks/bench_log_fsck.py --entries 200000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_log_append import envelope
from benchmarks.bench_log_store import distinct_batch
from rebuild.log.store import LogStore
from verify.keys import SigningKey

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=1024)
    args = ap.parse_args()
    template = [envelope(i, 1024) for i in range(args.batch)]
    key = SigningKey.generate("bench.log")
    with tempfile.TemporaryDirectory(prefix="bench-fsck-") as tmp:
        with LogStore.open(Path(tmp), key, "bench.log") as store:
            done = 0
            while done < args.entries:
                n = min(args.batch, args.entries - done)
                store.integrate(distinct_batch(template, done, n))
                done += n
            store.publish(store.latest.note, store.latest.size)
        start = time.perf_counter()
        with LogStore.open(Path(tmp), key, "bench.log"):
            reopen = time.perf_counter() - start
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        start = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-m", "rebuild", "log", "fsck", "--dir", tmp, "--json"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        elapsed = time.perf_counter() - start
        report = json.loads(r.stdout)
    print(
        json.dumps(
            {
                "entries": done,
                "fsck_exit": r.returncode,
                "fsck_ok": report["ok"],
                "fsck_seconds": round(elapsed, 2),
                "fsck_entries_per_second": round(done / elapsed),
                "tiles_checked": report["tiles_checked"],
                "checkpoints_checked": report["checkpoints_checked"],
                "restart_seconds": round(reopen, 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
