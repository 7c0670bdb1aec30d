"""For tests that need pip's configured package index: say so when it is not reachable.

A few tests fetch from the index (a real release to rebuild, PyNaCl for a
fresh virtual environment). Offline they would fail with whatever their first
network call happens to print. ``require_package_index`` asks the index for
the project's page first and, when no answer comes, skips with "the package
index is not reachable from this host"; under scripts/test a skip fails the
run (REBUILD_NO_SKIPS=1), so the failure names its cause.
"""

from __future__ import annotations

import functools
import ssl
import urllib.error
import urllib.request

import pytest

PROBE_TIMEOUT = 30.0


@functools.cache
def _problem(url: str, cert: str | None) -> str | None:
    ctx = ssl.create_default_context(cafile=cert) if cert else None
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT, context=ctx) as resp:
            resp.read(1)
    except urllib.error.HTTPError as e:
        return f"the package index answered HTTP {e.code} for {url}"
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        return f"the package index is not reachable from this host ({url}: {reason})"
    return None


def package_index_problem(project: str) -> str | None:
    """None when pip's configured index (or $REBUILD_INDEX_URL) serves ``project``'s page."""
    from rebuild.errors import RebuildError
    from rebuild.sources.pypi import pip_config

    try:
        cfg = pip_config()
    except RebuildError as e:
        return f"cannot tell which package index pip uses: {e}"
    return _problem(f"{cfg.index_url}/{project}/", cfg.cert)


def require_package_index(project: str) -> None:
    """Skip, saying why, unless the package index answers for ``project``."""
    problem = package_index_problem(project)
    if problem is not None:
        pytest.skip(f"{problem}; this test needs it")
