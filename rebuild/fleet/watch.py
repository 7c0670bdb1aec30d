"""``rebuild fleet watch``: find new targets and enqueue each exactly once.

Two sources, each round:

1. **The audit log.** The checkpoint is verified and proven consistent with
   the last one accepted (:func:`rebuild.log.monitor.follow_once`, the same
   monitor as ``rebuild log follow``); entries from the watcher's position up
   to the checkpoint are read through the tiles and checked against the
   signed tree (:class:`~rebuild.log.tree.TreeReader`). Each release
   statement (with ``--maintainer-key``: only those a trusted maintainer
   signed) becomes one job per subject its recipe builds; the statement
   travels with the job.
2. **The package index.** For each watched project, the PEP 691 JSON page
   of pip's configured index (:mod:`rebuild.sources.pypi`); versions with a
   pure-Python wheel and an sdist not seen before become ``pypi:`` jobs. On
   first sight of a project only the newest ``backfill`` versions are taken.

A target is enqueued once: the broker keeps every target key (artifact
sha256 + recipe digest) ever enqueued, so a restarted watcher, or a second
one, skips it. The key is recorded *after* the broker accepted the job, so a
crash in between re-enqueues it at worst once; the workers drop the second
copy (:mod:`rebuild.fleet.worker`). The watcher's position in the log and the
versions it saw are local state, written atomically after each round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from packaging.utils import canonicalize_name

from rebuild.errors import NegativeVerdict, OperationalError, RebuildError
from rebuild.fleet.broker import BUILD_ACTOR, BUILD_QUEUE, Fleet, Keys, now
from rebuild.fleet.jobs import Artifact, IndexFileRef, Job, MessageError, pypi_job
from rebuild.fleet.state import StateDir
from rebuild.log.client import LogClient
from rebuild.log.monitor import CheckpointVerifier, follow_once
from rebuild.log.tree import TreeReader
from rebuild.recipe import parse_recipe
from rebuild.sources.pypi import PackageIndex, list_releases
from verify.dsse import PAYLOAD_TYPE_INTOTO, Envelope
from verify.errors import VerifyError
from verify.intoto import ReleasePredicate, Statement, verify_statement
from verify.keys import VerifierKey

MAX_ENTRIES_PER_ROUND: Final = 10_000
MAX_PROJECTS: Final = 10_000
MAX_VERSIONS_KEPT: Final = 10_000
MAX_REPORTED: Final = 100
POSITION_FILE: Final = "log-position.json"
INDEX_FILE: Final = "index-versions.json"


@dataclass(frozen=True)
class WatchOptions:
    log_url: str | None = None
    log_ca_bundle: Path | None = None
    verifier: CheckpointVerifier | None = None
    maintainer_keys: tuple[VerifierKey, ...] = ()
    artifact_sources: tuple[str, ...] = ()
    projects: tuple[str, ...] = ()
    backfill: int = 1
    max_entries: int = MAX_ENTRIES_PER_ROUND


@dataclass
class RoundReport:
    """What one round found; ``--json`` prints it."""

    enqueued: list[dict[str, Any]] = field(default_factory=list)
    already_known: int = 0
    log: dict[str, Any] | None = None
    index: dict[str, Any] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def skip(self, where: str, why: str) -> None:
        if len(self.skipped) < MAX_REPORTED:
            self.skipped.append({"where": where, "why": why})

    def to_json(self) -> dict[str, Any]:
        return {
            "enqueued": self.enqueued,
            "already_known": self.already_known,
            "log": self.log,
            "index": self.index,
            "skipped": self.skipped,
            "errors": self.errors,
        }


class Watcher:
    def __init__(self, fleet: Fleet, state: StateDir, opts: WatchOptions) -> None:
        if len(opts.projects) > MAX_PROJECTS:
            raise OperationalError(f"at most {MAX_PROJECTS} projects per watcher")
        self.fleet = fleet
        self.state = state
        self.opts = opts
        self.enqueued_total = 0

    def round(self) -> RoundReport:
        report = RoundReport()
        if self.opts.log_url is not None:
            try:
                self._follow_log(report)
            except NegativeVerdict:
                raise  # a fork: stop, the evidence is in the state directory
            except (RebuildError, VerifyError) as e:
                report.errors.append(f"log: {e}")
        if self.opts.projects:
            self._poll_index(report)
        return report

    # -- submitting -------------------------------------------------------------------

    def submit(self, job: Job, origin: str, report: RoundReport) -> bool:
        """Enqueue ``job`` unless its target was enqueued before; True if enqueued."""
        key = job.key
        with self.fleet.errors("checking the target record"):
            known = self.fleet.client.hexists(Keys.targets, key)
        if known:
            report.already_known += 1
            return False
        message_id = self.fleet.send(BUILD_QUEUE, BUILD_ACTOR, job.to_json())
        record = {
            "label": job.label,
            "origin": origin,
            "message_id": message_id,
            "enqueued_at": now(),
        }
        self.fleet.set_json(Keys.targets, key, record)
        self.enqueued_total += 1
        if len(report.enqueued) < MAX_REPORTED:
            report.enqueued.append({"key": key, "label": job.label, "origin": origin})
        return True

    # -- the log ------------------------------------------------------------------------

    def _follow_log(self, report: RoundReport) -> None:
        assert self.opts.log_url is not None and self.opts.verifier is not None
        with LogClient(self.opts.log_url, self.opts.log_ca_bundle) as client:
            followed = follow_once(client, self.opts.verifier, self.state.path / "log-monitor")
            doc = self.state.read_json(POSITION_FILE) or {}
            position = doc.get("next", 0)
            if doc and doc.get("log") != client.url:
                raise OperationalError(
                    f"{self.state.path}: this state follows {doc.get('log')}, not {client.url}"
                )
            if not isinstance(position, int) or position < 0:
                raise OperationalError(f"{self.state.path / POSITION_FILE}: bad position")
            report.log = {"status": followed.status, "size": followed.size, "from": position}
            if followed.status == "stale" or position >= followed.size:
                report.log["next"] = position
                return
            # The checkpoint follow_once accepted: read its tree.
            cp = self.opts.verifier.verify(followed.checkpoint.encode())
            reader = TreeReader(client, cp)
            end = min(followed.size, position + self.opts.max_entries)
            for index, entry in reader.entries(position, end):
                for job in self._release_jobs(index, entry, report):
                    self.submit(job, f"log#{index}", report)
                position = index + 1
                if position % 256 == 0:
                    self.state.write_json(POSITION_FILE, {"log": client.url, "next": position})
            self.state.write_json(POSITION_FILE, {"log": client.url, "next": position})
            report.log["next"] = position

    def _release_jobs(self, index: int, entry: bytes, report: RoundReport) -> list[Job]:
        where = f"log#{index}"
        try:
            env = Envelope.parse(entry)
            if env.payload_type != PAYLOAD_TYPE_INTOTO:
                return []
            statement = Statement.parse(env.payload)
        except VerifyError:
            return []  # not an in-toto statement: nothing to rebuild
        predicate = statement.predicate
        if not isinstance(predicate, ReleasePredicate):
            return []  # rebuild attestations and the like
        if self.opts.maintainer_keys:
            try:
                verify_statement(entry, self.opts.maintainer_keys)
            except VerifyError as e:
                report.skip(where, f"release {predicate.package} {predicate.version}: {e}")
                return []
        try:
            recipe = parse_recipe(predicate.recipe.encode(), f"{where} recipe")
        except RebuildError as e:
            report.skip(where, str(e))
            return []
        jobs: list[Job] = []
        for subject in statement.subjects:
            if not recipe.builds(subject.name):
                continue  # released, but not what this recipe builds
            try:
                jobs.append(
                    Job(
                        kind="release",
                        package=predicate.package,
                        version=predicate.version,
                        artifact=Artifact(subject.name, subject.sha256),
                        recipe_key=predicate.recipe_sha256,
                        source=predicate.source,
                        statement=entry,
                        log_index=index,
                        artifact_sources=self.opts.artifact_sources,
                        maintainer_keys=tuple(k.encode() for k in self.opts.maintainer_keys),
                    )
                )
            except MessageError as e:
                report.skip(where, str(e))
        if not jobs:
            report.skip(where, f"release {predicate.package}: no subject matches the recipe")
        return jobs

    # -- the index ----------------------------------------------------------------------

    def _poll_index(self, report: RoundReport) -> None:
        try:
            index = PackageIndex.from_pip()
        except RebuildError as e:
            report.errors.append(f"index: {e}")
            return
        seen_doc = self.state.read_json(INDEX_FILE) or {}
        projects = seen_doc.get("projects", {})
        if not isinstance(projects, dict):
            projects = {}
        for name in self.opts.projects:
            cname = str(canonicalize_name(name))
            try:
                releases = list_releases(index, name)
            except RebuildError as e:
                report.index[cname] = {"error": str(e)}
                report.errors.append(f"index {cname}: {e}")
                continue
            entry = projects.get(cname)
            first_sight = not isinstance(entry, dict)
            seen = set(entry.get("versions", [])) if isinstance(entry, dict) else set()
            new = [r for r in releases if r.version not in seen]
            if first_sight:
                new = new[-self.opts.backfill :] if self.opts.backfill else []
            taken: list[str] = []
            for rel in new:
                job = pypi_job(
                    name,
                    rel.version,
                    IndexFileRef(rel.wheel.filename, rel.wheel.url, rel.wheel.sha256),
                    IndexFileRef(rel.sdist.filename, rel.sdist.url, rel.sdist.sha256),
                )
                self.submit(job, "index", report)
                taken.append(rel.version)
            versions = sorted(seen | {r.version for r in releases})[-MAX_VERSIONS_KEPT:]
            projects[cname] = {"versions": versions}
            report.index[cname] = {"versions": len(releases), "new": taken}
            # After every project: a crash costs at most one project's re-check.
            self.state.write_json(INDEX_FILE, {"index": index.url, "projects": projects})
