"""How long ``rebuild demo`` takes, in total and per step (target: under 3 minutes).

Runs the real ``rebuild demo --json`` as a subprocess ``--runs`` times (the
environment images must exist; the first run on a machine builds them, which
is not what this measures) and prints the median total wall time, the median
time of each chapter, the slowest steps, and the machine's load average
before and after. Exits non-zero when a run fails or the median is over target.

Run: PYTHONPATH=. .venv/bin/python benchmarks/bench_demo.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from typing import Any

from tests.logutil import cli_env

TARGET_SECONDS = 180.0


def one_run() -> tuple[float, dict[str, Any]]:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "rebuild", "demo", "--json"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    wall = time.monotonic() - t0
    doc: dict[str, Any] = json.loads(proc.stdout)
    if proc.returncode != 0:
        raise SystemExit(
            f"rebuild demo exited {proc.returncode}: {doc.get('unexpected')} {doc.get('error')}"
        )
    return wall, doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    load_before = os.getloadavg()
    runs = [one_run() for _ in range(args.runs)]
    load_after = os.getloadavg()

    med = statistics.median
    walls = [w for w, _ in runs]
    titles = {c["chapter"]: c["title"] for c in runs[0][1]["chapters"]}
    chapters: dict[int, list[float]] = defaultdict(list)
    steps: dict[str, list[float]] = defaultdict(list)
    for _, doc in runs:
        per_chapter: dict[int, float] = defaultdict(float)
        for s in doc["steps"]:
            per_chapter[s["chapter"]] += s["seconds"]
            steps[f"{s['chapter']}. {s['title']}"].append(s["seconds"])
        for n, secs in per_chapter.items():
            chapters[n].append(secs)

    print(f"rebuild demo: {args.runs} run(s) on {os.cpu_count()} cores")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print(
        f"total wall time: median {med(walls):.1f} s (min {min(walls):.1f}, "
        f"max {max(walls):.1f}); target < {TARGET_SECONDS:.0f} s"
    )
    print("per chapter (median s):")
    for n in sorted(chapters):
        print(f"  {n}. {titles.get(n, '?'):<28} {med(chapters[n]):6.1f}")
    print("slowest steps (median s):")
    for title, times in sorted(steps.items(), key=lambda kv: -med(kv[1]))[:6]:
        print(f"  {med(times):6.1f}  {title}")
    if med(walls) >= TARGET_SECONDS:
        raise SystemExit(f"median over the {TARGET_SECONDS:.0f} s target")


if __name__ == "__main__":
    main()
