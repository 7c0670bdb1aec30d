"""The git seam: fetch a tagged source tree and prove it is the named commit.

Decides whether a tag in a repository resolves to the full commit id a
recipe or release statement names; a tag that moved (or never matched) is a
:class:`~rebuild.errors.NegativeVerdict` (exit 1): the published release
does not correspond to the source it claims, which is a finding, not an
operational hiccup. Anything git itself fails at is a
:class:`~rebuild.errors.ToolError`.

The tree handed to the build is ``git archive`` of that commit, unpacked by
the safe unpacker: no ``.git`` directory (hooks, config, packs are not
build inputs), and every file's mtime is the commit time, so the source is
byte-for-byte and time-for-time the same on every rebuilder. Git runs with
system and global configuration ignored, hooks disabled, no prompts and no
protocol beyond file/https/ssh/git.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rebuild.errors import InputError, NegativeVerdict, ToolError
from rebuild.sources.unpack import unpack_tar

GIT_TIMEOUT = 600.0
_COMMIT_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/+\-]{0,199}")


@dataclass(frozen=True)
class GitSource:
    """A source tree at a verified commit."""

    url: str
    tag: str
    commit: str
    commit_time: int
    tree: Path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_TERMINAL_PROMPT="0",
        GIT_ALLOW_PROTOCOL="file:https:ssh:git",
        TZ="UTC",
        LC_ALL="C",
    )
    return env


def _git(args: list[str], *, cwd: Path | None = None, what: str) -> str:
    cmd = ["git", "-c", "core.hooksPath=/dev/null", "-c", "protocol.file.allow=always", *args]
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, env=_env(), capture_output=True, timeout=GIT_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise ToolError(f"{what}: git timed out after {GIT_TIMEOUT}s") from None
    except OSError as e:
        raise ToolError(f"{what}: cannot run git: {e}") from None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ToolError(f"{what}: git {args[0]} failed: {' | '.join(err[-3:])[:500]}")
    return proc.stdout.decode("utf-8", "replace")


def fetch_tagged_tree(url: str, tag: str, commit: str, work: Path) -> GitSource:
    """Clone ``url``, require ``tag`` to resolve to ``commit``, export that tree.

    ``url`` may be a local path or a URL. Raises NegativeVerdict when the tag
    names another commit.
    """
    commit = commit.lower()
    if not _COMMIT_RE.fullmatch(commit):
        raise InputError(f"commit {commit!r} is not a full hex commit id")
    if not _TAG_RE.fullmatch(tag) or ".." in tag:
        raise InputError(f"tag {tag!r} is not a plain tag name")
    if url.startswith("-"):
        raise InputError(f"repository {url!r} looks like an option")
    repo = work / "repo.git"
    if repo.exists():
        shutil.rmtree(repo)
    work.mkdir(parents=True, exist_ok=True)
    # A bare clone: branches and tags, no work tree, nothing checked out.
    _git(["clone", "--quiet", "--bare", "--", url, str(repo)], what=f"clone {url}")
    try:
        resolved = _git(
            ["rev-parse", "--verify", "--end-of-options", f"refs/tags/{tag}^{{commit}}"],
            cwd=repo,
            what=f"resolve tag {tag}",
        ).strip()
    except ToolError:
        raise InputError(f"{url}: tag {tag!r} does not exist or is not a commit") from None
    if resolved != commit:
        raise NegativeVerdict(
            f"{url}: tag {tag} resolves to commit {resolved}, not {commit} as the release names"
        )
    commit_time = int(_git(["show", "-s", "--format=%ct", commit], cwd=repo, what="commit time"))
    tree = work / "tree"
    if tree.exists():
        shutil.rmtree(tree)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        tar = Path(tmp) / "src.tar"
        _git(
            ["archive", "--format=tar", f"--output={tar}", commit],
            cwd=repo,
            what=f"export {commit}",
        )
        unpack_tar(tar, tree)
    return GitSource(url=url, tag=tag, commit=commit, commit_time=commit_time, tree=tree)
