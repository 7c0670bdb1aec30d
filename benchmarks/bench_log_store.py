"""Throughput of the log's storage engine alone: everything but HTTP.

Per entry: the DSSE structural check and subject extraction, the leaf hash,
then durable integration in batches (tiles and bundles fsynced, the size and
its signed checkpoint committed) with the lookup index kept by its thread.
This is the capacity of the sequencing and durability layer; the HTTP
figures of bench_log_append.py show what a Python HTTP front end leaves of it.

    python benchmarks/bench_log_store.py --entries 200000 --batch 1024
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks.bench_log_append import envelope
from rebuild.log.entry import check_entry
from rebuild.log.store import LogStore, Pending
from verify import merkle
from verify.keys import SigningKey


def distinct_batch(template: list[bytes], done: int, n: int) -> list[Pending]:
    """n checked entries, each template varied by the running count (so all distinct)."""
    pending = []
    for i in range(n):
        data = template[i].replace(
            b'"rebuilder.bench+', b'"r%d.bench+' % (done + i), 1
        )  # a distinct signer name per entry, the same key ID
        pending.append(Pending(data, merkle.leaf_hash(data), check_entry(data).index_keys))
    return pending


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--size", type=int, default=1024)
    args = ap.parse_args()
    template = [envelope(i, args.size) for i in range(args.batch)]
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        store = LogStore.open(Path(tmp), SigningKey.generate("bench.log"), "bench.log")
        start = time.perf_counter()
        cpu0 = time.process_time()
        done = 0
        batches = 0
        while done < args.entries:
            n = min(args.batch, args.entries - done)
            store.integrate(distinct_batch(template, done, n))
            done += n
            batches += 1
        store.flush_index()
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu0
        store.close()
    print(
        json.dumps(
            {
                "entries": done,
                "batch": args.batch,
                "batches": batches,
                "seconds": round(elapsed, 2),
                "entries_per_second": round(done / elapsed),
                "cpu_us_per_entry": round(cpu / done * 1e6, 1),
                "ms_per_batch": round(elapsed / batches * 1000, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
