"""Append throughput and memory of ``rebuild log serve`` under concurrent HTTP clients.

Starts the real server (``python -m rebuild log serve``) as a subprocess on
127.0.0.1, then drives it from this process with many keep-alive HTTP/1.1
connections (raw asyncio streams on uvloop, so the load generator costs as
little CPU as possible on a 2-core machine). Every request adds a distinct
~1 KiB in-toto DSSE envelope and is answered only once durable. Prints the
overall and worst-window rates, latency percentiles, and the server's peak
RSS after each milestone.

    python benchmarks/bench_log_append.py --entries 100000 --connections 64
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# --calibrate: the same load against a trivial aiohttp low-level server that
# only reads and JSON-parses each body. Its rate is the ceiling any
# aiohttp-based log can reach on this machine with this load generator.
TRIVIAL_SERVER = """
import asyncio, json, sys
from aiohttp import web
try:
    import uvloop
    uvloop.install()
except ImportError:
    pass
async def handle(request):
    json.loads(await request.read())
    return web.Response(body=b'{"index": 0, "leaf_hash": ""}', content_type="application/json")
async def main():
    server = await asyncio.get_running_loop().create_server(
        web.Server(handle, access_log=None), "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"listening on http://127.0.0.1:{port}", file=sys.stderr, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def envelope(i: int, size: int) -> bytes:
    digest = hashlib.sha256(b"%d" % i).hexdigest()
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": f"artifact-{i}.whl", "digest": {"sha256": digest}}],
        "predicateType": "https://example.org/bench/v1",
        "predicate": {"pad": ""},
    }
    raw = json.dumps(statement).encode()
    statement["predicate"] = {"pad": "x" * max(0, (size - 200) * 3 // 4 - len(raw))}
    payload = base64.b64encode(json.dumps(statement).encode()).decode()
    env = {
        "payloadType": "application/vnd.in-toto+json",
        "payload": payload,
        # a C2SP name+keyid hint, as rebuild writes: the log indexes (subject, key ID)
        "signatures": [
            {"keyid": "rebuilder.bench+0123abcd", "sig": base64.b64encode(b"s" * 64).decode()}
        ],
    }
    return json.dumps(env).encode()


class Envelopes:
    """``envelope(i, size)`` from templates: the same bytes for ~2 µs instead of ~12.

    The load generator shares the machine's two cores with the server, so
    every microsecond it spends is taken from the server being measured.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._templates: dict[int, tuple[bytes, bytes, bytes, bytes, bytes]] = {}

    def _template(self, digits: int) -> tuple[bytes, bytes, bytes, bytes, bytes]:
        marker_i, marker_d = "7" * digits, "f" * 64
        i = int(marker_i)
        whole = envelope(i, self.size)
        env = json.loads(whole)
        stmt = base64.b64decode(env["payload"])
        name = f"artifact-{marker_i}.whl".encode()
        before, after = stmt.split(name)
        d0 = after.index(hashlib.sha256(b"%d" % i).hexdigest().encode())
        e0, e1 = whole.split(env["payload"].encode())
        t = (before + b"artifact-", b".whl" + after[:d0], after[d0 + len(marker_d) :], e0, e1)
        self._templates[digits] = t
        return t

    def __call__(self, i: int) -> bytes:
        n = b"%d" % i
        t0, t1, t2, e0, e1 = self._templates.get(len(n)) or self._template(len(n))
        digest = hashlib.sha256(n).hexdigest().encode()
        return e0 + base64.b64encode(t0 + n + t1 + digest + t2) + e1


def _children(pid: int) -> list[int]:
    """The server's front-end processes (its direct children)."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


def _status_kib(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(field + r":\s+(\d+)", status).group(1))  # type: ignore[union-attr]


def peak_rss_kib(pid: int) -> dict[str, int]:
    """Peak RSS (VmHWM) of the server process and of each front-end process."""
    peaks = {"sequencer": _status_kib(pid, "VmHWM")}
    for n, kid in enumerate(sorted(_children(pid))):
        with contextlib.suppress(OSError, AttributeError):
            peaks[f"front-end {n}"] = _status_kib(kid, "VmHWM")
    return peaks


def cpu_seconds(pid: int) -> dict[str, float]:
    """utime + stime of the server and of each front-end (all their threads), in seconds."""
    out: dict[str, float] = {}
    for name, p in (
        ("sequencer", pid),
        *((f"front-end {n}", kid) for n, kid in enumerate(sorted(_children(pid)))),
    ):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            out[name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


async def run_load(
    port: int,
    total: int,
    connections: int,
    *,
    size: int,
    pid: int,
    milestones: list[int],
    per_request: int = 1,
) -> dict[str, object]:
    counter = iter(range(total))
    make = Envelopes(size)
    for probe in (0, 7, 12345, total - 1):
        assert make(probe) == envelope(probe, size), "envelope template is wrong"
    latencies: list[float] = []
    done = 0
    window: list[tuple[float, int]] = []
    rss_at: dict[int, dict[str, int]] = {}
    errors = 0

    async def worker() -> None:
        nonlocal done, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        path = b"/add" if per_request == 1 else b"/add-bundle"
        head = b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        for i in counter:
            if per_request == 1:
                body = make(i)
                n_entries = 1
            else:
                # a tlog-tiles entry bundle: uint16 length prefix per entry
                ids = [i, *(j for _, j in zip(range(per_request - 1), counter, strict=False))]
                body = b"".join(len(e).to_bytes(2, "big") + e for e in (make(j) for j in ids))
                n_entries = len(ids)
            t0 = time.perf_counter()
            writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            hdr = await reader.readuntil(b"\r\n\r\n")
            k = hdr.lower().index(b"content-length:")
            n = int(hdr[k + 15 : hdr.index(b"\r\n", k)])
            await reader.readexactly(n)
            latencies.append(time.perf_counter() - t0)
            if not hdr.startswith(b"HTTP/1.1 200"):
                errors += 1
            done += n_entries
            if milestones and done >= milestones[0]:
                rss_at[milestones.pop(0)] = peak_rss_kib(pid)
        writer.close()

    async def sampler() -> None:
        while True:
            window.append((time.perf_counter(), done))
            await asyncio.sleep(1.0)

    start = time.perf_counter()
    server_cpu0, client_cpu0 = cpu_seconds(pid), time.process_time()
    s = asyncio.create_task(sampler())
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - start
    server_cpu1 = cpu_seconds(pid)
    by_process = {k: v - server_cpu0.get(k, 0.0) for k, v in server_cpu1.items()}
    server_cpu = sum(by_process.values())
    client_cpu = time.process_time() - client_cpu0
    s.cancel()
    window.append((time.perf_counter(), done))
    # worst 10-second window (sustained rate), ignoring the first second of ramp-up
    rates = []
    for a in range(1, len(window)):
        for b in range(a + 1, len(window)):
            if window[b][0] - window[a][0] >= 10.0:
                rates.append((window[b][1] - window[a][1]) / (window[b][0] - window[a][0]))
                break
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {
        "entries": done,
        "errors": errors,
        "seconds": round(elapsed, 2),
        "entries_per_second": round(done / elapsed),
        "worst_10s_window_per_second": round(min(rates)) if rates else None,
        "server_cpu_us_per_entry": round(server_cpu / max(done, 1) * 1e6, 1),
        "server_cpu_us_per_entry_by_process": {
            k: round(v / max(done, 1) * 1e6, 1) for k, v in by_process.items()
        },
        "client_cpu_us_per_entry": round(client_cpu / max(done, 1) * 1e6, 1),
        "latency_ms_p50": round(pct(0.50), 1),
        "latency_ms_p99": round(pct(0.99), 1),
        "latency_ms_max": round(latencies[-1] * 1000, 1),
        "server_peak_rss_mib_at": {
            str(k): {p: round(kib / 1024, 1) for p, kib in v.items()}
            for k, v in sorted(rss_at.items())
        },
        "entry_bytes": len(envelope(0, size)),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--connections", type=int, default=512)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--batch-ms", type=float, default=0.0)
    ap.add_argument("--workers", default="auto", help="rebuild log serve --workers")
    ap.add_argument(
        "--per-request", type=int, default=1, help="entries per request (>1: POST /add-bundle)"
    )
    ap.add_argument("--dir", type=Path, help="log directory (default: a temp dir)")
    ap.add_argument(
        "--calibrate", action="store_true", help="drive a trivial aiohttp server instead"
    )
    ap.add_argument(
        "--server-script", type=Path, help="drive this script's server instead (calibration)"
    )
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with tempfile.TemporaryDirectory(prefix="bench-log-", dir=args.dir) as tmp:
        key = Path(tmp) / "log.key"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        subprocess.run(
            [sys.executable, "-m", "rebuild", "key", "generate", "bench.log", "--out", str(key)],
            check=True,
            env=env,
            capture_output=True,
        )
        command = [
            sys.executable,
            "-m",
            "rebuild",
            "log",
            "serve",
            "--dir",
            str(Path(tmp) / "log"),
            "--key",
            str(key),
            "--listen",
            "127.0.0.1:0",
            "--batch-ms",
            str(args.batch_ms),
            "--workers",
            args.workers,
        ]
        if args.calibrate:
            command = [sys.executable, "-c", TRIVIAL_SERVER]
        elif args.server_script:
            command = [sys.executable, str(args.server_script)]
        server = subprocess.Popen(
            command,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stderr is not None
            line = server.stderr.readline()
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if not m:
                raise SystemExit(f"server did not start: {line}{server.stderr.read()}")
            port = int(m.group(1))
            marks = (10_000, 100_000, 250_000, 500_000, 750_000, 1_000_000, 1_500_000, 2_000_000)
            milestones = [m for m in marks if m <= args.entries]
            result = asyncio.run(
                run_load(
                    port,
                    args.entries,
                    args.connections,
                    size=args.size,
                    pid=server.pid,
                    milestones=milestones,
                    per_request=args.per_request,
                )
            )
            result["server_final_peak_rss_mib"] = {
                p: round(kib / 1024, 1) for p, kib in peak_rss_kib(server.pid).items()
            }
            result["workers"] = args.workers
            result["connections"] = args.connections
            result["entries_per_request"] = args.per_request
            result["batch_ms"] = args.batch_ms
            result["server"] = "trivial aiohttp (calibration)" if args.calibrate else "rebuild log"
            du = subprocess.run(
                ["du", "-sm", str(Path(tmp) / "log")], capture_output=True, text=True, check=False
            )
            result["log_dir_mib"] = du.stdout.split()[0] if du.stdout else None
        finally:
            server.terminate()
            server.wait(timeout=60)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
