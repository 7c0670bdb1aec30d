"""The worked examples in README.md and docs/log.md run as a newcomer types them.

Every command of an example runs in one bash session from the repository
root; each must exit 0 unless the page shows ``$ echo $?`` after it, and
what it prints must be what the page shows, line by line, once keys,
digests, signatures, counts and times are masked (tests/docexample.py). The
only change made to a page's text: fixed ports become free ones (another
process on this machine may hold them; the pages use 5-digit ports, like the
free ones, so tables keep their width).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import docexample
from tests.logutil import free_port

REPO = Path(__file__).resolve().parent.parent
PAGES = {
    "README.md": ("18100", "18101", "18102", "18103", "18200"),
    "docs/log.md": ("8870", "8871"),
}


@pytest.mark.parametrize("page_name", sorted(PAGES))
def test_the_worked_example_runs_as_written(page_name: str, tmp_path: Path) -> None:
    page = (REPO / page_name).read_text()
    for port in PAGES[page_name]:
        assert f"127.0.0.1:{port}" in page
        page = page.replace(f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}")
    steps = docexample.parse(page)
    assert len(steps) > 10
    docexample.run(steps, tmp_path, REPO)
    previous: docexample.Step | None = None
    for i, step in enumerate(steps):
        if step.command.strip() == "echo $?":
            assert previous is not None
            assert [str(previous.status)] == step.shown, (previous.command, previous.output)
            continue
        checked_next = i + 1 < len(steps) and steps[i + 1].command.strip() == "echo $?"
        if not checked_next:
            assert step.status == 0, (step.command, step.status, step.output)
        shown = [docexample.mask(line) for line in step.shown if line.strip()]
        got = [docexample.mask(line) for line in step.output.splitlines() if line.strip()]
        assert got == shown, step.command
        previous = step
