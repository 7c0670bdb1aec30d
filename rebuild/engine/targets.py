"""Turn a verify target into fetched, checked inputs and a build plan (step 1).

Decides which source a target names and whether the inputs are the ones
named: the artifact must be a subject of a signed release statement (when
maintainer keys are given), the recipe text must match the statement's
recipe digest, the statement's source must equal the recipe's, a git tag
must resolve to the named commit, an sdist must have the named sha256. It
fetches through the git and index seams and never runs fetched code.
"""

from __future__ import annotations

import hashlib
import os
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rebuild.engine import build_env
from rebuild.engine.plan import OUTPUT_DIR, BuildPlan
from rebuild.errors import InputError, NegativeVerdict, UsageError
from rebuild.fetch import fetch_subject, read_release, urls_for
from rebuild.fsio import atomic_write, read_bounded
from rebuild.hashing import sha256_file
from rebuild.keystore import load_verifier_key
from rebuild.recipe import Recipe, load_recipe, parse_recipe
from rebuild.release import verify_release
from rebuild.sources.git import fetch_tagged_tree
from rebuild.sources.pypi import IndexFile, PackageIndex, locate_release
from rebuild.strategies import pywheel
from verify.dsse import MAX_ENVELOPE_SIZE, Envelope
from verify.errors import VerifyError
from verify.intoto import GitSource, ReleasePredicate, SdistSource, Statement

MAX_SDIST = 512 * 1024 * 1024


# -- targets --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PypiTarget:
    """``pypi:NAME==VERSION``: a release on pip's configured index."""

    name: str
    version: str

    @property
    def label(self) -> str:
        return f"pypi:{self.name}=={self.version}"


@dataclass(frozen=True)
class RecipeTarget:
    """A recipe file and the artifact it claims to build."""

    recipe: Path
    artifact: Path

    @property
    def label(self) -> str:
        return f"{self.recipe} {self.artifact}"


@dataclass(frozen=True)
class StatementTarget:
    """A maintainer's release statement (DSSE envelope) and the released artifact;
    without the artifact, it is fetched from ``urls`` or the statement's own
    download locations (rebuild.fetch)."""

    statement: Path
    artifact: Path | None
    maintainer_keys: tuple[Path, ...] = ()
    urls: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.statement} {self.artifact}" if self.artifact else str(self.statement)


Target = PypiTarget | RecipeTarget | StatementTarget


def parse_target(
    words: Sequence[str], maintainer_keys: Sequence[Path] = (), urls: Sequence[str] = ()
) -> Target:
    """Turn the command line's TARGET words into a target, or raise UsageError."""
    if len(words) == 1 and words[0].startswith("pypi:"):
        spec = words[0].removeprefix("pypi:")
        name, sep, version = spec.partition("==")
        if not sep or not name.strip() or not version.strip():
            raise UsageError(f"{words[0]!r}: expected pypi:NAME==VERSION")
        return PypiTarget(name.strip(), version.strip())
    if len(words) == 2:
        first, artifact = Path(words[0]), Path(words[1])
        if first.suffix == ".toml":
            if maintainer_keys:
                raise UsageError("--maintainer-key applies to a release statement, not a recipe")
            return RecipeTarget(first, artifact)
        return StatementTarget(first, artifact, tuple(maintainer_keys), tuple(urls))
    if len(words) == 1 and not words[0].endswith(".toml"):
        return StatementTarget(Path(words[0]), None, tuple(maintainer_keys), tuple(urls))
    raise UsageError(
        "TARGET is pypi:NAME==VERSION, RECIPE.toml ARTIFACT, or STATEMENT ARTIFACT "
        f"(got {' '.join(words) or 'nothing'})"
    )


@dataclass
class Prepared:
    """What step 1 established for one target: its artifact, source, recipe and build plan.

    The ``prepare_*`` functions fill it in as each fact is established, so the
    result of a run whose fetch failed half-way still names what was known
    (the package and version, say). ``refine`` may replace ``plan`` (once)
    after a failed build.
    """

    package: str | None = None
    version: str | None = None
    upstream: Path | None = None
    upstream_sha256: str | None = None
    plan: BuildPlan | None = None
    recipe_text: str | None = None
    recipe_sha256: str | None = None
    source: Any = None  # verify.intoto.GitSource | SdistSource
    expected_lock: str | None = None  # the recipe's environment lock digest, if it names one
    refine: Callable[[Path], BuildPlan | None] | None = None
    """A strategy's second plan after a failed build (its log), or None: see _build."""
    refined: bool = False


# -- pypi:NAME==VERSION ---------------------------------------------------------------------


def prepare_pypi(
    p: Prepared, name: str, version: str, *, report_dir: Path, work: Path, remarks: list[str]
) -> None:
    """Locate both files on the index, verify their sha256, infer the plan."""
    index = PackageIndex.from_pip()
    rel = locate_release(index, name, version)
    upstream = report_dir / "upstream"
    upstream.mkdir(parents=True, exist_ok=True)
    wheel = index.download(rel.wheel, upstream)
    sdist = index.download(rel.sdist, upstream)
    remarks.append(
        f"{rel.wheel.filename} + {rel.sdist.filename} (sha256 checked against the index)"
    )

    def adopt(asked: list[str] | None) -> BuildPlan:
        plan = pywheel.plan_pypi_wheel(
            index=index,
            sdist=sdist,
            wheel=wheel,
            wheel_uploaded=rel.wheel.upload_time,
            work=work,
            asked=asked,
        )
        lock = build_env.lock_digest(plan.environment)
        text = inferred_recipe(name, version, rel.sdist, plan, lock)
        data = text.encode("utf-8")
        recipe = parse_recipe(data, "inferred recipe")  # the inferred recipe is a valid recipe
        atomic_write(report_dir / "recipe.toml", data)
        p.plan = plan
        p.recipe_text, p.recipe_sha256 = text, recipe.sha256
        p.source = recipe.source
        p.expected_lock = lock
        return plan

    def refine(build_log: Path) -> BuildPlan | None:
        # Once: the backend asked for requirements the sdist does not declare.
        asked = pywheel.missing_from_log(build_log)
        if asked is None or p.refined:
            return None
        p.refined = True
        return adopt(asked)

    p.package, p.version = name, version
    p.upstream = wheel
    plan = adopt(None)
    p.refine = refine
    remarks.append(f"backend {plan.details['generator']}")


def inferred_recipe(
    name: str, version: str, sdist: IndexFile, plan: BuildPlan, lock_sha256: str
) -> str:
    """The recipe the strategy inferred, as rebuild-recipe/v1 text.

    The hashed build requirements are written as comments: they are not a
    recipe field, but the recipe digest covers the whole text, so the
    attestation pins them too.
    """

    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    wheels = plan.details["wheelhouse"]["wheels"]
    lines = [
        "# Inferred by rebuild's pypi-wheel strategy from the published wheel and sdist.",
        f"# Generator: {plan.details['generator']}",
        f"# SOURCE_DATE_EPOCH rule: {plan.sde_rule}",
        "# Build requirements (unpacked into /rebuild/site, read-only):",
        *(f"#   {w['name']}=={w['version']} --hash=sha256:{w['sha256']}" for w in wheels),
        'format = "rebuild-recipe/v1"',
        "",
        "[package]",
        f"name = {q(name)}",
        f"version = {q(version)}",
        "",
        "[source]",
        f"sdist = {q(sdist.url)}",
        f"sha256 = {q(sdist.sha256)}",
        "",
        "[environment]",
        f"name = {q(plan.environment)}",
        f"lock_sha256 = {q(lock_sha256)}",
        "",
        "[build]",
        "command = [" + ", ".join(q(a) for a in plan.command) + "]",
        f"outputs = [{q(plan.output)}]",
        f"source_date_epoch = {plan.source_date_epoch}",
        "",
    ]
    return "\n".join(lines)


# -- RECIPE ARTIFACT ------------------------------------------------------------------------


def prepare_recipe_file(
    p: Prepared, recipe_path: Path, artifact: Path, *, work: Path, remarks: list[str]
) -> None:
    recipe = load_recipe(recipe_path)
    _prepare_from_recipe(p, recipe, recipe.source, artifact, work=work, remarks=remarks)


def _artifact(artifact: Path) -> Path:
    if not artifact.is_file():
        raise InputError(f"{artifact}: no such artifact file")
    return artifact


def _output_for(recipe: Recipe, artifact: Path) -> str:
    if recipe.builds(artifact.name):
        return artifact.name
    raise InputError(
        f"{artifact}: its name matches none of the recipe's outputs {list(recipe.outputs)}"
    )


def _prepare_from_recipe(
    p: Prepared,
    recipe: Recipe,
    source: GitSource | SdistSource,
    artifact: Path,
    *,
    work: Path,
    remarks: list[str],
) -> None:
    artifact = _artifact(artifact)
    plan = recipe_plan(recipe, source, _output_for(recipe, artifact), work=work, remarks=remarks)
    p.package, p.version = recipe.package, recipe.version
    p.upstream = artifact
    p.recipe_text, p.recipe_sha256 = recipe.text, recipe.sha256
    p.source = source
    p.expected_lock = recipe.environment.lock_sha256
    p.plan = plan


def recipe_plan(
    recipe: Recipe,
    source: GitSource | SdistSource,
    output: str,
    *,
    work: Path,
    remarks: list[str],
) -> BuildPlan:
    """Fetch ``source`` into ``work`` and return the plan that builds ``output`` from it.

    ``output`` is a file name (a rebuilder comparing one artifact) or one of
    the recipe's output globs (a maintainer building the release). The git
    tag must resolve to the named commit; an sdist must have the named sha256.
    """
    if isinstance(source, GitSource):
        git = fetch_tagged_tree(source.url, source.tag, source.commit, work / "git")
        tree, sde_auto, rule = git.tree, git.commit_time, "commit time"
        remarks.append(f"git {source.tag} = {source.commit[:12]}")
    else:
        sdist = fetch_sdist_url(source.url, source.sha256, work / "download")
        facts = pywheel.unpack_sdist(sdist, work / "sdist")
        tree, sde_auto, rule = facts.root, facts.max_mtime, "newest sdist member mtime"
        remarks.append(f"sdist {sdist.name} sha256 checked")
    if isinstance(recipe.source_date_epoch, int):
        sde, rule = recipe.source_date_epoch, "fixed by the recipe"
    else:
        sde = sde_auto
    return BuildPlan(
        environment=recipe.environment.name,
        command=recipe.command,
        source_dir=tree,
        source_date_epoch=sde,
        sde_rule=rule,
        output=output,
        env=recipe.env,
        details={"strategy": "recipe", "outputs": list(recipe.outputs), "out_dir": OUTPUT_DIR},
    )


def fetch_sdist_url(url: str, sha256: str, dest: Path) -> Path:
    """Fetch an sdist named by URL (https, loopback http, or a local file) and check it."""
    dest.mkdir(parents=True, exist_ok=True)
    parsed = urllib.parse.urlsplit(url)
    name = Path(urllib.parse.unquote(parsed.path)).name
    if not name or name.startswith("."):
        raise InputError(f"{url}: cannot tell the sdist's file name")
    if parsed.scheme in ("", "file"):
        local = Path(urllib.parse.unquote(parsed.path))
        data = read_bounded(local, MAX_SDIST)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise InputError(f"{local}: sha256 differs from the recipe's {sha256}")
        target = dest / name
        atomic_write(target, data)
        return target
    # The index seam's transport rules (https, or http to loopback only) and its
    # bounded, digest-checked download serve a bare URL as well.
    index = PackageIndex(url, cert=os.environ.get("PIP_CERT"))
    return index.download(IndexFile(name, url, sha256, None, None, False), dest)


# -- STATEMENT ARTIFACT ---------------------------------------------------------------------


def fetch_released_artifact(
    statement: Path,
    maintainer_keys: tuple[Path, ...],
    urls: tuple[str, ...],
    dest: Path,
    remarks: list[str],
) -> Path:
    """The artifact of ``statement`` its recipe builds, fetched into ``dest`` (its
    sha256 checked); with maintainer keys, only after the signature verified."""
    keys = [load_verifier_key(k) for k in maintainer_keys]
    try:
        release = read_release(statement, keys)
    except VerifyError as e:
        raise NegativeVerdict(f"release statement refused: {e}") from None
    assert isinstance(release.predicate, ReleasePredicate)
    recipe = parse_recipe(release.predicate.recipe.encode("utf-8"), f"{statement} recipe")
    built = [s for s in release.subjects if recipe.builds(s.name)]
    if not built:
        raise NegativeVerdict(f"{statement}: no artifact it releases is one the recipe builds")
    fetched = fetch_subject(built[0], urls_for(built[0], urls, one=True), dest)
    remarks.append(f"fetched {fetched.name} from {fetched.url or 'the report directory'}")
    return fetched.path


def prepare_statement(
    p: Prepared,
    statement: Path,
    artifact: Path,
    maintainer_keys: tuple[Path, ...],
    *,
    work: Path,
    remarks: list[str],
) -> None:
    """A release statement: verify the maintainer (when keys are given), then its recipe."""
    artifact = _artifact(artifact)
    if maintainer_keys:
        keys = [load_verifier_key(k) for k in maintainer_keys]
        try:
            check = verify_release(artifact, statement, keys)
        except VerifyError as e:
            # A bad maintainer signature or an artifact the release does not
            # cover is a negative verdict: refuse before fetching anything.
            raise NegativeVerdict(f"release statement refused: {e}") from None
        predicate = check.predicate
        remarks.append(f"maintainer signature by {check.signers[0].name} verified")
    else:
        try:
            env = Envelope.parse(read_bounded(statement, MAX_ENVELOPE_SIZE))
            stmt = Statement.parse(env.payload)
        except VerifyError as e:
            raise InputError(f"{statement}: {e}") from None
        if not isinstance(stmt.predicate, ReleasePredicate):
            raise InputError(f"{statement}: not a release statement")
        predicate = stmt.predicate
        if stmt.subject_for(sha256_file(artifact)) is None:
            raise NegativeVerdict(f"{artifact}: not an artifact {statement} releases")
        remarks.append("maintainer signature NOT checked (no --maintainer-key)")
    recipe = parse_recipe(predicate.recipe.encode("utf-8"), f"{statement} recipe")
    if recipe.source != predicate.source:
        raise NegativeVerdict(
            f"{statement}: the statement's source {predicate.source.to_dict()} differs from "
            f"its recipe's {recipe.source.to_dict()}"
        )
    _prepare_from_recipe(p, recipe, predicate.source, artifact, work=work, remarks=remarks)
