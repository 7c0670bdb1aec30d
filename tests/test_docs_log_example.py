"""docs/log.md's worked example, run as a newcomer would type it, unchanged.

Every command of the example runs in one bash session from the repository
root; each must exit 0 unless the page shows ``$ echo $?`` after it, and
what it prints must be what the page shows, line by line, once keys,
digests, signatures, counts and times are masked. The only change made to
the page's text: its two fixed ports become free ones (another process on
this machine may hold them).
"""

from __future__ import annotations

import socket
from pathlib import Path

from tests import docexample

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "log.md"
PORTS = ("8870", "8871")


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def test_the_worked_example_in_docs_log_md_runs_as_written(tmp_path: Path) -> None:
    page = PAGE.read_text()
    for port in PORTS:
        assert f"127.0.0.1:{port}" in page
        page = page.replace(f"127.0.0.1:{port}", f"127.0.0.1:{_free_port()}")
    steps = docexample.parse(page)
    assert len(steps) > 20
    docexample.run(steps, tmp_path, REPO)
    previous: docexample.Step | None = None
    for step in steps:
        if step.command.strip() == "echo $?":
            assert previous is not None
            assert [str(previous.status)] == step.shown, (previous.command, previous.output)
            continue
        follows = steps[steps.index(step) + 1 :]
        if not (follows and follows[0].command.strip() == "echo $?"):
            assert step.status == 0, (step.command, step.status, step.output)
        shown = [docexample.mask(line) for line in step.shown if line.strip()]
        got = [docexample.mask(line) for line in step.output.splitlines() if line.strip()]
        assert got == shown, step.command
        previous = step
