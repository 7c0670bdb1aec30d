"""Shared test helpers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

VECTORS = Path(__file__).parent / "vectors" / "tlog"


def load_vector(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


@pytest.fixture
def servers() -> Iterator[list[Any]]:
    """Test servers (tests.updaterutil.ThreadServer) a test starts; stopped afterwards."""
    running: list[Any] = []
    yield running
    for s in running:
        s.stop()


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    """With REBUILD_NO_SKIPS=1 (set by scripts/test), any skipped test fails the run.

    Skips exist so a developer without Chromium or a Docker engine can still
    run the rest; the README's test command must prove everything, so there a
    skip is a failure, not a pass.
    """
    import os

    if os.environ.get("REBUILD_NO_SKIPS") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped and session.exitstatus == 0:
        for rep in skipped:
            reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else rep.longrepr
            print(f"\nnot allowed to skip: {rep.nodeid}: {reason}")
        session.exitstatus = 1
