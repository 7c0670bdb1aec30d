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


def test_build_requirements_the_backend_asks_for_are_fetched_mkdocs_1_6_1(
    tmp_path: Path,
) -> None:
    """mkdocs' hatch build hook imports babel, which its sdist's [build-system] does not
    list; hatchling asks for it through get_requires_for_build_wheel. The build
    failed with "No module named 'babel'"; now the frontend stops, reports it, and
    the second attempt has it (held to the upload date like the rest)."""
    code, doc = _verify("pypi:mkdocs==1.6.1", tmp_path)
    assert doc["verdict"] == "reproduced", doc.get("message")
    assert doc["details"]["knobs"]["asked_for"] == ["babel"]  # type: ignore[index]
    assert (tmp_path / "r" / "build-1.log").is_file()
    assert code == 0


def test_uv_build_backend_cachecontrol_0_14_4_reproduces(tmp_path: Path) -> None:
    """'Generator: uv 0.9.9' was refused; uv_build's backend is a binary in its wheel's
    scripts, put on PATH for the build."""
    code, doc = _verify("pypi:CacheControl==0.14.4", tmp_path)
    assert doc["verdict"] == "reproduced", doc.get("message")
    assert doc["details"]["backend"] == "uv"  # type: ignore[index]
    assert code == 0


def test_the_wheel_for_the_environments_python_is_chosen_backrefs_8_3_1(tmp_path: Path) -> None:
    """backrefs publishes py310 ... py315 wheels; comparing the rebuilt py311 wheel with
    the py310 one failed with "build produced backrefs-8.3.1-py311-none-any.whl"."""
    code, doc = _verify("pypi:backrefs==8.3.1", tmp_path)
    assert doc["artifact"] == "backrefs-8.3.1-py311-none-any.whl"
    assert doc["verdict"] == "reproduced", doc.get("message")
    assert code == 0
