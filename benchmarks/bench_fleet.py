"""Benchmark the rebuilder fleet: rebuilds per minute with 1, 2 and 4 workers.

Real parts throughout: its own ``redis-server`` (append-only file, fsync on
every write) on a free loopback port, ``rebuild log serve``, one publisher and
1, 2, 4 ``rebuild fleet worker`` processes, and N fixture releases (the
php-phar fixture, each release with its own recipe digest, so N distinct
targets of the same ~2 s build) added to the log and enqueued by ``fleet
watch --once``. The clock runs from the enqueue to the last attestation in
the log.

The baseline is the same N targets through ``rebuild verify`` in a loop,
signing and publishing to the same log (in-process, so interpreter start-up
is not counted against the loop). The queue overhead per job is the one
worker's time per job minus the loop's.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_fleet.py [--jobs N] [--workers 1,2,4]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from rebuild.engine.build_env import environment_image
from rebuild.engine.pipeline import StatementTarget, VerifyOptions, run_verification
from rebuild.fleet.broker import BrokerConfig, Fleet
from rebuild.fleet.state import StateDir
from rebuild.fleet.watch import POSITION_FILE, Watcher, WatchOptions
from rebuild.keystore import generate_key_files, load_signing_key, load_verifier_key
from rebuild.log.client import LogClient
from rebuild.log.monitor import CheckpointVerifier
from tests.fleet.fleetutil import FleetProcess, RedisServer, Release, add_release, wait_for
from tests.logutil import start_log


def _releases(tmp: Path, maintainer: Path, log_url: str, n: int, tag: str) -> list[Release]:
    return [add_release(tmp, "php-phar", maintainer, log_url, tag=f"{tag}{i}") for i in range(n)]


def _log_size(url: str) -> int:
    with LogClient(url) as c:
        return int(c.checkpoint().split(b"\n")[1])


def run_loop(tmp: Path, keys: dict[str, Path], log_url: str, n: int) -> float:
    """``rebuild verify STATEMENT ARTIFACT --key --log`` for N targets, one after another."""
    rels = _releases(tmp / "loop", keys["maintainer"], log_url, n, "loop")
    key = load_signing_key(keys["rebuilder"])
    t0 = time.perf_counter()
    for i, rel in enumerate(rels):
        r = run_verification(
            StatementTarget(rel.statement, rel.artifact),
            VerifyOptions(report_dir=tmp / f"loop-report-{i}", signing_key=key, log_url=log_url),
        )
        assert r.verdict == "reproduced", r.message
    return time.perf_counter() - t0


def run_fleet_with(
    tmp: Path, keys: dict[str, Path], urls: tuple[str, str], n: int, workers: int
) -> float:
    log_url, broker = urls
    first = _log_size(log_url)  # this configuration's releases start here
    rels = _releases(tmp / f"fleet{workers}", keys["maintainer"], log_url, n, f"w{workers}-")
    procs: list[FleetProcess] = []
    common = ["--broker", broker]
    try:
        for w in range(workers):
            procs.append(
                FleetProcess(
                    ["worker", *common, "--reports", str(tmp / f"rep-{workers}-{w}")],
                    tmp / f"worker-{workers}-{w}.out",
                    "ready",
                )
            )
        publish = ["publish", *common, "--key", str(keys["rebuilder"]), "--log", log_url]
        publish += ["--state", str(tmp / f"pub-{workers}")]
        procs.append(FleetProcess(publish, tmp / f"pub-{workers}.out", "publisher ready"))
        target = _log_size(log_url) + n  # one attestation per release
        # The real watcher, in this process: its round is the enqueue, and a
        # CLI start-up per batch is not a per-job cost.
        opts = WatchOptions(
            log_url=log_url,
            verifier=CheckpointVerifier(log_key=load_verifier_key(f"{keys['log']}.pub")),
            artifact_sources=tuple(str(rel.artifacts) for rel in rels),
        )
        fleet = Fleet(BrokerConfig(url=broker))
        try:
            with StateDir(tmp / f"watch-{workers}", "watcher") as state:
                state.write_json(POSITION_FILE, {"log": log_url, "next": first})
                t0 = time.perf_counter()
                assert len(Watcher(fleet, state, opts).round().enqueued) == n
                wait_for("every attestation", lambda: _log_size(log_url) >= target, 1800)
                return time.perf_counter() - t0
        finally:
            fleet.close()
    finally:
        for p in procs:
            p.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=8, help="targets per configuration")
    ap.add_argument("--workers", default="1,2,4", help="worker counts to run")
    args = ap.parse_args()
    counts = [int(x) for x in args.workers.split(",")]
    environment_image("php-8.2")
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as d:
        tmp = Path(d)
        keys = {}
        for name in ("log", "rebuilder", "maintainer"):
            generate_key_files(f"{name}.bench.test", tmp / f"{name}.key", None)
            keys[name] = tmp / f"{name}.key"
        redis = RedisServer(tmp / "redis")
        log = start_log(tmp / "log", keys["log"], tmp / "log.out", "--workers", "0")
        try:
            n = args.jobs
            print(f"jobs per configuration: {n} (php-phar fixture), cores: {os.cpu_count()}")
            loop = run_loop(tmp, keys, log.url, n)
            print(f"verify loop:   {loop:7.1f} s  {n * 60 / loop:6.1f} rebuilds/min  "
                  f"{loop / n:5.2f} s/job")  # fmt: skip
            one = None
            for w in counts:
                t = run_fleet_with(tmp, keys, (log.url, redis.url), n, w)
                one = t if w == 1 else one
                print(f"fleet {w} worker{'s' if w > 1 else ' '}: {t:7.1f} s  "
                      f"{n * 60 / t:6.1f} rebuilds/min  {t / n:5.2f} s/job")  # fmt: skip
            if one is not None:
                overhead = (one - loop) / n
                share = overhead / (loop / n) * 100
                print(f"queue overhead per job (1 worker vs loop): {overhead * 1000:+.0f} ms "
                      f"= {share:+.1f}% of a {loop / n:.2f} s job")  # fmt: skip
        finally:
            log.stop()
            redis.stop()


if __name__ == "__main__":
    main()
