"""Catching up after skipped releases: a consistency proof from a log's tiles over HTTPS.

A log of 1,000,000 entries (three tile levels), its hash tiles built in
memory with the project's own code and served by an aiohttp server on
127.0.0.1 with a ``trustme`` certificate (what a mirror's ``log/`` or the
log's tile API serves). For random stored sizes, times
``rebuild.updater.logtiles.fetch_consistency_blocking``: list the tiles,
fetch them at once over one new TLS session, compute the proof, check it
against the signed root. That is the whole extra cost of catching up except
the second gate run (about a millisecond, benchmarks/bench_gate.py). Prints
the median and the worst time, and how many tiles (and bytes) a proof read.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_catchup.py [--runs N] [--size N]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from aiohttp import web

from rebuild.updater.fetch import FetchOptions
from rebuild.updater.logtiles import fetch_consistency_blocking, tiles_needed
from tests.updaterutil import TLS, ThreadServer
from verify.gate import ConsistencyNeed
from verify.merkle import leaf_hash, root
from verify.tiles import tiles_from_leaf_hashes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--size", type=int, default=1_000_000)
    args = ap.parse_args()
    leaves = [leaf_hash(i.to_bytes(8, "big")) for i in range(args.size)]
    tiles = {t.path(): data for t, data in tiles_from_leaf_hashes(leaves).items()}
    new_root = root(leaves)

    async def get(request: web.Request) -> web.Response:
        data = tiles.get(request.match_info["path"])
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data)

    app = web.Application()
    app.router.add_get("/{path:.*}", get)
    with tempfile.TemporaryDirectory() as tmp:
        tls = TLS(Path(tmp))
        server = ThreadServer(app, tls.server_context())
        options = FetchOptions(ca_bundle=tls.ca_bundle)
        rng = random.Random(1)
        times: list[float] = []
        counts: list[int] = []
        try:
            for _ in range(args.runs):
                old = rng.randrange(1, args.size)
                need = ConsistencyNeed("bench", old, args.size, new_root)
                t0 = time.perf_counter()
                got = fetch_consistency_blocking([server.url], need, options)
                times.append(time.perf_counter() - t0)
                if got.proof is None:
                    raise SystemExit(f"no proof: {got.as_json()}")
                counts.append(len(tiles_needed(need)))
        finally:
            server.stop()
    print(f"log of {args.size:,} entries, {args.runs} random stored sizes, 2 cores")
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")
    print(f"tiles per proof: median {statistics.median(counts):.0f}, max {max(counts)}")
    print(f"bytes per proof: at most {max(counts) * 8192:,} (a full tile is 8 KiB)")
    print(
        f"catch-up (list, fetch over a new TLS session, prove, check): "
        f"median {statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
