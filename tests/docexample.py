"""Run a worked example from a docs page, command by command, as a reader types it.

A block of the page's indented lines where ``$ `` starts a command, ``> ``
continues it (a here-document) and anything else is the output shown for
the command above. Every command runs in one bash session (so ``cd``,
variables and background jobs carry over); each one's exit status and
output (stdout and stderr) are recorded. ``$ echo $?`` is not run: the
status it shows is checked against the command before it.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

MARK = "<!-- worked example -->"


@dataclass
class Step:
    command: str
    shown: list[str]  # the output the page shows
    status: int | None = None
    output: str = ""


def parse(page: str) -> list[Step]:
    """The steps of the block(s) between the page's two ``MARK`` comments."""
    _, _, rest = page.partition(MARK)
    block, _, _ = rest.partition(MARK)
    steps: list[Step] = []
    for raw in block.splitlines():
        if not raw.startswith("    "):
            continue  # prose between the commands
        line = raw[4:]
        if line.startswith("$ "):
            steps.append(Step(line[2:], []))
        elif line.startswith("> ") or line == ">":
            steps[-1].command += "\n" + line[2:]
        elif steps:
            steps[-1].shown.append(line)
    return steps


def run(steps: list[Step], workdir: Path, repo: Path, timeout: float = 600) -> list[Step]:
    """Run the steps in one bash in ``workdir`` (the repository root is ``repo``)."""
    script = ["set +e", f"cd {repo}"]
    runnable = [s for s in steps if s.command.strip() != "echo $?"]
    for i, step in enumerate(runnable):
        out, rc = workdir / f"out.{i}", workdir / f"rc.{i}"
        script.append(f"{{ {step.command}\n}} > {out} 2>&1 < /dev/null; echo $? > {rc}")
    subprocess.run(
        ["bash", "-c", "\n".join(script)],
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "100"},
        timeout=timeout,
        check=False,
    )
    for i, step in enumerate(runnable):
        rc = workdir / f"rc.{i}"
        step.status = int(rc.read_text()) if rc.exists() else None
        out = workdir / f"out.{i}"
        step.output = out.read_text() if out.exists() else ""
    return steps


def mask(line: str) -> str:
    """A line with what differs from run to run (keys, digests, signatures, counts,
    times, temporary paths) replaced by placeholders."""
    line = re.sub(r"/tmp/[^\s]*", "TMP", line)
    line = re.sub(r"[A-Za-z0-9+/=]{20,}", "B64", line)
    line = re.sub(r"\b[0-9a-f]{8,}\b", "HEX", line)
    return re.sub(r"\d+(\.\d+)?", "N", line).rstrip()
