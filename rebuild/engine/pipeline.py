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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rebuild import __version__
from rebuild.compare._normalize import NormalizedPair
from rebuild.engine import attest, build_env, explain, targets
from rebuild.engine.plan import DEFAULT_TIMEOUT, BuildPlan
from rebuild.engine.result import (
    LogEntryRef,
    StepError,
    StepStatus,
    StepTiming,
    Verdict,
    VerifyResult,
)
from rebuild.engine.targets import (
    Prepared,
    PypiTarget,
    RecipeTarget,
    StatementTarget,
    Target,
    parse_target,
)
from rebuild.errors import InputError, NegativeVerdict, OperationalError
from rebuild.fsio import atomic_write
from rebuild.hashing import sha256_file
from verify.intoto import Normalization

ProgressFn = Callable[[str, str, float], None]
"""Called as ``progress(step, event, elapsed_seconds)``; event is "start" or a status."""

_BUILT = ("reproduced", "equivalent", "mismatch")  # verdicts with a rebuilt artifact

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


class _Run:
    """The one state of a run: the target, what each step established, and the step timings.

    Every step reads and writes it; :func:`run_verification` makes the result from it.
    """

    def __init__(self, target: Target, opts: VerifyOptions, progress: ProgressFn | None) -> None:
        self.target = target
        self.opts = opts
        self.progress = progress or (lambda step, event, elapsed: None)
        self.steps: list[StepTiming] = []
        self.report_dir = opts.report_dir
        self.work = opts.report_dir / "work"
        self.p = Prepared()
        self.causes: list[str] = []
        self.details: dict[str, Any] = {}
        self.started = int(time.time())
        self.build_log: Path | None = None
        # What the steps establish, in order; the result is made from these.
        self.verdict: Verdict = "error"
        self.message = ""
        self.hint: str | None = None
        self.env_name: str | None = None
        self.env_lock: str | None = None
        self.rebuilt: Path | None = None
        self.rebuilt_sha: str | None = None
        self.diff_report: Path | None = None
        self.diff_sha: str | None = None
        self.normalized: NormalizedPair | None = None
        self.attestation: Path | None = None
        self.log_entry: LogEntryRef | None = None
        self.step_error: StepError | None = None

    @contextmanager
    def step(self, name: str) -> Iterator[list[str]]:
        """Time one step; record how it ended; let the exception through."""
        t0 = time.monotonic()
        self.progress(name, "start", 0.0)
        remarks: list[str] = []
        status: StepStatus = "ok"
        try:
            yield remarks
        except NegativeVerdict:
            status = "failed"
            raise
        except BaseException:
            status = "error"
            raise
        finally:
            elapsed = time.monotonic() - t0
            self.steps.append(StepTiming(name, status, elapsed, "; ".join(remarks)))
            self.progress(name, status, elapsed)

    def skip(self, name: str, why: str) -> None:
        self.steps.append(StepTiming(name, "skipped", 0.0, why))
        self.progress(name, "skipped", 0.0)


def run_verification(
    target: Target, opts: VerifyOptions, progress: ProgressFn | None = None
) -> VerifyResult:
    """Run the whole pipeline for ``target`` and return its result.

    Operational failures after the target is understood become verdict
    ``error`` (exit 2) rather than exceptions, so a result document and, with
    a key, an ``error`` attestation are still produced.
    """
    opts.report_dir.mkdir(parents=True, exist_ok=True)
    run = _Run(target, opts, progress)
    try:
        _rebuild(run)
    except NegativeVerdict as e:
        run.verdict, run.message = "failed", str(e)
        run.causes.append(str(e))
    except OperationalError as e:
        run.verdict, run.message, run.hint = "error", str(e), e.hint
    finally:
        if not opts.keep_work and run.work.exists():
            shutil.rmtree(run.work, ignore_errors=True)
    # Step 5: attest (with a key), Step 6: publish (with a log). The verdict is
    # a fact about the build: a failure here is reported beside it (exit 2), it
    # never replaces it.
    _attest_step(run)
    _publish_step(run)
    result = _result(run)
    atomic_write(
        opts.report_dir / "result.json",
        (json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n").encode(),
    )
    return result


def _rebuild(run: _Run) -> None:
    """Steps 1 to 4; sets the verdict, or raises NegativeVerdict / OperationalError."""
    # Step 1: fetch the upstream artifact and the source; prepare the plan.
    with run.step("fetch") as remarks:
        _fetch(run, remarks)
    plan = run.p.plan
    assert plan is not None and run.p.upstream is not None
    # Step 2: the environment image exists and matches its lock.
    with run.step("environment") as remarks:
        run.env_name, run.env_lock = _environment(run, plan, remarks)
    # Step 3: the hermetic build.
    with run.step("build") as remarks:
        run.rebuilt = _build(run, plan, remarks)
    # Step 4: compare sha256; explain the difference on mismatch.
    with run.step("compare") as remarks:
        run.rebuilt_sha = sha256_file(run.rebuilt)
        if run.rebuilt_sha == run.p.upstream_sha256:
            run.verdict = "reproduced"
            remarks.append("sha256 equal")
        else:
            remarks.append("sha256 differs")
            run.diff_report, run.diff_sha, run.normalized = _explain(
                run, run.p.upstream, run.rebuilt
            )
            # Never reproduced: identical only after the recorded normalizations.
            run.verdict = "equivalent" if run.normalized is not None else "mismatch"
            if run.normalized is not None:
                remarks.append("equivalent after " + ", ".join(run.normalized.rules))
    if run.verdict != "reproduced":
        # The comparison ran fine, but its row must not read "ok" beside a mismatch.
        run.steps[-1] = replace(run.steps[-1], status="differs")


def _attest_step(run: _Run) -> None:
    """Step 5: sign the attestation, when there is a key."""
    if run.opts.signing_key is None:
        run.skip("attest", "no --key")
        return
    try:
        with run.step("attest"):
            run.attestation = _attest(run)
    except OperationalError as e:
        run.step_error = StepError("attest", str(e), e.hint)


def _publish_step(run: _Run) -> None:
    """Step 6: publish the attestation, when there is a log and an attestation."""
    log_url, attestation = run.opts.log_url, run.attestation
    if log_url is None:
        run.skip("publish", "no --log")
        return
    if attestation is None:
        run.skip("publish", "no attestation to publish")
        return
    try:
        with run.step("publish") as remarks:
            run.log_entry = attest.publish(log_url, attestation, ca_bundle=run.opts.log_ca_bundle)
            remarks.append(f"index {run.log_entry.index}")
            if run.log_entry.proof is None:
                remarks.append("no proof yet: " + attest.prove_later(log_url, attestation))
    except OperationalError as e:
        run.step_error = StepError(
            "publish",
            f"the attestation was not published: {e}",
            "publish it later: " + attest.publish_later(log_url, attestation),
        )


def _result(run: _Run) -> VerifyResult:
    """The frozen result of the run."""
    plan, p, verdict, normalized = run.p.plan, run.p, run.verdict, run.normalized
    return VerifyResult(
        target=run.target.label,
        verdict=verdict,
        package=p.package,
        version=p.version,
        artifact=p.upstream.name if p.upstream else None,
        upstream_sha256=p.upstream_sha256,
        rebuilt_sha256=run.rebuilt_sha if verdict in _BUILT else None,
        causes=tuple(dict.fromkeys(run.causes)),
        steps=tuple(run.steps),
        report_dir=str(run.opts.report_dir),
        build_log=str(run.build_log) if run.build_log and run.build_log.exists() else None,
        rebuilt_artifact=str(run.rebuilt) if run.rebuilt else None,
        diff_report=str(run.diff_report) if run.diff_report else None,
        diff_report_sha256=run.diff_sha,
        attestation=str(run.attestation) if run.attestation else None,
        log_entry=run.log_entry,
        environment=run.env_name,
        environment_lock=run.env_lock,
        source=p.source.to_dict() if p.source is not None else {},
        recipe_sha256=p.recipe_sha256,
        source_date_epoch=plan.source_date_epoch if plan else None,
        sde_rule=plan.sde_rule if plan else None,
        message=run.message,
        hint=run.hint,
        details={**(plan.details if plan else {}), **run.details},
        step_error=run.step_error,
        normalization=(
            {"rules": list(normalized.rules), "sha256": normalized.expected_sha256}
            if verdict == "equivalent" and normalized is not None
            else None
        ),
    )


# -- step 1: fetch --------------------------------------------------------------------------


def _fetch(run: _Run, remarks: list[str]) -> None:
    t = run.target
    run.work.mkdir(parents=True, exist_ok=True)
    if isinstance(t, PypiTarget):
        targets.prepare_pypi(
            run.p, t.name, t.version, report_dir=run.report_dir, work=run.work, remarks=remarks
        )
    elif isinstance(t, RecipeTarget):
        targets.prepare_recipe_file(run.p, t.recipe, t.artifact, work=run.work, remarks=remarks)
    else:
        artifact = t.artifact
        if artifact is None:
            artifact = targets.fetch_released_artifact(
                t.statement, t.maintainer_keys, t.urls, run.report_dir / "upstream", remarks
            )
        targets.prepare_statement(
            run.p, t.statement, artifact, t.maintainer_keys, work=run.work, remarks=remarks
        )
    if run.p.upstream is None or run.p.plan is None:
        raise InputError(f"{t.label}: nothing to rebuild")
    run.p.upstream_sha256 = sha256_file(run.p.upstream)


# -- step 2: environment --------------------------------------------------------------------


def _environment(run: _Run, plan: BuildPlan, remarks: list[str]) -> tuple[str, str]:
    name, lock_digest, image = build_env.environment_image(plan.environment)
    remarks.append(f"image {image.removeprefix('sha256:')[:12]}")
    expected = run.p.expected_lock
    if expected is not None and expected.removeprefix("sha256:") != lock_digest:
        raise NegativeVerdict(
            f"environment {name}: the recipe pins lock sha256:{expected.removeprefix('sha256:')}"
            f" but this machine's {name} lock is sha256:{lock_digest}"
        )
    remarks.append(f"{name} lock sha256:{lock_digest[:12]}")
    return name, lock_digest


# -- step 3: build --------------------------------------------------------------------------


def _build(run: _Run, plan: BuildPlan, remarks: list[str]) -> Path:
    log_path = run.report_dir / "build.log"
    run.build_log = log_path  # referenced by the result even when the build fails
    outcome, produced = build_env.build_output(
        plan,
        out_dir=run.report_dir / "rebuilt",
        log_path=log_path,
        timeout=run.opts.timeout,
        staging=run.work / "inputs",
    )
    remarks.append(outcome.summary)
    refined = run.p.refine(log_path) if not outcome.ok and run.p.refine else None
    if refined is not None:
        # The strategy learned something from the failed attempt (a backend
        # asking for build requirements its sdist does not declare): build
        # once more with its new plan. The first log is kept beside it.
        plan = refined
        log_path.replace(run.report_dir / "build-1.log")
        outcome, produced = build_env.build_output(
            plan,
            out_dir=run.report_dir / "rebuilt",
            log_path=log_path,
            timeout=run.opts.timeout,
            staging=run.work / "inputs",
        )
        asked = plan.details.get("knobs", {}).get("asked_for", [])
        remarks.append(f"again with {', '.join(asked)}")
        remarks.append(outcome.summary)
    if isinstance(produced, str):
        raise NegativeVerdict(produced)
    return produced


# -- step 4: explain the difference ---------------------------------------------------------


def _explain(run: _Run, upstream: Path, rebuilt: Path) -> tuple[Path, str, NormalizedPair | None]:
    why = explain.explain(upstream, rebuilt, run.report_dir)
    run.causes.extend(why.causes)
    # What the strategy already knew would stop a bit-identical rebuild.
    if run.p.plan is not None:
        run.causes.extend(run.p.plan.details.get("mismatch_hints", []))
    run.details["comparison"] = why.details
    return why.report, why.report_sha256, why.equivalent


# -- step 5: attest; step 6: publish --------------------------------------------------------


def _attest(run: _Run) -> Path:
    p, verdict, normalized = run.p, run.verdict, run.normalized
    rebuilt_sha, diff_sha = run.rebuilt_sha, run.diff_sha
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
        environment=run.env_name or (p.plan.environment if p.plan else "unknown"),
        environment_lock=run.env_lock or p.expected_lock,
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


__all__ = [
    "ProgressFn",
    "PypiTarget",
    "RecipeTarget",
    "StatementTarget",
    "Target",
    "VerifyOptions",
    "default_report_dir",
    "parse_target",
    "run_verification",
]


def default_report_dir(target: Target, base: Path | None = None) -> Path:
    """``<base>/<target slug>-<UTC time>``; base defaults to ./rebuild-reports."""
    slug = "".join(c if c.isalnum() or c in "-._" else "_" for c in target.label)[:80]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return (base or Path("rebuild-reports")) / f"{slug}-{stamp}"
