"""Comparison cost: the sha256 fast path, and diagnosing two ~100 MB wheels that
differ only in timestamps (no diffoscope). Prints the figures for docs/benchmarks.md.

With ``--rss`` it also runs ``rebuild diff --json --no-diffoscope`` and the
real diffoscope on the same pair as child processes and prints each one's
wall time and peak resident memory (``wait4``'s ru_maxrss).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_compare.py [--mb 100] [--rss]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import random
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from benchmarks._launcher import Launcher
from rebuild.compare import compare
from rebuild.compare._hashing import sha256_file

DIST = "big-1.0.dist-info"


def make_files(total_mb: int) -> dict[str, bytes]:
    """Half incompressible (random), half source-like text, 512 KiB files."""
    rng = random.Random(1)
    words = [
        bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randint(2, 9)))
        for _ in range(2000)
    ]
    files: dict[str, bytes] = {}
    size = 512 << 10
    # Random files stay ~0.5 MB zipped, text ones ~0.9 MB: about 1.4 files per MB.
    for i in range(int(total_mb * 1.4)):
        if i % 2:
            files[f"big/blob{i:04d}.bin"] = os.urandom(size)
        else:
            text = bytearray()
            while len(text) < size * 4:  # text compresses ~4:1
                text += b" ".join(rng.choices(words, k=12)) + b"\n"
            files[f"big/mod{i:04d}.py"] = bytes(text)
    return files


def write_wheel(path: Path, files: dict[str, bytes], date: tuple[int, ...]) -> None:
    rows = []
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date)  # type: ignore[arg-type]
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data, compresslevel=1)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            rows.append(f"{name},sha256={digest.decode()},{len(data)}")
        rows.append(f"{DIST}/RECORD,,")
        z.writestr(zipfile.ZipInfo(f"{DIST}/RECORD", date), "\n".join(rows) + "\n")  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=100, help="approximate wheel size in MB")
    ap.add_argument("--rss", action="store_true", help="peak memory of rebuild diff, diffoscope")
    args = ap.parse_args()
    launcher = Launcher() if args.rss else None
    files = make_files(args.mb)
    with tempfile.TemporaryDirectory() as d:
        a, b = (
            Path(d) / "a" / "big-1.0-py3-none-any.whl",
            Path(d) / "b" / "big-1.0-py3-none-any.whl",
        )
        a.parent.mkdir()
        b.parent.mkdir()
        write_wheel(a, files, (2020, 1, 1, 0, 0, 0))
        write_wheel(b, files, (2024, 6, 1, 12, 0, 0))
        size = a.stat().st_size
        print(f"wheels: {size / 1e6:.1f} MB each, {len(files) + 1} entries")
        sha256_file(a)  # warm the page cache, as a rebuild just wrote the file
        sha256_file(b)
        best = min(_timed(lambda: sha256_file(a)) for _ in range(3))
        print(f"fast path, one sha256 pass: {best:.3f} s ({size / best / 1e9:.2f} GB/s)")
        same = min(_timed(lambda: compare(a, a)) for _ in range(3))
        print(f"compare(identical): {same:.3f} s (two sha256 passes)")
        t = []
        for _ in range(3):
            start = time.perf_counter()
            result = compare(a, b, diffoscope=None)
            t.append(time.perf_counter() - start)
        assert result.causes == ("timestamps",), result.causes
        print(
            f"compare(timestamps only, no diffoscope): {min(t):.3f} s best of 3, "
            f"causes {list(result.causes)}"
        )
        if launcher is not None:
            diff = [sys.executable, "-m", "rebuild", "diff", str(a), str(b), "--json"]
            seconds, rss, _, _ = launcher.run([*diff, "--no-diffoscope"])
            print(f"rebuild diff --json --no-diffoscope: {seconds:.2f} s, peak RSS {rss:.0f} MiB")
            out = Path(d) / "report.json"
            seconds, rss, _, _ = launcher.run(["diffoscope", "--json", str(out), str(a), str(b)])
            print(f"diffoscope --json: {seconds:.2f} s, peak RSS {rss:.0f} MiB")


def _timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
