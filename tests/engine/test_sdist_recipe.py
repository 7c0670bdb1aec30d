"""Recipes with an sdist source: the digest is checked and the archive unpacked safely."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

from rebuild.engine.pipeline import RecipeTarget, VerifyOptions, run_verification


def _recipe(tmp: Path, sdist: Path, sha256: str) -> Path:
    r = tmp / "r.toml"
    r.write_text(
        f"""format = "rebuild-recipe/v1"
[package]
name = "demo"
version = "1.0"
[source]
sdist = "file://{sdist}"
sha256 = "{sha256}"
[environment]
name = "python-3.11"
lock_sha256 = "{"0" * 64}"
[build]
command = ["true"]
outputs = ["demo-1.0-py3-none-any.whl"]
source_date_epoch = "sdist"
"""
    )
    return r


def _sdist(path: Path, name: str) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo(name)
        info.size = 5
        tf.addfile(info, io.BytesIO(b"pwned"))
    return path


def _artifact(tmp: Path) -> Path:
    a = tmp / "demo-1.0-py3-none-any.whl"
    a.write_bytes(b"published")
    return a


def test_sdist_with_another_digest_than_the_recipe_is_refused(tmp_path: Path) -> None:
    sdist = _sdist(tmp_path / "demo-1.0.tar.gz", "demo-1.0/x.py")
    r = run_verification(
        RecipeTarget(_recipe(tmp_path, sdist, "ab" * 32), _artifact(tmp_path)),
        VerifyOptions(report_dir=tmp_path / "rep"),
    )
    assert r.verdict == "error"
    assert "sha256 differs" in r.message
    assert all(s.name != "build" for s in r.steps)


def test_path_traversal_sdist_named_by_a_recipe_is_refused(tmp_path: Path) -> None:
    sdist = _sdist(tmp_path / "demo-1.0.tar.gz", "demo-1.0/../../../escaped.py")
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    r = run_verification(
        RecipeTarget(_recipe(tmp_path, sdist, digest), _artifact(tmp_path)),
        VerifyOptions(report_dir=tmp_path / "rep"),
    )
    assert r.verdict == "error"
    assert "escapes the destination" in r.message
    assert not list(tmp_path.rglob("escaped.py"))
