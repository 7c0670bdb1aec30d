"""Offline, the tests that need the package index say that, not what pip said last."""

from __future__ import annotations

import pytest

from tests.indexutil import package_index_problem, require_package_index
from tests.logutil import free_port


def test_an_index_that_does_not_answer_is_named_as_not_reachable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    monkeypatch.setenv("REBUILD_INDEX_URL", f"http://127.0.0.1:{port}/simple")
    problem = package_index_problem("attrs")
    assert problem is not None
    assert problem.startswith("the package index is not reachable from this host")
    assert f"127.0.0.1:{port}/simple/attrs/" in problem
    with pytest.raises(pytest.skip.Exception, match="the package index is not reachable"):
        require_package_index("attrs")
