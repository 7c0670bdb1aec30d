"""Turn a fixture in ``fixtures/`` into a real tagged git repository and a recipe.

Fixture sources live in the repository as plain files. This module makes a
git repository from them (fixed author, committer and dates, so the commit
id is the same on every machine), tags it, and writes the fixture's recipe
with the repository path, the commit and the environment's current lock
digest filled in. It decides nothing about verdicts; the fixture's
``expect`` field is what tests and the demo compare against.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rebuild.errors import InputError, ToolError
from rebuild.fsio import atomic_write, read_text_bounded

FIXTURES_DIR = Path(__file__).resolve().parents[2] / "fixtures"
_IDENTITY = {
    "GIT_AUTHOR_NAME": "rebuild fixtures",
    "GIT_AUTHOR_EMAIL": "fixtures@rebuild.invalid",
    "GIT_COMMITTER_NAME": "rebuild fixtures",
    "GIT_COMMITTER_EMAIL": "fixtures@rebuild.invalid",
}


@dataclass(frozen=True)
class Fixture:
    """One fixture's definition (``fixtures/NAME/fixture.toml``)."""

    name: str
    directory: Path
    description: str
    tag: str
    date: str
    artifact: Path
    expect: str
    variants: tuple[str, ...]


@dataclass(frozen=True)
class MaterializedFixture:
    """A fixture made real: repository, commit, recipe file, published artifact."""

    fixture: Fixture
    repository: Path
    commit: str
    recipe: Path
    artifact: Path


def fixtures_dir() -> Path:
    """The ``fixtures/`` directory: $REBUILD_FIXTURES_DIR or the source tree's."""
    return Path(os.environ.get("REBUILD_FIXTURES_DIR", FIXTURES_DIR))


def load_fixture(name: str, base: Path | None = None) -> Fixture:
    root = base or fixtures_dir()
    if not name or "/" in name or name.startswith("."):
        raise InputError(f"fixture name {name!r} is not a plain name")
    directory = root / name
    spec = directory / "fixture.toml"
    if not spec.is_file():
        known = sorted(p.name for p in root.iterdir() if (p / "fixture.toml").is_file())
        raise InputError(f"no fixture {name!r} in {root} (known: {', '.join(known)})")
    try:
        doc = tomllib.loads(read_text_bounded(spec, 64 * 1024))
        return Fixture(
            name=name,
            directory=directory,
            description=str(doc["description"]),
            tag=str(doc["tag"]),
            date=str(doc["date"]),
            artifact=directory / str(doc["artifact"]),
            expect=str(doc["expect"]),
            variants=tuple(str(v) for v in doc.get("variants", [])),
        )
    except (tomllib.TOMLDecodeError, KeyError) as e:
        raise InputError(f"{spec}: {e}") from None


def _git(args: list[str], cwd: Path, date: str) -> str:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
        **_IDENTITY,
        "GIT_AUTHOR_DATE": date,
        "GIT_COMMITTER_DATE": date,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "TZ": "UTC",
    }
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, env=env, capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ToolError(f"git {args[0]}: {e}") from None
    if proc.returncode != 0:
        raise ToolError(f"git {args[0]} failed: {proc.stderr.decode(errors='replace')[:300]}")
    return proc.stdout.decode().strip()


def init_repository(dest: Path, date: str) -> None:
    """An empty git repository at ``dest`` (replacing whatever was there)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    _git(["init", "--quiet", "--initial-branch=main"], dest, date)


def commit_tree(repo: Path, tree: Path, *, tag: str, date: str, message: str) -> str:
    """Make ``repo``'s files exactly ``tree``'s, commit them, tag the commit; its id.

    Author, committer and dates are fixed, so the same trees committed in the
    same order give the same commit ids on every machine.
    """
    for child in repo.iterdir():
        if child.name == ".git":
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    shutil.copytree(tree, repo, dirs_exist_ok=True)
    _git(["add", "--all"], repo, date)
    _git(["commit", "--quiet", "--allow-empty", "-m", message], repo, date)
    _git(["tag", tag], repo, date)
    return _git(["rev-parse", "HEAD"], repo, date)


def make_repository(fixture: Fixture, dest: Path, *, extra_commit: bool = False) -> str:
    """Create a tagged git repository at ``dest`` from the fixture's ``src/``.

    ``extra_commit`` adds a commit after the tag and moves the tag onto it,
    which is what a maintainer rewriting a release looks like; tests use it.
    """
    init_repository(dest, fixture.date)
    commit = commit_tree(
        dest,
        fixture.directory / "src",
        tag=fixture.tag,
        date=fixture.date,
        message=f"{fixture.name} {fixture.tag}",
    )
    if extra_commit:
        (dest / "MOVED").write_text("the tag was moved after release\n")
        _git(["add", "--all"], dest, fixture.date)
        _git(["commit", "--quiet", "-m", "moved"], dest, fixture.date)
        _git(["tag", "--force", fixture.tag], dest, fixture.date)
    return commit


def recipe_text(
    fixture: Fixture,
    *,
    repository: Path,
    commit: str,
    lock_for: Callable[[str], str],
    variant: str | None = None,
) -> str:
    """The fixture's recipe template with ``{git}``, ``{commit}`` and ``{lock_sha256}`` filled."""
    if fixture.variants and variant not in fixture.variants:
        raise InputError(f"fixture {fixture.name} needs a variant: {', '.join(fixture.variants)}")
    template = fixture.directory / (f"recipe-{variant}.toml.in" if variant else "recipe.toml.in")
    text = read_text_bounded(template, 64 * 1024)
    text = text.replace("{git}", str(repository)).replace("{commit}", commit)
    try:
        env_name = tomllib.loads(text.replace("{lock_sha256}", "0" * 64))["environment"]["name"]
    except (tomllib.TOMLDecodeError, KeyError) as e:
        raise InputError(f"{template}: {e}") from None
    return text.replace("{lock_sha256}", lock_for(str(env_name)).removeprefix("sha256:"))


def materialize(
    name: str,
    dest: Path,
    *,
    lock_for: Callable[[str], str],
    variant: str | None = None,
    base: Path | None = None,
) -> MaterializedFixture:
    """Make the repository and the filled-in recipe for fixture ``name`` under ``dest``."""
    fixture = load_fixture(name, base)
    if fixture.variants and variant not in fixture.variants:
        raise InputError(f"fixture {name} needs a variant: {', '.join(fixture.variants)}")
    dest.mkdir(parents=True, exist_ok=True)
    repo = dest / f"{name}.git"
    commit = make_repository(fixture, repo)
    text = recipe_text(fixture, repository=repo, commit=commit, lock_for=lock_for, variant=variant)
    recipe = dest / f"{name}{'-' + variant if variant else ''}.recipe.toml"
    atomic_write(recipe, text.encode())
    return MaterializedFixture(fixture, repo, commit, recipe, fixture.artifact)
