"""Benchmark ``rebuild verify`` against a bare ``docker run`` of the same build.

1. Wall time of the whole pipeline (git clone + tag check + export, lock
   check, hermetic build, sha256 compare) on the python-wheel fixture, with
   the environment image already built.
2. The same build through the runner alone (``rebuild.envs.run_build``).
3. Wall time of a bare ``docker run --rm --network none`` of the same image
   and build command on the same exported tree (no checks, no limits).
4. SHA-256 throughput on a large file (rebuild.hashing.sha256_file, mmap).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_verify.py [--runs N] [--hash-gib G]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from rebuild.engine.build_env import environment_image, lock_digest
from rebuild.engine.fixtures import materialize
from rebuild.engine.pipeline import RecipeTarget, VerifyOptions, run_verification
from rebuild.envs import run_build
from rebuild.hashing import sha256_file
from rebuild.recipe import load_recipe
from rebuild.sources.git import fetch_tagged_tree


def bench_verify(tmp: Path, i: int) -> float:
    made = materialize("python-wheel", tmp / "fixture", lock_for=lock_digest)
    t0 = time.perf_counter()
    r = run_verification(
        RecipeTarget(made.recipe, made.artifact), VerifyOptions(report_dir=tmp / f"rep{i}")
    )
    elapsed = time.perf_counter() - t0
    assert r.verdict == "reproduced", r.message
    return elapsed


def bench_pair(tmp: Path, runs: int) -> tuple[list[float], list[float], list[float]]:
    verify_times: list[float] = []
    runner_times: list[float] = []
    made = materialize("python-wheel", tmp / "fixture-bare", lock_for=lock_digest)
    recipe = load_recipe(made.recipe)
    src = recipe.source
    tree = fetch_tagged_tree(src.url, src.tag, src.commit, tmp / "bare-git").tree  # type: ignore[union-attr]
    for p in [tree, *tree.rglob("*")]:
        os.lchown(p, 1000, 1000) if os.geteuid() == 0 else None
    _, _, image = environment_image("python-3.11")
    times = []
    for i in range(runs):
        # Interleaved with the verify runs: the machine is shared, and load
        # drifts over a minute more than the difference being measured.
        verify_times.append(bench_verify(tmp, i))
        t0 = time.perf_counter()
        run = run_build(
            "python-3.11",
            recipe.command,
            out_dir=tmp / f"runner-out{i}",
            log_path=tmp / f"runner{i}.log",
            source_date_epoch=1717243200,
            source_dir=tree,
        )
        runner_times.append(time.perf_counter() - t0)
        assert run.ok, run.describe()
        out = tmp / f"bare-out{i}"
        out.mkdir()
        os.chmod(out, 0o777)
        t0 = time.perf_counter()
        subprocess.run(
            [
                "docker",
                "run",
                "--rm",
                "--network",
                "none",
                "--user",
                "1000:1000",
                "-e",
                "SOURCE_DATE_EPOCH=1717243200",
                "-e",
                "HOME=/tmp",
                "-v",
                f"{tree}:/src:ro",
                "-v",
                f"{out}:/out",
                "--tmpfs",
                "/build:uid=1000",
                image,
                "sh",
                "-c",
                'cp -R /src/. /build/ && cd /build && exec "$@"',
                "sh",
                *recipe.command,
            ],
            check=True,
            capture_output=True,
        )
        times.append(time.perf_counter() - t0)
    return verify_times, runner_times, times


def bench_hash(tmp: Path, gib: float) -> tuple[float, float, float]:
    path = tmp / "big.bin"
    block = os.urandom(64 * 1024 * 1024)
    size = int(gib * 1024**3)
    with path.open("wb") as f:
        written = 0
        while written < size:
            f.write(block)
            written += len(block)
    sha256_file(path)  # warm the page cache: measure hashing, not the disk
    t0 = time.perf_counter()
    sha256_file(path)
    mmap_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with path.open("rb") as f:
        hashlib.file_digest(f, "sha256")
    fd_s = time.perf_counter() - t0
    path.unlink()
    return written / 1e9, mmap_s, fd_s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--hash-gib", type=float, default=2.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as d:
        tmp = Path(d)
        environment_image("python-3.11")  # built and lock-checked before timing
        bench_verify(tmp / "warm", 0)
        v, r, b = bench_pair(tmp, args.runs)
        mv, mr, mb = statistics.median(v), statistics.median(r), statistics.median(b)
        print(f"rebuild verify (fixture wheel), median of {args.runs}: {mv:.3f} s  {v}")
        print(f"runner only (run_build),        median of {args.runs}: {mr:.3f} s  {r}")
        print(f"bare docker run (same build),   median of {args.runs}: {mb:.3f} s  {b}")
        print(f"ratio verify / bare docker run: {mv / mb:.2f}x")
        gb, mmap_s, fd_s = bench_hash(tmp, args.hash_gib)
        print(f"sha256 {gb:.2f} GB: mmap {gb / mmap_s:.2f} GB/s, file_digest {gb / fd_s:.2f} GB/s")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
