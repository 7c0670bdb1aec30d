"""Start-up time of the ``rebuild`` command, one fresh process per run.

Times, as wall clock from spawning the process to its exit (nothing
subtracted), ``rebuild --help`` and ``rebuild X --help`` for every command and
sub-command the parser has (discovered, not listed here), ``rebuild log add``
against a real ``rebuild log serve`` on loopback started by this script, and
``rebuild gate`` once the parser has it. Each row gives the median and the
maximum of --runs runs, the median CPU time (user + system) of the process,
which a shared machine inflates far less than wall clock, and the import time
of one more run made with ``-X importtime`` (the sum of the top-level imports'
cumulative times, interpreter start-up imports included). Rows whose median
exceeds --limit-ms (300 ms, the CLI's start-up budget) are flagged and make
the exit status 1.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_cli_start.py [--runs N] [--limit-ms MS]

Runs the ``rebuild`` console script next to this interpreter (else
``python -m rebuild``) with this process's environment, so PYTHONPATH picks
the tree being measured.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rebuild.cli import build_parser, commands
from tests.logutil import make_key, start_log


@dataclass(frozen=True)
class Row:
    label: str
    median_ms: float
    max_ms: float
    cpu_ms: float
    import_ms: float
    exit_code: int


def rebuild_command() -> list[str]:
    script = Path(sys.executable).parent / "rebuild"
    return [str(script)] if script.exists() else [sys.executable, "-m", "rebuild"]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(
    argv: Sequence[str], env: dict[str, str] | None = None
) -> tuple[float, float, int, str]:
    """Wall-clock and CPU seconds of one process, its exit status and its stderr."""
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, check=False, timeout=120
    )
    elapsed = time.perf_counter() - t0
    return elapsed, _children_cpu() - cpu0, proc.returncode, proc.stderr.decode(errors="replace")


def import_ms(argv: Sequence[str]) -> float:
    """Total import time of one run: the top-level lines of ``-X importtime``."""
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1")
    _, _, _, err = run_once(argv, env)
    total_us = 0
    for line in err.splitlines():
        m = re.fullmatch(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)", line)
        if m:  # a name right after "| " was imported by no other module
            total_us += int(m.group(1))
    return total_us / 1000


def always(argv: Sequence[str]) -> Callable[[int], Sequence[str]]:
    return lambda _i: argv


def measure(
    label: str, make_argv: Callable[[int], Sequence[str]], runs: int, expect: set[int]
) -> Row:
    """Time ``runs`` runs (after one warm-up); ``make_argv(i)`` gives run i's command."""
    times: list[float] = []
    cpu: list[float] = []
    code = 0
    for i in range(runs + 1):
        elapsed, used, code, err = run_once(make_argv(i))
        if code not in expect:
            raise SystemExit(f"{label}: exit {code}, expected {sorted(expect)}:\n{err}")
        if i:  # run 0 warms the page cache and the bytecode cache
            times.append(elapsed)
            cpu.append(used)
    imp = import_ms(make_argv(runs + 1))
    ms = [t * 1000 for t in times]
    return Row(label, statistics.median(ms), max(ms), statistics.median(cpu) * 1000, imp, code)


def signed_entries(directory: Path, count: int) -> list[Path]:
    """``count`` distinct DSSE envelopes (in-toto statements), each signed with Ed25519."""
    from verify.dsse import sign_envelope
    from verify.keys import SigningKey

    key = SigningKey.generate("bench-cli-start")
    paths = []
    for i in range(count):
        statement = {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": f"artifact-{i}", "digest": {"sha256": os.urandom(32).hex()}}],
            "predicateType": "https://rebuild.invalid/bench/cli-start/v1",
            "predicate": {"run": i},
        }
        path = directory / f"entry-{i}.json"
        path.write_bytes(sign_envelope(json.dumps(statement).encode(), [key]))
        paths.append(path)
    return paths


def gate_argv(parser: argparse.ArgumentParser, work: Path) -> list[str]:
    """``rebuild gate`` with every positional and required option filled in.

    The values are real paths but not a bundle the gate accepts: the run goes
    through the command's whole import path and input handling and ends in a
    refusal, which is the start-up cost an updater pays on every check.
    """
    artifact = work / "gate-artifact.bin"
    artifact.write_bytes(b"not an accepted release\n")
    inputs = work / "gate-inputs"
    inputs.mkdir(exist_ok=True)
    argv = ["gate"]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        if not action.option_strings:
            if action.nargs not in ("?", "*"):
                argv.append(str(artifact))
        elif action.required:
            name = action.dest
            looks_like_dir = "dir" in name or "state" in name or action.metavar in ("D", "DIR")
            value = inputs / name
            if looks_like_dir:
                value.mkdir(exist_ok=True)
            else:
                value.write_text("{}\n")
            argv += [action.option_strings[-1], str(value)]
    return argv


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10, help="timed runs per command (default 10)")
    ap.add_argument("--limit-ms", type=float, default=300.0, help="flag medians above this")
    opts = ap.parse_args()
    cmd = rebuild_command()
    parser = build_parser()
    found = commands(parser)
    print(f"rebuild start-up: {' '.join(cmd)}, {opts.runs} runs each, fresh process per run")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    floor = [sys.executable, "-c", "pass"]
    rows = [measure("python -c pass (floor)", always(floor), opts.runs, {0})]
    for path in [(), *found]:
        argv = [*cmd, *path, "--help"]
        label = " ".join(["rebuild", *path, "--help"])
        rows.append(measure(label, always(argv), opts.runs, {0}))

    with tempfile.TemporaryDirectory(prefix="bench-cli-start-") as tmp:
        work = Path(tmp)
        key = make_key(work, "bench-log.example")
        server = start_log(work / "log", key, work / "log-serve.out", "--workers", "0")
        try:
            entries = signed_entries(work, opts.runs + 2)
            rows.append(
                measure(
                    "rebuild log add (loopback log)",
                    lambda i: [*cmd, "log", "add", "--log", server.url, str(entries[i])],
                    opts.runs,
                    {0},
                )
            )
        finally:
            server.stop()
        if ("gate",) in found:
            argv = [*cmd, *gate_argv(found[("gate",)], work)]
            # A refusal (1) or unusable input (2) is the expected end; 0 would mean the
            # placeholder inputs were accepted, which must never happen.
            rows.append(measure("rebuild gate (refused input)", always(argv), opts.runs, {1, 2}))
        else:
            print("rebuild gate: not in this parser yet, not measured")

    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    width = max(len(r.label) for r in rows)
    print(f"\n{'command':<{width}}  {'median':>8}  {'max':>8}  {'cpu':>8}  {'imports':>8}  exit")
    over = 0
    for r in rows:
        flag = ""
        if r.median_ms > opts.limit_ms:
            flag, over = f"  OVER {opts.limit_ms:.0f} ms", over + 1
        elif r.max_ms > opts.limit_ms:
            flag = "  (max over)"
        print(
            f"{r.label:<{width}}  {r.median_ms:6.0f}ms  {r.max_ms:6.0f}ms  {r.cpu_ms:6.0f}ms"
            f"  {r.import_ms:6.0f}ms"
            f"  {r.exit_code:>4}{flag}"
        )
    print(f"\n{over} of {len(rows) - 1} commands over {opts.limit_ms:.0f} ms (median)")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
