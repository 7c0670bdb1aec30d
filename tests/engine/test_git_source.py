"""The git seam against real repositories made in temp dirs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from rebuild.engine.fixtures import load_fixture, make_repository
from rebuild.engine.pipeline import RecipeTarget, VerifyOptions, run_verification
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
    r = run_verification(RecipeTarget(recipe, artifact), VerifyOptions(report_dir=tmp_path / "rep"))
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


def _plant_hooks(directory: Path, marker: Path) -> Path:
    """Executable hooks in ``directory`` that record their name in ``marker``.

    reference-transaction runs on every ref update, a bare clone's included;
    post-checkout is what a clone with a work tree would run.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("reference-transaction", "post-checkout"):
        hook = directory / name
        hook.write_text(f'#!/bin/sh\necho "{name}" >> {marker}\n')
        hook.chmod(0o755)
    return directory


def test_hooks_from_gits_template_directory_never_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hook in git's template directory runs in every clone; core.hooksPath=/dev/null stops it.

    git copies its template directory (built in, e.g. /usr/share/git-core/templates)
    into every repository it creates, and the bare clone's ref updates then run
    the hooks found there. Ignoring the user's and the system's configuration
    does not reach that directory, and a test must not change it on a shared
    machine, so a ``git`` first on PATH runs the real git with GIT_TEMPLATE_DIR
    set: a stand-in for a machine whose git ships hooks in its template.
    """
    repo, commit = _fixture_repo(tmp_path)
    marker = tmp_path / "hooks-ran"
    template = tmp_path / "template"
    _plant_hooks(template / "hooks", marker)
    real_git = shutil.which("git")
    assert real_git is not None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "git"
    wrapper.write_text(f'#!/bin/sh\nGIT_TEMPLATE_DIR={template} exec {real_git} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    # The hook is where a clone runs it: a plain bare clone does.
    subprocess.run(["git", "clone", "--quiet", "--bare", str(repo), str(tmp_path / "plain.git")],
                   check=True, capture_output=True)  # fmt: skip
    assert "reference-transaction" in marker.read_text()
    marker.unlink()
    src = fetch_tagged_tree(str(repo), "v0.1.0", commit, tmp_path / "work")
    assert src.commit == commit
    assert not marker.exists()


def test_users_git_config_never_reaches_the_fetch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user's git configuration (HOME, XDG) can neither add hooks nor redirect the clone.

    The configuration names a hooks directory, a template directory with hooks
    and a url.insteadOf that sends the clone to another repository whose tag
    names another commit; git honours all three for a plain clone.
    """
    repo, commit = _fixture_repo(tmp_path)
    other = tmp_path / "other"
    make_repository(load_fixture("python-wheel"), other, extra_commit=True)
    marker = tmp_path / "hooks-ran"
    hooks = _plant_hooks(tmp_path / "hooks", marker)
    template = tmp_path / "template"
    _plant_hooks(template / "hooks", marker)
    config = (
        f"[core]\n\thooksPath = {hooks}\n[init]\n\ttemplateDir = {template}\n"
        f'[url "{other}"]\n\tinsteadOf = {repo}\n'
    )
    home = tmp_path / "home"
    (home / ".config" / "git").mkdir(parents=True)
    (home / ".gitconfig").write_text(config)
    (home / ".config" / "git" / "config").write_text(config)
    for name in ("GIT_CONFIG_GLOBAL", "GIT_CONFIG_NOSYSTEM", "GIT_TEMPLATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    # A plain clone with this configuration runs the hooks and fetches the other repository.
    plain = tmp_path / "plain.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(repo), str(plain)],
                   check=True, capture_output=True)  # fmt: skip
    assert marker.read_text()
    tag = subprocess.run(["git", "-C", str(plain), "rev-parse", "v0.1.0^{commit}"],
                         check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    assert tag != commit
    marker.unlink()
    src = fetch_tagged_tree(str(repo), "v0.1.0", commit, tmp_path / "work")
    assert src.commit == commit
    assert not marker.exists()
