"""Real releases from pip's configured index that once defeated the strategy.

Each is a whole ``rebuild verify pypi:...`` run as a new user would type it
(index downloads on the host, the build in the python-3.11 environment with
no network). The index is the real one: these prove the strategy against
what maintainers actually published, which no local fixture can.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.logutil import run_cli

pytestmark = [
    pytest.mark.slow,
    pytest.mark.docker,
    pytest.mark.usefixtures("docker_envs", "package_index"),
]


def _verify(target: str, tmp_path: Path) -> tuple[int, dict[str, object]]:
    p = run_cli("verify", target, "--json", "--report-dir", str(tmp_path / "r"), timeout=900)
    doc = json.loads(p.stdout)
    assert isinstance(doc, dict)
    return p.returncode, doc


def test_in_tree_wrapper_backend_setuptools_scm_8_1_0_reproduces(tmp_path: Path) -> None:
    """setuptools-scm's backend-path module wraps setuptools; dropping backend-path
    (the released-copy rule) failed with "No module named '_own_version_helper'"."""
    code, doc = _verify("pypi:setuptools-scm==8.1.0", tmp_path)
    assert doc["verdict"] == "reproduced", doc.get("message")
    assert doc["upstream_sha256"] == doc["rebuilt_sha256"]
    assert doc["details"]["knobs"]["in_tree_backend"] == "wrapper"  # type: ignore[index]
    assert code == 0


def test_meson_python_0_16_0_is_rebuilt_and_found_equivalent(tmp_path: Path) -> None:
    """'Generator: meson' has no version; it failed with "cannot read a name and
    version". meson-python builds itself in-tree with meson and a ninja wheel; its
    maintainers built without SOURCE_DATE_EPOCH, so the dist-info entries carry their
    build clock: equivalent (times only), never reproduced, exit 1."""
    code, doc = _verify("pypi:meson-python==0.16.0", tmp_path)
    assert doc["verdict"] == "equivalent", doc.get("message")
    assert doc["upstream_sha256"] != doc["rebuilt_sha256"]
    assert doc["normalization"]["rules"] == ["zip-entry-times"]  # type: ignore[index]
    assert doc["details"]["knobs"]["in_tree_backend"] == "self"  # type: ignore[index]
    assert "ninja" in doc["details"]["build_requirements"]  # type: ignore[index]
    assert code == 1
