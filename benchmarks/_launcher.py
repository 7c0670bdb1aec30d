"""Measure a command's wall time, peak RSS and peak disk from a small launcher process.

Linux carries a process's peak RSS across execve, so a command spawned by a
benchmark that holds hundreds of MiB would report the benchmark's own peak.
The launcher is started before anything big is allocated and spawns the
measured commands; ``wait4`` gives each one's peak (it includes the
children the command waited for).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

_CODE = """
import json, os, subprocess, sys, time
for line in sys.stdin:
    argv, env = json.loads(line)
    start = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**os.environ, **env})
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = 0
    print(json.dumps([time.perf_counter() - start, usage.ru_maxrss / 1024,
                      os.waitstatus_to_exitcode(status)]), flush=True)
"""


def disk_usage(paths: list[Path]) -> int:
    """Bytes allocated to the files below ``paths``."""
    total = 0
    for root in paths:
        for dirpath, _, names in os.walk(root):
            for n in names:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(dirpath, n)).st_blocks * 512
    return total


class Launcher:
    """Runs commands one at a time and reports what each one cost."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CODE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def run(
        self, argv: list[str], env: dict[str, str] | None = None, watch: list[Path] | None = None
    ) -> tuple[float, float, int, int]:
        """(wall seconds, peak RSS MiB, exit code, peak bytes on disk under ``watch``).

        Disk is sampled every 0.2 s, so the peak is a lower bound.
        """
        assert self.proc.stdin and self.proc.stdout
        peak = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(0.2):
                peak = max(peak, disk_usage(watch or []))

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        self.proc.stdin.write(json.dumps([argv, env or {}]) + "\n")
        self.proc.stdin.flush()
        seconds, rss, code = json.loads(self.proc.stdout.readline())
        done.set()
        t.join()
        return float(seconds), float(rss), int(code), peak
