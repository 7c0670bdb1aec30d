"""Wall time of the hermetic runner vs a bare ``docker run`` of the same command.

Runs ``python3 -c pass`` in the python-3.11 environment image, alternating
the two ways so drift in machine load hits both alike, and prints median and
mean per way and their ratio. Needs the image built (rebuild env build
python-3.11). Usage: python -m benchmarks.bench_runner [RUNS]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rebuild.envs.images import verified_image
from rebuild.envs.runner import run_build

COMMAND = ["python3", "-c", "pass"]


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    _, image = verified_image("python-3.11")  # the one-time check, cached by image id
    runner: list[float] = []
    bare: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs + 1):
            t0 = time.perf_counter()
            r = run_build(
                "python-3.11",
                COMMAND,
                out_dir=Path(tmp) / f"out{i}",
                log_path=Path(tmp) / f"log{i}",
                source_date_epoch=0,
            )
            t1 = time.perf_counter()
            subprocess.run(
                ["docker", "run", "--rm", "--network", "none", image.tag, *COMMAND],
                check=True,
            )
            t2 = time.perf_counter()
            assert r.ok, r.describe()
            if i:  # the first pair warms caches and is not counted
                runner.append(t1 - t0)
                bare.append(t2 - t1)
    for label, xs in (("runner (rebuild.envs.run_build)", runner), ("bare docker run --rm", bare)):
        print(
            f"{label:34s} median {statistics.median(xs) * 1000:7.1f} ms   "
            f"mean {statistics.mean(xs) * 1000:7.1f} ms   (n={len(xs)})"
        )
    ratio = statistics.median(runner) / statistics.median(bare)
    print(f"ratio runner/bare (medians): {ratio:.2f}x")


if __name__ == "__main__":
    main()
