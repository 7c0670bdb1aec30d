"""``rebuild fleet worker``: run the verify pipeline for each job; hand back a result.

A worker holds no signing key. For each delivery of a job it:

1. parses the job (a malformed message is dead-lettered, never retried);
2. claims the target for this message (a second message for a target that
   another message owns is a duplicate enqueue and is dropped);
3. counts the delivery (the count lives in the broker, so deliveries to a
   worker that died count too) and gives up after ``max_attempts``: the
   result is then ``failed`` with the last reason, so a job that kills its
   worker or fails forever ends on the record instead of looping;
4. fetches the inputs (the release statement travels with the job; the
   artifact comes from the job's sources and must have the statement's
   sha256) and runs :func:`rebuild.engine.pipeline.run_verification` without
   key or log, on this machine's Docker engine;
5. ``reproduced``, ``equivalent`` or ``mismatch`` is final; ``failed`` or
   ``error`` is tried again after a back-off until the last attempt;
6. sends the result to the publisher's queue, then returns, and only then is
   the job acknowledged: a worker that dies before that leaves the job to be
   delivered again.

Build containers are owned through the report directory: a worker locks it
and, at start, removes containers whose output mount lies inside it (left by
an earlier worker process on that directory that was killed mid-build).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import traceback
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import dramatiq
from dramatiq.middleware import CurrentMessage

from rebuild import __version__
from rebuild.engine.pipeline import (
    PypiTarget,
    StatementTarget,
    Target,
    VerifyOptions,
    run_verification,
)
from rebuild.engine.result import VerifyResult
from rebuild.engine.targets import fetch_sdist_url
from rebuild.errors import InputError, OperationalError, RebuildError, TransportError
from rebuild.fleet.broker import PUBLISH_ACTOR, PUBLISH_QUEUE, Fleet, Keys, now, patiently
from rebuild.fleet.jobs import (
    MAX_ATTEMPTS,
    MAX_CAUSE_TEXT,
    MAX_CAUSES,
    Job,
    JobResult,
    MessageError,
    ReportLink,
)
from rebuild.fleet.state import StateDir
from rebuild.fsio import atomic_write
from rebuild.hashing import sha256_file
from verify.errors import VerifyError
from verify.intoto import Normalization, source_from_dict
from verify.parsing import parse_decimal

log = logging.getLogger("rebuild.fleet.worker")

MAX_BACKOFF_SECONDS: Final = 3600.0
STATS_INTERVAL_SECONDS: Final = 10.0


class MalformedMessage(Exception):
    """A message no worker can act on; Dramatiq dead-letters it (``throws``)."""


@dataclass(frozen=True)
class WorkerOptions:
    reports: Path
    reports_url: str | None = None
    timeout: float = 1800.0
    max_attempts: int = 3
    retry_backoff: float = 60.0
    concurrency: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.max_attempts <= MAX_ATTEMPTS:
            raise OperationalError(f"--max-attempts must be in 1..{MAX_ATTEMPTS}")
        if not 0 <= self.retry_backoff <= MAX_BACKOFF_SECONDS:
            raise OperationalError(f"--retry-backoff must be in 0..{MAX_BACKOFF_SECONDS:.0f}")


def _decimal_or_none(text: str) -> int | None:
    """``text`` as an ASCII decimal, None when it is not one."""
    try:
        return parse_decimal(text, "pid", ValueError)
    except ValueError:
        return None


class Stats:
    """This process's counters, published to the broker for ``fleet status``."""

    def __init__(self, identity: str, concurrency: int) -> None:
        self.identity = identity
        self.started = now()
        self.concurrency = concurrency
        self.done = 0
        self.retried = 0
        self.busy_seconds = 0.0
        self.current = 0
        self.by_verdict: dict[str, int] = {}
        self._lock = threading.Lock()

    def begin(self) -> None:
        with self._lock:
            self.current += 1

    def end(self, seconds: float, verdict: str | None) -> None:
        with self._lock:
            self.current -= 1
            self.busy_seconds += seconds
            if verdict is None:
                self.retried += 1
            else:
                self.done += 1
                self.by_verdict[verdict] = self.by_verdict.get(verdict, 0) + 1

    def to_json(self) -> dict[str, Any]:
        host, _, pid = self.identity.rpartition(":")
        with self._lock:
            return {
                "host": host,
                "pid": _decimal_or_none(pid),
                "started_at": self.started,
                "last_seen": now(),
                "concurrency": self.concurrency,
                "done": self.done,
                "retried": self.retried,
                "busy_seconds": round(self.busy_seconds, 1),
                "current": self.current,
                "verdicts": dict(self.by_verdict),
            }


class BuildHandler:
    """The build actor's body (see the module docstring for the steps)."""

    def __init__(
        self,
        fleet: Fleet,
        opts: WorkerOptions,
        identity: str,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        self.fleet = fleet
        self.opts = opts
        self.identity = identity
        self.stats = Stats(identity, opts.concurrency)
        self.observe = observe or (lambda verdict, seconds: None)
        self.stopping = threading.Event()

    def __call__(self, payload: dict[str, Any]) -> None:
        # Step 1: parse.
        try:
            job = Job.from_json(payload)
        except MessageError as e:
            log.error("dead-lettering a malformed job: %s", e)
            raise MalformedMessage(str(e)) from None
        key = job.key
        message = CurrentMessage.get_current_message()
        message_id = message.message_id if message is not None else "unknown"
        # Step 2: claim. The job's own broker writes wait out a broker restart
        # (patiently): failing the job over one would cost an attempt.
        raw = patiently(f"{job.label}: claiming", lambda: self._claim(key, message_id))
        owner = raw.decode() if isinstance(raw, bytes) else str(raw)
        if raw is not None and owner != message_id:
            log.info("%s: dropped a duplicate (owned by message %s)", job.label, owner)
            self.observe("duplicate", 0.0)
            return
        # Step 3: count.
        attempt = patiently(f"{job.label}: counting attempts", lambda: self._count(key))
        started, t0 = now(), time.monotonic()
        self.stats.begin()
        verdict: str | None = None
        try:
            if attempt > self.opts.max_attempts:
                result = self._gave_up(job, attempt - 1, started)
            else:
                # Step 4: rebuild.
                result = self._attempt(job, attempt, started)
                # Step 5: retry what may pass next time.
                if result.verdict in ("failed", "error") and attempt < self.opts.max_attempts:
                    self._retry_later(job, attempt, result)
            # Step 6: hand over, then return (acknowledge).
            self._send(result)
            verdict = result.verdict
            log.info(
                "%s: %s (attempt %d, %.1f s)", job.label, verdict, attempt, time.monotonic() - t0
            )
        finally:
            seconds = time.monotonic() - t0
            self.stats.end(seconds, verdict)
            self.observe(verdict or "retry", seconds)
            patiently(f"{job.label}: clearing the running record", lambda: self._done(key))

    def _claim(self, key: str, message_id: str) -> object:
        with self.fleet.errors("claiming the job"):
            self.fleet.client.hsetnx(Keys.claims, key, message_id)
            return self.fleet.client.hget(Keys.claims, key)

    def _count(self, key: str) -> int:
        with self.fleet.errors("counting attempts"):
            return int(self.fleet.client.hincrby(Keys.attempts, key, 1))

    def _done(self, key: str) -> None:
        with self.fleet.errors("clearing the running record"):
            self.fleet.client.hdel(Keys.running, key)

    # -- one attempt --------------------------------------------------------------------

    def _attempt(self, job: Job, attempt: int, started: int) -> JobResult:
        artifact_key, _, recipe_key = job.key.partition("-")
        job_dir = (
            self.opts.reports / f"{artifact_key[:16]}-{recipe_key[:16]}" / f"attempt-{attempt}"
        )
        self._running(job, attempt, "fetch", job_dir)
        try:
            target = self._target(job, job_dir / "inputs")
        except RebuildError as e:
            return self._no_verdict(job, attempt, started, "error", str(e))

        def progress(step: str, event: str, elapsed: float) -> None:
            if event == "start":
                self._running(job, attempt, step, job_dir)

        try:
            vr = run_verification(
                target,
                VerifyOptions(report_dir=job_dir / "report", timeout=self.opts.timeout),
                progress,
            )
        except RebuildError as e:
            return self._no_verdict(job, attempt, started, "error", str(e))
        except Exception as e:  # noqa: BLE001 - a bug must not kill the worker or the job
            log.error("%s: unexpected error:\n%s", job.label, traceback.format_exc())
            return self._no_verdict(job, attempt, started, "error", f"{type(e).__name__}: {e}")
        if vr.upstream_sha256 is not None and vr.upstream_sha256 != job.artifact.sha256:
            return self._no_verdict(
                job,
                attempt,
                started,
                "error",
                f"this worker found {job.artifact.name} with sha256 {vr.upstream_sha256}, "
                f"not the {job.artifact.sha256} the job names",
            )
        return self._from_verify(job, attempt, started, vr, job_dir)

    def _running(self, job: Job, attempt: int, step: str, job_dir: Path) -> None:
        """Record the step for ``fleet status``; a broker outage only leaves it stale."""
        doc = {
            "label": job.label,
            "worker": self.identity,
            "attempt": attempt,
            "step": step,
            "since": now(),
            "report_dir": str(job_dir),
        }
        try:
            self.fleet.set_json(Keys.running, job.key, doc)
        except TransportError as e:
            log.warning("%s: cannot record step %s: %s", job.label, step, e)

    def _target(self, job: Job, inputs: Path) -> Target:
        if inputs.exists():
            shutil.rmtree(inputs)
        inputs.mkdir(parents=True)
        if job.kind == "pypi":
            return PypiTarget(job.package, job.version)
        statement = inputs / "release.dsse.json"
        atomic_write(statement, job.statement)
        artifact = fetch_artifact(job, inputs / "artifact")
        keys: list[Path] = []
        for i, text in enumerate(job.maintainer_keys):
            path = inputs / f"maintainer-{i}.pub"
            atomic_write(path, (text + "\n").encode())
            keys.append(path)
        return StatementTarget(statement, artifact, tuple(keys))

    def _retry_later(self, job: Job, attempt: int, result: JobResult) -> None:
        reason = (
            f"attempt {attempt}: {result.verdict}: {result.message or '; '.join(result.causes)}"
        )
        doc = {"reason": reason[:1000], "at": now()}
        patiently(
            f"{job.label}: recording the error",
            lambda: self.fleet.set_json(Keys.last_error, job.key, doc),
        )
        delay = min(self.opts.retry_backoff * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)
        log.info("%s: %s; retrying in %.0f s", job.label, reason[:200], delay)
        raise dramatiq.Retry(reason[:200], delay=int(delay * 1000))

    def _send(self, result: JobResult) -> None:
        """Hand the result to the publisher; wait out a broker outage rather than drop it."""
        doc = result.to_json()
        patiently(
            f"{result.label}: handing over the result",
            lambda: self.fleet.send(PUBLISH_QUEUE, PUBLISH_ACTOR, doc),
        )

    # -- results ------------------------------------------------------------------------

    def _base(self, job: Job, attempt: int, started: int) -> dict[str, Any]:
        return {
            "job_key": job.key,
            "label": job.label,
            "package": job.package,
            "version": job.version,
            "artifact": job.artifact,
            "tool_version": f"rebuild/{__version__}",
            "started_at": started,
            "finished_at": max(started, now()),
            "attempts": min(attempt, MAX_ATTEMPTS),
            "worker": self.identity,
        }

    def _no_verdict(
        self, job: Job, attempt: int, started: int, verdict: str, message: str
    ) -> JobResult:
        return JobResult(
            **self._base(job, attempt, started),
            verdict="failed" if verdict == "failed" else "error",
            source=job.source,
            recipe_sha256=job.recipe_sha256,
            rebuilt_sha256=None,
            environment=None,
            environment_lock=None,
            diff_report_sha256=None,
            causes=(message[:MAX_CAUSE_TEXT],),
            message=message[:2048],
        )

    def _gave_up(self, job: Job, attempts: int, started: int) -> JobResult:
        last = (
            patiently(
                f"{job.label}: reading the last error",
                lambda: self.fleet.get_json(Keys.last_error, job.key),
            )
            or {}
        )
        why = str(last.get("reason", "the worker was lost each time"))
        message = f"no verdict after {attempts} attempts; last: {why}"
        return self._no_verdict(job, attempts, started, "failed", message)

    def _from_verify(
        self, job: Job, attempt: int, started: int, vr: VerifyResult, job_dir: Path
    ) -> JobResult:
        try:
            source = source_from_dict(vr.source) if vr.source else job.source
        except VerifyError:
            source = job.source
        causes = tuple(c[:MAX_CAUSE_TEXT] for c in vr.causes[:MAX_CAUSES])
        return JobResult(
            **self._base(job, attempt, started),
            verdict=vr.verdict,
            source=source,
            recipe_sha256=vr.recipe_sha256 or job.recipe_sha256,
            rebuilt_sha256=vr.rebuilt_sha256,
            environment=vr.environment,
            environment_lock=vr.environment_lock,
            diff_report_sha256=vr.diff_report_sha256,
            causes=causes,
            message=vr.message[:2048],
            reports=tuple(self._links(vr, job_dir)),
            normalization=(
                Normalization(
                    tuple(vr.normalization["rules"]),
                    vr.normalization["sha256"],
                    vr.normalization["sha256"],
                )
                if vr.normalization is not None
                else None
            ),
        )

    def _links(self, vr: VerifyResult, job_dir: Path) -> list[ReportLink]:
        links: list[ReportLink] = []
        files: list[tuple[str, str | None, str | None]] = [
            ("result", str(job_dir / "report" / "result.json"), None),
            ("build log", vr.build_log, None),
        ]
        comparison = vr.details.get("comparison")
        if isinstance(comparison, dict):
            for r in comparison.get("reports", [])[:4]:
                if isinstance(r, dict):
                    files.append((str(r.get("kind", "report")), r.get("path"), r.get("sha256")))
        for kind, path, digest in files:
            if path and Path(path).is_file():
                links.append(ReportLink(kind[:64], self._href(Path(path)), digest))
        return links[:8]

    def _href(self, path: Path) -> str:
        if self.opts.reports_url is None:
            return path.absolute().as_uri()
        rel = path.absolute().relative_to(self.opts.reports.absolute())
        return self.opts.reports_url.rstrip("/") + "/" + urllib.parse.quote(rel.as_posix())


def fetch_artifact(job: Job, dest: Path) -> Path:
    """The job's artifact from the first source that has it with the right sha256."""
    dest.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    for source in job.artifact_sources:
        try:
            if source.startswith(("https://", "http://")):
                url = source.rstrip("/") + "/" + urllib.parse.quote(job.artifact.name)
                return fetch_sdist_url(url, job.artifact.sha256, dest)
            path = Path(source) / job.artifact.name
            if not path.is_file():
                raise InputError(f"{path}: no such file")
            if sha256_file(path) != job.artifact.sha256:
                raise InputError(f"{path}: sha256 differs from the release's")
            target = dest / job.artifact.name
            shutil.copyfile(path, target)
            if sha256_file(target) != job.artifact.sha256:  # changed while copying
                raise InputError(f"{path}: changed while being copied")
            return target
        except (RebuildError, OSError) as e:
            problems.append(str(e))
    raise TransportError(
        f"{job.artifact.name}: not found with sha256 {job.artifact.sha256[:12]}… in any "
        f"artifact source ({'; '.join(problems) or 'none given'})"
    )


def reap_orphans(reports: Path) -> int:
    """Remove build containers a killed worker left, recognised by their mounts in ``reports``."""
    from rebuild.envs import _docker  # noqa: PLC0415 - only workers talk to the engine
    from rebuild.envs.runner import RUN_LABEL  # noqa: PLC0415

    root = str(reports.absolute()) + "/"
    removed = 0
    with _docker.engine_errors("looking for containers a killed worker left"):
        for c in _docker.client().containers.list(all=True, filters={"label": RUN_LABEL}):
            mounts = c.attrs.get("Mounts") or []
            if any(str(m.get("Source", "")).startswith(root) for m in mounts):
                c.remove(force=True)
                removed += 1
    return removed


def lock_reports(reports: Path) -> StateDir:
    return StateDir(reports, "fleet worker")
