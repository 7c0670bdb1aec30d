"""The git seam against real repositories made in temp dirs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rebuild.engine.fixtures import load_fixture, make_repository
from rebuild.engine.pipeline import RecipeTarget, VerifyOptions, verify
from rebuild.errors import InputError, NegativeVerdict
from rebuild.sources.git import fetch_tagged_tree


def _fixture_repo(tmp_path: Path, *, moved: bool = False) -> tuple[Path, str]:
    fx = load_fixture("python-wheel")
    repo = tmp_path / "repo"
    return repo, make_repository(fx, repo, extra_commit=moved)


def test_tag_at_named_commit_exports_the_tree_with_commit_time(tmp_path: Path) -> None:
    repo, commit = _fixture_repo(tmp_path)
    src = fetch_tagged_tree(str(repo), "v0.1.0", commit, tmp_path / "work")
    assert src.commit == commit
    assert (src.tree / "pyproject.toml").is_file()
    assert not (src.tree / ".git").exists()
    assert src.commit_time == 1717243200  # 2024-06-01T12:00:00Z, the fixture's date
    assert int((src.tree / "pyproject.toml").stat().st_mtime) == src.commit_time


def test_fixture_commit_id_is_the_same_on_every_machine(tmp_path: Path) -> None:
    _, first = _fixture_repo(tmp_path / "a")
    _, second = _fixture_repo(tmp_path / "b")
    assert first == second


def test_moved_tag_is_refused_as_a_negative_verdict(tmp_path: Path) -> None:
    repo, released = _fixture_repo(tmp_path, moved=True)
    with pytest.raises(NegativeVerdict, match="resolves to commit"):
        fetch_tagged_tree(str(repo), "v0.1.0", released, tmp_path / "work")


def test_moved_tag_makes_verify_fail_before_any_build(tmp_path: Path) -> None:
    """A moved tag ends at the fetch step with verdict failed (exit 1)."""
    repo, released = _fixture_repo(tmp_path, moved=True)
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        f"""format = "rebuild-recipe/v1"
[package]
name = "hello-wheel"
version = "0.1.0"
[source]
git = "{repo}"
tag = "v0.1.0"
commit = "{released}"
[environment]
name = "python-3.11"
lock_sha256 = "{"0" * 64}"
[build]
command = ["true"]
outputs = ["hello_wheel-0.1.0-py3-none-any.whl"]
source_date_epoch = "commit"
"""
    )
    artifact = tmp_path / "hello_wheel-0.1.0-py3-none-any.whl"
    artifact.write_bytes(b"published")
    r = verify(RecipeTarget(recipe, artifact), VerifyOptions(report_dir=tmp_path / "rep"))
    assert r.verdict == "failed"
    assert r.exit_code == 1
    assert "resolves to commit" in r.message
    assert [(s.name, s.status) for s in r.steps][:1] == [("fetch", "failed")]
    assert all(s.name != "build" for s in r.steps)


def test_missing_tag_and_option_like_url_are_input_errors(tmp_path: Path) -> None:
    repo, commit = _fixture_repo(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        fetch_tagged_tree(str(repo), "v9.9.9", commit, tmp_path / "w1")
    with pytest.raises(InputError, match="option"):
        fetch_tagged_tree("--upload-pack=touch /tmp/pwned", "v0.1.0", commit, tmp_path / "w2")
    with pytest.raises(InputError, match="full hex"):
        fetch_tagged_tree(str(repo), "v0.1.0", commit[:12], tmp_path / "w3")


def test_repository_hooks_and_config_never_run(tmp_path: Path) -> None:
    """A cloned repository's hooks are disabled (core.hooksPath=/dev/null)."""
    repo, commit = _fixture_repo(tmp_path)
    hook = repo / ".git" / "hooks" / "post-checkout"
    marker = tmp_path / "hook-ran"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    subprocess.run(["git", "-C", str(repo), "status"], check=True, capture_output=True)
    fetch_tagged_tree(str(repo), "v0.1.0", commit, tmp_path / "work")
    assert not marker.exists()
