"""Honest requests while an attacker holds thousands of idle connections.

Starts ``rebuild log serve`` (or ``rebuild witness serve``) on 127.0.0.1,
measures an honest client's requests from 127.0.0.9 (new connection each,
``GET /checkpoint`` for the log, ``POST /add-checkpoint`` for the witness),
then opens ``--idle`` connections spread over ``--attackers`` loopback
addresses (127.0.0.2, 127.0.0.3, ...) that never send a byte, and measures
the honest requests again while they are held. Prints one JSON document:
success counts and latency percentiles before and during the flood, and how
many attacker connections the server still held.

    python benchmarks/bench_connection_flood.py --idle 45000 --attackers 3
    python benchmarks/bench_connection_flood.py --server witness --idle 30000

The client process needs an open-file limit above ``--idle`` (it raises its
soft limit to the hard one). ``--server-nofile N`` runs the server under
``prlimit --nofile=N:N``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import resource
import socket
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rebuild.keystore import load_signing_key  # noqa: E402
from tests.logutil import Server, make_key, open_idle  # noqa: E402
from verify.checkpoint import Checkpoint, sign_checkpoint  # noqa: E402
from verify.merkle import EMPTY_ROOT  # noqa: E402

HONEST = "127.0.0.9"


def honest_round(url: str, n: int, method: str, path: str, body: bytes | None) -> dict[str, float]:
    parts = urlsplit(url)
    ok, times = 0, []
    for _ in range(n):
        t = time.perf_counter()
        conn = http.client.HTTPConnection(
            parts.hostname or "", parts.port, timeout=10, source_address=(HONEST, 0)
        )
        try:
            conn.request(method, path, body=body)
            resp = conn.getresponse()
            resp.read()
            ok += resp.status == 200
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {
        "requests": n,
        "ok": ok,
        "latency_ms_p50": round(statistics.median(times), 1),
        "latency_ms_p99": round(times[min(len(times) - 1, int(len(times) * 0.99))], 1),
        "latency_ms_max": round(times[-1], 1),
    }


def attacker(host: str, port: int, sources: list[str], n: int, pipe: Connection) -> None:
    """A child process holding ``n`` idle connections until told to let go."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    socks = open_idle(host, port, sources, n)
    pipe.send(len(socks))
    pipe.recv()  # "check"
    pipe.send(still_open(socks))
    pipe.recv()  # "close"
    for s in socks:
        s.close()


def still_open(socks: list[socket.socket]) -> int:
    n = 0
    for s in socks:
        try:
            if s.recv(1) != b"":
                n += 1
        except BlockingIOError:
            n += 1
        except OSError:
            pass
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--server", choices=("log", "witness"), default="log")
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--attackers", type=int, default=3, help="attacker addresses")
    ap.add_argument("--processes", type=int, default=3, help="attacker processes")
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--server-nofile", type=int, default=0)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds after opening the flood")
    ap.add_argument("server_args", nargs="*", help="extra serve options (after --)")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = Path(tempfile.mkdtemp(prefix="bench-flood-"))
    log_key = make_key(tmp, "flood.log.bench")
    prefix = ["prlimit", f"--nofile={args.server_nofile}:{args.server_nofile}"]
    prefix = prefix if args.server_nofile else []
    if args.server == "log":
        cmd = ["log", "serve", "--dir", str(tmp / "log"), "--key", str(log_key)]
        method, path, body = "GET", "/checkpoint", None
    else:
        wkey = make_key(tmp, "w.flood.bench")
        cmd = ["witness", "serve", "--key", str(wkey), "--state", str(tmp / "ws")]
        cmd += ["--log-key", f"{log_key}.pub"]
        note = sign_checkpoint(
            Checkpoint("flood.log.bench", 0, EMPTY_ROOT), load_signing_key(log_key)
        )
        method, path, body = "POST", "/add-checkpoint", f"old 0\n\n{note}".encode()
    server = Server([*cmd, "--listen", "127.0.0.1:0", *args.server_args], tmp / "server.out",
                    prefix=prefix)  # fmt: skip
    try:
        before = honest_round(server.url, args.requests, method, path, body)
        parts = urlsplit(server.url)
        sources = [f"127.0.0.{2 + i}" for i in range(args.attackers)]
        t = time.perf_counter()
        # Several processes: one process's open-file limit cannot hold them all.
        per = -(-args.idle // args.processes)
        pipes, procs = [], []
        for _ in range(args.processes):
            ours, theirs = multiprocessing.Pipe()
            proc = multiprocessing.Process(
                target=attacker, args=(parts.hostname or "", parts.port or 0, sources, per, theirs)
            )
            proc.start()
            pipes.append(ours)
            procs.append(proc)
        opened_count = sum(p.recv() for p in pipes)
        opened = time.perf_counter() - t
        time.sleep(args.settle)
        during = honest_round(server.url, args.requests, method, path, body)
        for p in pipes:
            p.send("check")
        held = sum(p.recv() for p in pipes)
        for p in pipes:
            p.send("close")
        for proc in procs:
            proc.join()
        alive = server.proc.poll() is None
    finally:
        server.stop()
    print(json.dumps({
        "server": args.server,
        "server_args": args.server_args,
        "server_nofile": args.server_nofile or soft,
        "idle_connections": opened_count,
        "attacker_addresses": args.attackers,
        "seconds_to_open": round(opened, 1),
        "attacker_connections_still_open": held,
        "honest_before": before,
        "honest_during_flood": during,
        "server_still_running": alive,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
