"""The gate's in-process decision: k = 3 rebuilders, 3 witnesses (milliseconds).

Builds a realistic bundle in memory (tests/gatesim.py): the sample recipe
embedded in the release statement, three attestations, a log of 4,096
entries with the release and attestations at its end, a checkpoint
cosigned by three witnesses (quorum 3), and a previous trusted state at
size 4,000 (so step 6 verifies a consistency proof) with version 0.9.0
installed (step 7 compares). Times ``verify.gate.decide`` alone: no file,
no lock, no process start. Prints the median and the 99th percentile of the
wall-clock time, and the median CPU time of the thread (which a machine
shared with other work inflates less).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_gate.py [--runs N]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import time
from pathlib import Path

from tests.gatesim import NOW, World
from verify.gate import decide
from verify.policy import UpdatePolicy
from verify.state import EMPTY_STATE, InstalledRelease, TrustedState

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "fixtures" / "recipes" / "hello-phar.recipe.toml"
ARTIFACT = ROOT / "fixtures" / "php-phar" / "published" / "hello.phar"


def scenario(artifact: bytes) -> tuple[bytes, UpdatePolicy, TrustedState]:
    w = World(rebuilders=3, threshold=3, witnesses=3, recipe=RECIPE.read_text())
    filler = [hashlib.sha256(i.to_bytes(8, "big")).digest() * 8 for i in range(4090)]
    w.add(*filler)
    release = w.release(artifact, version="1.0.0")
    atts = [w.attest(artifact, k) for k in w.rebuilder_keys]
    w.add(release, *atts)
    old = 4000
    state = EMPTY_STATE.with_checkpoint(w.checkpoint(size=old)).with_installed(
        InstalledRelease("hello-phar", "0.9.0", "0" * 64, NOW - 86400)
    )
    bundle = w.bundle(release, atts, consistency=[w.consistency(old, len(w.entries))])
    return bundle, w.policy(), state


def measure(artifact: bytes, runs: int) -> tuple[float, float, float, int]:
    bundle, policy, state = scenario(artifact)
    d = decide(artifact, bundle, policy, state, now=NOW)
    if not d.accepted:
        raise SystemExit(f"benchmark scenario rejected: {d.failures}")
    times = []
    cpu = []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.thread_time()
        decide(artifact, bundle, policy, state, now=NOW)
        times.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return statistics.median(times) * 1e3, p99 * 1e3, statistics.median(cpu) * 1e3, len(bundle)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=2000)
    args = ap.parse_args()
    print(f"load average: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores")
    for label, data in (
        (f"fixture phar ({ARTIFACT.stat().st_size} bytes)", ARTIFACT.read_bytes()),
        ("1 MiB artifact", os.urandom(1 << 20)),
    ):
        median, p99, cpu, size = measure(data, args.runs)
        print(
            f"decide, k=3, 3 witnesses, {label}, bundle {size} bytes: "
            f"median {median:.3f} ms, p99 {p99:.3f} ms, median CPU {cpu:.3f} ms "
            f"({args.runs} runs)"
        )


if __name__ == "__main__":
    main()
