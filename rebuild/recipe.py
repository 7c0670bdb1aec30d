"""Build recipes: the TOML file that says how to rebuild one release.

A recipe names the package and version, pins the source (a git tag at a full
commit, or an sdist by sha256), pins the build environment (name + lock file
digest), and gives the build command, the output globs and the
SOURCE_DATE_EPOCH rule. This module parses recipe bytes strictly into a
:class:`Recipe` and computes its canonical digest (sha256 of the file's exact
bytes, so a recipe is identified by what was signed, never by a
re-serialization). It never fetches sources, runs commands or touches
containers: the rebuild engine does that from the :class:`Recipe` value.

The format is documented in docs/formats.md ("Recipe").
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal, TypeAlias

from rebuild.engine.plan import OUTPUT_DIR
from rebuild.errors import InputError
from rebuild.fsio import read_bounded
from verify.errors import EnvelopeFormatError
from verify.intoto import (
    MAX_RECIPE_TEXT,
    MAX_TIME,
    EnvironmentRef,
    GitSource,
    SdistSource,
    Source,
)
from verify.parsing import load_toml

RECIPE_FORMAT: Final = "rebuild-recipe/v1"
# Recipes travel inside the maintainer's release statement, itself inside a
# <= 64 KiB log entry, so they are capped well below that.
MAX_RECIPE_SIZE: Final = MAX_RECIPE_TEXT
MAX_ARGS: Final = 256
MAX_ARG_LENGTH: Final = 4096
MAX_OUTPUTS: Final = 64
MAX_ENV: Final = 64

SourceDateEpochRule: TypeAlias = Literal["commit", "sdist"] | int
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TABLES: Final = {
    "package": ({"name", "version"}, set[str]()),
    "source": (set[str](), {"git", "tag", "commit", "sdist", "sha256"}),
    "environment": ({"name", "lock_sha256"}, set[str]()),
    "build": ({"command", "outputs", "source_date_epoch"}, {"env"}),
}


@dataclass(frozen=True)
class Recipe:
    """A parsed, validated build recipe (``rebuild-recipe/v1``)."""

    package: str
    """Package name (``[package] name``), e.g. ``hello-phar``."""
    version: str
    """Release version (``[package] version``), e.g. ``1.0.0``."""
    source: Source
    """Pinned source: :class:`GitSource` (git URL, tag, full commit) or
    :class:`SdistSource` (archive URL and its sha256)."""
    environment: EnvironmentRef
    """Build environment name and the sha256 of its lock file."""
    command: tuple[str, ...]
    """The build command as an argv list, run in the source tree with no shell.
    Wrap in ``["/bin/sh", "-c", "..."]`` to get one."""
    outputs: tuple[str, ...]
    """Glob patterns, relative to the output directory ``/out``, naming the
    artifacts the build produces (never absolute, never ``..``)."""
    source_date_epoch: SourceDateEpochRule
    """``"commit"`` (the git commit's committer time), ``"sdist"`` (the newest
    mtime among the sdist's members) or a fixed integer Unix time."""
    env: tuple[tuple[str, str], ...]
    """Extra environment variables for the build, sorted by name."""
    text: str = field(repr=False)
    """The recipe's exact text (UTF-8), as embedded in release statements."""
    sha256: str
    """Canonical digest: sha256 of the recipe file's exact bytes."""

    @property
    def env_dict(self) -> dict[str, str]:
        return dict(self.env)

    def builds(self, artifact_name: str) -> bool:
        """Whether an artifact named ``artifact_name`` is one of the build's outputs:
        a rebuild compares the published file with the output of the same name."""
        return any(fnmatch.fnmatchcase(artifact_name, p) for p in self.outputs)


def recipe_digest(data: bytes) -> str:
    """The canonical recipe digest: sha256 over the exact file bytes."""
    return hashlib.sha256(data).hexdigest()


class _Reader:
    """Typed access to one TOML table with errors that name file and key."""

    def __init__(self, where: str, doc: dict[str, Any]) -> None:
        self.where = where
        self.doc = doc

    def fail(self, key: str, problem: str) -> InputError:
        return InputError(f"{self.where}: {key}: {problem}")

    def table(self, name: str) -> dict[str, Any]:
        if name not in self.doc:
            raise InputError(f"{self.where}: missing table [{name}]")
        value = self.doc[name]
        if not isinstance(value, dict):
            raise self.fail(name, "must be a table")
        required, optional = _TABLES[name]
        missing = sorted(required - value.keys())
        if missing:
            raise self.fail(f"[{name}] {missing[0]}", "missing")
        extra = sorted(value.keys() - required - optional)
        if extra:
            raise self.fail(f"[{name}] {extra[0]}", "unknown key")
        return value

    def string(self, table: dict[str, Any], tname: str, key: str, limit: int = 256) -> str:
        value = table.get(key)
        if not isinstance(value, str) or not value:
            raise self.fail(f"[{tname}] {key}", "must be a non-empty string")
        if len(value) > limit:
            raise self.fail(f"[{tname}] {key}", f"longer than {limit} characters")
        if any(ch < "\x20" or ch == "\x7f" for ch in value):
            raise self.fail(f"[{tname}] {key}", "contains a control character")
        return value

    def string_list(
        self, table: dict[str, Any], tname: str, key: str, max_items: int
    ) -> tuple[str, ...]:
        value = table.get(key)
        if not isinstance(value, list) or not value:
            raise self.fail(f"[{tname}] {key}", "must be a non-empty list of strings")
        if len(value) > max_items:
            raise self.fail(f"[{tname}] {key}", f"more than {max_items} entries")
        out: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise self.fail(f"[{tname}] {key}[{i}]", "must be a non-empty string")
            if len(item) > MAX_ARG_LENGTH or "\x00" in item:
                raise self.fail(f"[{tname}] {key}[{i}]", "too long or contains NUL")
            out.append(item)
        return tuple(out)


def _check_output_glob(r: _Reader, i: int, pattern: str) -> None:
    p = PurePosixPath(pattern)
    if p.is_absolute() or ".." in p.parts or "\\" in pattern or pattern in (".", "./"):
        raise r.fail(
            f"[build] outputs[{i}]",
            f"{pattern!r} must be a relative glob inside {OUTPUT_DIR} (not absolute, no '..')",
        )


def parse_recipe(data: bytes, where: str = "recipe") -> Recipe:
    """Parse recipe bytes; errors are one line naming ``where`` and the key."""
    doc = load_toml(data, where, MAX_RECIPE_SIZE, InputError)
    text = data.decode("utf-8")
    r = _Reader(where, doc)

    fmt = doc.get("format")
    if fmt != RECIPE_FORMAT:
        raise r.fail("format", f"must be {RECIPE_FORMAT!r} (got {fmt!r})")
    extra = sorted(doc.keys() - {"format", *_TABLES})
    if extra:
        raise r.fail(extra[0], "unknown key or table")

    pkg = r.table("package")
    package = r.string(pkg, "package", "name")
    version = r.string(pkg, "package", "version")

    src = r.table("source")
    source: Source
    if "git" in src and "sdist" in src:
        raise r.fail("[source]", "give either git or sdist, not both")
    try:
        source = _source(r, src)
        envt = r.table("environment")
        environment = EnvironmentRef(
            r.string(envt, "environment", "name"), r.string(envt, "environment", "lock_sha256")
        )
    except EnvelopeFormatError as e:
        # The shared value types name the field; prefix the file.
        raise InputError(f"{where}: {e}") from None

    build = r.table("build")
    command = r.string_list(build, "build", "command", MAX_ARGS)
    outputs = r.string_list(build, "build", "outputs", MAX_OUTPUTS)
    for i, pattern in enumerate(outputs):
        _check_output_glob(r, i, pattern)

    sde = _sde_rule(r, build["source_date_epoch"], source)

    env = _build_env(r, build.get("env", {}))

    return Recipe(
        package=package,
        version=version,
        source=source,
        environment=environment,
        command=command,
        outputs=outputs,
        source_date_epoch=sde,
        env=tuple(env),
        text=text,
        sha256=recipe_digest(data),
    )


def _source(r: _Reader, src: dict[str, Any]) -> Source:
    """``[source]``: a git repository at a tag and commit, or an sdist and its sha256.

    Raises InputError (naming the key) or EnvelopeFormatError (from the value types).
    """
    if "git" in src:
        if src.keys() != {"git", "tag", "commit"}:
            raise r.fail("[source]", "a git source needs exactly git, tag and commit")
        return GitSource(
            r.string(src, "source", "git", 2048),
            r.string(src, "source", "tag"),
            r.string(src, "source", "commit"),
        )
    if "sdist" in src:
        if src.keys() != {"sdist", "sha256"}:
            raise r.fail("[source]", "an sdist source needs exactly sdist and sha256")
        return SdistSource(
            r.string(src, "source", "sdist", 2048), r.string(src, "source", "sha256")
        )
    raise r.fail("[source]", "needs git (with tag and commit) or sdist (with sha256)")


def _sde_rule(r: _Reader, rule: object, source: Source) -> SourceDateEpochRule:
    """``[build] source_date_epoch``: "commit" (git), "sdist" (sdist) or a Unix time.

    Raises InputError for any other value or a rule the source cannot follow.
    """
    if rule == "commit":
        if not isinstance(source, GitSource):
            raise r.fail("[build] source_date_epoch", '"commit" needs a git source')
        return "commit"
    if rule == "sdist":
        if not isinstance(source, SdistSource):
            raise r.fail("[build] source_date_epoch", '"sdist" needs an sdist source')
        return "sdist"
    if type(rule) is int and 0 <= rule <= MAX_TIME:
        return rule
    raise r.fail("[build] source_date_epoch", 'must be "commit", "sdist" or a Unix time (integer)')


def _build_env(r: _Reader, raw_env: object) -> list[tuple[str, str]]:
    """``[build] env``: at most MAX_ENV variables, sorted, none of them SOURCE_DATE_EPOCH.

    Raises InputError naming the first bad variable.
    """
    env: list[tuple[str, str]] = []
    if not isinstance(raw_env, dict):
        raise r.fail("[build] env", "must be a table of strings")
    if len(raw_env) > MAX_ENV:
        raise r.fail("[build] env", f"more than {MAX_ENV} variables")
    for name, value in sorted(raw_env.items()):
        if not _ENV_NAME.fullmatch(name):
            raise r.fail(f"[build] env.{name}", "is not a valid variable name")
        if name == "SOURCE_DATE_EPOCH":
            raise r.fail(f"[build] env.{name}", "is set by the source_date_epoch rule")
        if not isinstance(value, str) or len(value) > MAX_ARG_LENGTH or "\x00" in value:
            raise r.fail(f"[build] env.{name}", "must be a string without NUL")
        env.append((name, value))
    return env


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Read and parse a recipe file (bounded)."""
    p = Path(path)
    return parse_recipe(read_bounded(p, MAX_RECIPE_SIZE), str(p))
