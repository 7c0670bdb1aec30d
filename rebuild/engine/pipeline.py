"""The verify pipeline: fetch, environment, build, compare, attest, publish.

Decides the verdict of one rebuild and nothing else: ``reproduced`` only
when the rebuilt artifact's sha256 equals the upstream artifact's,
``equivalent`` when the bytes differ but the comparison's fixed
normalizations make them identical, ``mismatch`` when a build produced
different bytes otherwise, ``failed`` when the
build (or the source's own claims, e.g. a moved tag) failed, ``error`` when
this machine could not do the job. Each step is numbered in the code as in
docs/verify.md. It never prints and never exits; the CLI renders the frozen
:class:`~rebuild.engine.result.VerifyResult` it returns.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rebuild import __version__
from rebuild.compare._normalize import NormalizedPair
from rebuild.engine import attest, diagnose, runner, targets
from rebuild.engine.plan import DEFAULT_TIMEOUT, BuildPlan
from rebuild.engine.result import (
    LogEntryRef,
    StepError,
    StepStatus,
    StepTiming,
    Verdict,
    VerifyResult,
)
from rebuild.errors import InputError, NegativeVerdict, OperationalError, UsageError
from rebuild.fsio import atomic_write
from rebuild.hashing import sha256_file
from verify.intoto import Normalization

ProgressFn = Callable[[str, str, float], None]
"""Called as ``progress(step, event, elapsed_seconds)``; event is "start" or a status."""

_BUILT = ("reproduced", "equivalent", "mismatch")  # verdicts with a rebuilt artifact

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


# -- options --------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyOptions:
    """How to run: where reports go, limits, and the optional key and log."""

    report_dir: Path
    timeout: float = DEFAULT_TIMEOUT
    signing_key: Any = None  # verify.keys.SigningKey; Any keeps this module import-light
    log_url: str | None = None
    log_ca_bundle: Path | None = None
    keep_work: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Absolute: git and the container runner work from other directories,
        # so a relative report directory would point elsewhere for them.
        object.__setattr__(self, "report_dir", Path(self.report_dir).absolute())


# -- the run --------------------------------------------------------------------------------


@dataclass
class _Prepared:
    """What the fetch step established (mutable while the run fills it in)."""

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


class _Failed(Exception):
    """The build (or the source's claims) failed: verdict ``failed``."""


class _Run:
    def __init__(self, target: Target, opts: VerifyOptions, progress: ProgressFn | None) -> None:
        self.target = target
        self.opts = opts
        self.progress = progress or (lambda step, event, elapsed: None)
        self.steps: list[StepTiming] = []
        self.report_dir = opts.report_dir
        self.work = opts.report_dir / "work"
        self.p = _Prepared()
        self.causes: list[str] = []
        self.details: dict[str, Any] = {}
        self.started = int(time.time())
        self.build_log: Path | None = None

    @contextmanager
    def step(self, name: str) -> Iterator[list[str]]:
        """Time one step; record how it ended; let the exception through."""
        t0 = time.monotonic()
        self.progress(name, "start", 0.0)
        note: list[str] = []
        status: StepStatus = "ok"
        try:
            yield note
        except (_Failed, NegativeVerdict):
            status = "failed"
            raise
        except BaseException:
            status = "error"
            raise
        finally:
            elapsed = time.monotonic() - t0
            self.steps.append(StepTiming(name, status, elapsed, "; ".join(note)))
            self.progress(name, status, elapsed)

    def skip(self, name: str, why: str) -> None:
        self.steps.append(StepTiming(name, "skipped", 0.0, why))
        self.progress(name, "skipped", 0.0)


def verify(target: Target, opts: VerifyOptions, progress: ProgressFn | None = None) -> VerifyResult:
    """Run the whole pipeline for ``target`` and return its result.

    Operational failures after the target is understood become verdict
    ``error`` (exit 2) rather than exceptions, so a result document and, with
    a key, an ``error`` attestation are still produced.
    """
    opts.report_dir.mkdir(parents=True, exist_ok=True)
    run = _Run(target, opts, progress)
    verdict: Verdict
    message = ""
    hint: str | None = None
    rebuilt: Path | None = None
    rebuilt_sha: str | None = None
    diff_report: Path | None = None
    diff_sha: str | None = None
    normalized: NormalizedPair | None = None
    env_name: str | None = None
    env_lock: str | None = None
    try:
        # Step 1: fetch the upstream artifact and the source; prepare the plan.
        with run.step("fetch") as note:
            _fetch(run, note)
        plan = run.p.plan
        assert plan is not None and run.p.upstream is not None
        # Step 2: the environment image exists and matches its lock.
        with run.step("environment") as note:
            env_name, env_lock = _environment(run, plan, note)
        # Step 3: the hermetic build.
        with run.step("build") as note:
            rebuilt = _build(run, plan, note)
        # Step 4: compare sha256; diagnose on mismatch.
        with run.step("compare") as note:
            rebuilt_sha = sha256_file(rebuilt)
            if rebuilt_sha == run.p.upstream_sha256:
                verdict = "reproduced"
                note.append("sha256 equal")
            else:
                note.append("sha256 differs")
                diff_report, diff_sha, normalized = _diagnose(run, run.p.upstream, rebuilt)
                # Never reproduced: identical only after the recorded normalizations.
                verdict = "equivalent" if normalized is not None else "mismatch"
                if normalized is not None:
                    note.append("equivalent after " + ", ".join(normalized.rules))
        if verdict != "reproduced":
            # The comparison ran fine, but its row must not read "ok" beside a mismatch.
            run.steps[-1] = replace(run.steps[-1], status="differs")
    except (_Failed, NegativeVerdict) as e:
        verdict, message = "failed", str(e)
        run.causes.append(str(e))
    except OperationalError as e:
        verdict, message, hint = "error", str(e), e.hint
    finally:
        if not opts.keep_work and run.work.exists():
            shutil.rmtree(run.work, ignore_errors=True)

    # Step 5: attest (with a key), Step 6: publish (with a log). The verdict is
    # a fact about the build: a failure here is reported beside it (exit 2), it
    # never replaces it.
    attestation: Path | None = None
    log_entry: LogEntryRef | None = None
    step_error: StepError | None = None
    if opts.signing_key is None:
        run.skip("attest", "no --key")
    else:
        try:
            with run.step("attest"):
                attestation = _attest(
                    run,
                    verdict=verdict,
                    rebuilt_sha=rebuilt_sha,
                    diff_sha=diff_sha,
                    normalized=normalized,
                    env_name=env_name,
                    env_lock=env_lock,
                )
        except OperationalError as e:
            step_error = StepError("attest", str(e), e.hint)
    if opts.log_url is None:
        run.skip("publish", "no --log")
    elif attestation is None:
        run.skip("publish", "no attestation to publish")
    else:
        try:
            with run.step("publish") as note:
                log_entry = attest.publish(opts.log_url, attestation, ca_bundle=opts.log_ca_bundle)
                note.append(f"index {log_entry.index}")
                if log_entry.proof is None:
                    note.append("no proof yet: " + attest.prove_later(opts.log_url, attestation))
        except OperationalError as e:
            step_error = StepError(
                "publish",
                f"the attestation was not published: {e}",
                "publish it later: " + attest.publish_later(opts.log_url, attestation),
            )

    plan = run.p.plan
    result = VerifyResult(
        target=target.label,
        verdict=verdict,
        package=run.p.package,
        version=run.p.version,
        artifact=run.p.upstream.name if run.p.upstream else None,
        upstream_sha256=run.p.upstream_sha256,
        rebuilt_sha256=rebuilt_sha if verdict in _BUILT else None,
        causes=tuple(dict.fromkeys(run.causes)),
        steps=tuple(run.steps),
        report_dir=str(opts.report_dir),
        build_log=str(run.build_log) if run.build_log and run.build_log.exists() else None,
        rebuilt_artifact=str(rebuilt) if rebuilt else None,
        diff_report=str(diff_report) if diff_report else None,
        diff_report_sha256=diff_sha,
        attestation=str(attestation) if attestation else None,
        log_entry=log_entry,
        environment=env_name,
        environment_lock=env_lock,
        source=run.p.source.to_dict() if run.p.source is not None else {},
        recipe_sha256=run.p.recipe_sha256,
        source_date_epoch=plan.source_date_epoch if plan else None,
        sde_rule=plan.sde_rule if plan else None,
        message=message,
        hint=hint,
        details={**(plan.details if plan else {}), **run.details},
        step_error=step_error,
        normalization=(
            {"rules": list(normalized.rules), "sha256": normalized.expected_sha256}
            if verdict == "equivalent" and normalized is not None
            else None
        ),
    )
    atomic_write(
        opts.report_dir / "result.json",
        (json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n").encode(),
    )
    return result


# -- step 1: fetch --------------------------------------------------------------------------


def _fetch(run: _Run, note: list[str]) -> None:
    t = run.target
    run.work.mkdir(parents=True, exist_ok=True)
    if isinstance(t, PypiTarget):
        targets.prepare_pypi(
            run.p, t.name, t.version, report_dir=run.report_dir, work=run.work, note=note
        )
    elif isinstance(t, RecipeTarget):
        targets.prepare_recipe_file(run.p, t.recipe, t.artifact, work=run.work, note=note)
    else:
        artifact = t.artifact
        if artifact is None:
            artifact = targets.fetch_released_artifact(
                t.statement, t.maintainer_keys, t.urls, run.report_dir / "upstream", note
            )
        targets.prepare_statement(
            run.p, t.statement, artifact, t.maintainer_keys, work=run.work, note=note
        )
    if run.p.upstream is None or run.p.plan is None:
        raise InputError(f"{t.label}: nothing to rebuild")
    run.p.upstream_sha256 = sha256_file(run.p.upstream)


# -- step 2: environment --------------------------------------------------------------------


def _environment(run: _Run, plan: BuildPlan, note: list[str]) -> tuple[str, str]:
    name, lock_digest, image = runner.environment_image(plan.environment)
    note.append(f"image {image.removeprefix('sha256:')[:12]}")
    expected = run.p.expected_lock
    if expected is not None and expected.removeprefix("sha256:") != lock_digest:
        raise _Failed(
            f"environment {name}: the recipe pins lock sha256:{expected.removeprefix('sha256:')}"
            f" but this machine's {name} lock is sha256:{lock_digest}"
        )
    note.append(f"{name} lock sha256:{lock_digest[:12]}")
    return name, lock_digest


# -- step 3: build --------------------------------------------------------------------------


def _build(run: _Run, plan: BuildPlan, note: list[str]) -> Path:
    log_path = run.report_dir / "build.log"
    run.build_log = log_path  # referenced by the result even when the build fails
    outcome, produced = runner.build_output(
        plan,
        out_dir=run.report_dir / "rebuilt",
        log_path=log_path,
        timeout=run.opts.timeout,
        staging=run.work / "inputs",
    )
    note.append(outcome.summary)
    refined = run.p.refine(log_path) if not outcome.ok and run.p.refine else None
    if refined is not None:
        # The strategy learned something from the failed attempt (a backend
        # asking for build requirements its sdist does not declare): build
        # once more with its new plan. The first log is kept beside it.
        plan = refined
        log_path.replace(run.report_dir / "build-1.log")
        outcome, produced = runner.build_output(
            plan,
            out_dir=run.report_dir / "rebuilt",
            log_path=log_path,
            timeout=run.opts.timeout,
            staging=run.work / "inputs",
        )
        note.append(f"again with {', '.join(plan.details.get('knobs', {}).get('asked_for', []))}")
        note.append(outcome.summary)
    if isinstance(produced, str):
        raise _Failed(produced)
    return produced


# -- step 4: diagnose -----------------------------------------------------------------------


def _diagnose(run: _Run, upstream: Path, rebuilt: Path) -> tuple[Path, str, NormalizedPair | None]:
    why = diagnose.explain(upstream, rebuilt, run.report_dir)
    run.causes.extend(why.causes)
    # What the strategy already knew would stop a bit-identical rebuild.
    if run.p.plan is not None:
        run.causes.extend(run.p.plan.details.get("mismatch_hints", []))
    run.details["comparison"] = why.details
    return why.report, why.report_sha256, why.equivalent


# -- step 5: attest; step 6: publish --------------------------------------------------------


def _attest(
    run: _Run,
    *,
    verdict: Verdict,
    rebuilt_sha: str | None,
    diff_sha: str | None,
    normalized: NormalizedPair | None,
    env_name: str | None,
    env_lock: str | None,
) -> Path:
    p = run.p
    if p.upstream is None or p.upstream_sha256 is None or p.source is None:
        raise InputError("cannot attest: the upstream artifact or its source was never known")
    data = attest.rebuild_attestation(
        key=run.opts.signing_key,
        artifact_name=p.upstream.name,
        artifact_sha256=p.upstream_sha256,
        package=p.package or p.upstream.name,
        version=p.version or "unknown",
        verdict=verdict,
        source=p.source,
        recipe_sha256=p.recipe_sha256,
        environment=env_name or (p.plan.environment if p.plan else "unknown"),
        environment_lock=env_lock or p.expected_lock,
        tool_version=f"rebuild/{__version__}",
        started_at=run.started,
        finished_at=int(time.time()),
        rebuilt_sha256=rebuilt_sha if verdict in _BUILT else None,
        diff_report_sha256=diff_sha if verdict in ("equivalent", "mismatch") else None,
        causes=tuple(dict.fromkeys(run.causes)),
        normalization=(
            Normalization(normalized.rules, normalized.expected_sha256, normalized.actual_sha256)
            if verdict == "equivalent" and normalized is not None
            else None
        ),
    )
    path = run.report_dir / "attestation.dsse.json"
    atomic_write(path, data)
    return path


def default_report_dir(target: Target, base: Path | None = None) -> Path:
    """``<base>/<target slug>-<UTC time>``; base defaults to ./rebuild-reports."""
    slug = "".join(c if c.isalnum() or c in "-._" else "_" for c in target.label)[:80]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return (base or Path("rebuild-reports")) / f"{slug}-{stamp}"
