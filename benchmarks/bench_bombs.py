"""Decompression bombs against ``rebuild diff``: wall time, peak memory and disk.

Two pairs of real bombs (tests/compare/bombs.py builds them in seconds):

* eight bzip2 entries of 1 GiB each (zeros on one side, 0x01 on the other),
  diagnosis only (``rebuild diff --json``);
* one bzip2 entry of 2 GiB per side with ``--report-dir`` (diagnosis and
  diffoscope).

Each command runs from a small launcher (benchmarks/_launcher.py); peak disk
is the largest size seen, sampled every 0.2 s, of the TMPDIR and report
directory given to the command.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_bombs.py [--gib-per-entry 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from benchmarks._launcher import Launcher
from tests.compare.bombs import MiB, bzip2_bomb


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib-per-entry", type=int, default=1)
    args = ap.parse_args()
    launcher = Launcher()
    rebuild = [sys.executable, "-m", "rebuild", "diff"]
    with tempfile.TemporaryDirectory(prefix="bench-bombs-") as d:
        base = Path(d)
        tmp = base / "tmp"
        tmp.mkdir()
        env = {"TMPDIR": str(tmp), "PYTHONPATH": os.getcwd()}
        mib = args.gib_per_entry * 1024
        a = bzip2_bomb(base / "a.zip", mib, 8, fill=0)
        b = bzip2_bomb(base / "b.zip", mib, 8, fill=1)
        print(f"pair 1: {a.stat().st_size} and {b.stat().st_size} bytes, 8 x {mib} MiB each")
        s, rss, code, disk = launcher.run([*rebuild, str(a), str(b), "--json"], env, [tmp])
        print(f"  rebuild diff --json: {s:.1f} s, peak RSS {rss:.0f} MiB, exit {code}")
        c = bzip2_bomb(base / "c.zip", 2048, 1, fill=0)
        e = bzip2_bomb(base / "e.zip", 2048, 1, fill=1)
        print(f"pair 2: {c.stat().st_size} and {e.stat().st_size} bytes, 1 x {2048 * MiB} bytes")
        report = base / "report"
        s, rss, code, disk = launcher.run(
            [*rebuild, str(c), str(e), "--json", "--report-dir", str(report)],
            env,
            [tmp, report],
        )
        print(
            f"  rebuild diff --json --report-dir: {s:.1f} s, peak RSS {rss:.0f} MiB, "
            f"peak disk {disk / MiB:.0f} MiB, exit {code}"
        )


if __name__ == "__main__":
    main()
