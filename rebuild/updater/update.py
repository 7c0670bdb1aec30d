"""``rebuild update`` as a library: find the newest version, fetch, gate, install.

The orchestrator. It owns the network (:mod:`rebuild.updater.fetch`) and the
disk (:mod:`rebuild.updater.install`) and hands every trust decision to the
gate (:mod:`rebuild.updater.gateway`). Mirrors and their version lists are
untrusted, so:

1. every mirror's version list is read (concurrently, bounded) and reported;
   the target is the newest orderable version *any* mirror lists, so one
   mirror cannot hide a release another one lists;
2. candidates are tried newest first, each on every mirror that lists it, in
   the order given: a transport failure, a timeout, an oversized or tampered
   download or a gate rejection fails over to the next mirror and is reported;
3. an older candidate is tried only when every mirror failed the newer one,
   and the report names each newer version that was skipped and why;
4. the gate refuses a downgrade or a replay, whatever a version list says; a
   release whose signed version differs from the version the mirror listed is
   refused as mislabelled;
5. when the gate's only objection is a consistency proof the bundle lacks
   (this updater skipped the release the bundle was made against), the
   proof is computed from the log's tiles (:mod:`rebuild.updater.logtiles`:
   the ``--log`` sources or the policy's ``logs``, then each mirror's
   ``log/``), without the gate state's lock, and the gate is asked once more;
6. nothing on disk changes unless a release passed the gate, and then only
   through the atomic installer, under the install directory's lock.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from rebuild.errors import NegativeVerdict, OperationalError, UsageError
from rebuild.updater import gateway
from rebuild.updater.fetch import FetchOptions, MirrorError, MirrorSession, check_mirror_url, join
from rebuild.updater.install import (
    InstallDir,
    InstallOutcome,
    LockedInstallDir,
    ReleaseMeta,
    test_step,
)
from rebuild.updater.logtiles import ADVICE, CatchUp, fetch_consistency, tile_sources
from rebuild.updater.mirror import (
    BUNDLE_NAME,
    MAX_INDEX_BYTES,
    MirrorIndex,
    artifact_path,
    bundle_path,
    index_path,
    parse_index,
    valid_package,
    valid_version,
)
from verify.bundle import ConsistencyProof
from verify.errors import VerifyError
from verify.gate import ConsistencyNeed

DEFAULT_DEADLINE: Final = 600.0
MAX_MIRRORS: Final = 32
MAX_LOGS: Final = 32


class UpdateFailedError(NegativeVerdict):
    """No mirror delivered a release that passed the gate; nothing was installed."""

    def __init__(self, message: str, report: UpdateReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class UpdateRequest:
    package: str
    mirrors: tuple[str, ...]
    install_dir: Path
    state_dir: Path
    version: str | None = None  # None: the newest any mirror lists
    fetch: FetchOptions = field(default_factory=FetchOptions)
    deadline: float = DEFAULT_DEADLINE
    lock_wait: float = 0.0
    logs: tuple[str, ...] = ()
    """Tile sources of the log, tried before each mirror's ``log/`` prefix."""

    def __post_init__(self) -> None:
        if not valid_package(self.package):
            raise UsageError(f"invalid package name {self.package!r}")
        if not self.mirrors:
            raise UsageError("no mirror given (--mirror, or mirrors = [...] in the policy)")
        if len(self.mirrors) > MAX_MIRRORS:
            raise UsageError(f"at most {MAX_MIRRORS} mirrors")
        if len(self.logs) > MAX_LOGS:
            raise UsageError(f"at most {MAX_LOGS} tile sources (--log)")
        if not 0 < self.deadline <= 24 * 3600:
            raise UsageError("the deadline must be in (0, 86400] seconds")
        if self.version is not None and not valid_version(self.version):
            raise UsageError(f"invalid version {self.version!r}")


@dataclass
class MirrorReport:
    url: str
    status: str = "ok"  # "ok" or a MirrorError kind
    error: str | None = None
    versions: list[str] = field(default_factory=list)
    index: MirrorIndex | None = None
    base: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "status": self.status,
            "error": self.error,
            "versions": self.versions,
        }


@dataclass
class Attempt:
    mirror: str
    version: str
    outcome: str  # installed | rolled-back | rejected | mislabelled | inconsistent | <kind>
    error: str | None = None
    fetch_seconds: float = 0.0
    gate_seconds: float = 0.0
    install_seconds: float = 0.0
    gate: dict[str, Any] | None = None
    consistency: CatchUp | None = None
    """The proof the gate lacked and what each tile source did (None: not needed)."""
    consistency_seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "consistency": None if self.consistency is None else self.consistency.as_json(),
            "gate": self.gate,
            "mirror": self.mirror,
            "version": self.version,
            "outcome": self.outcome,
            "error": self.error,
            "seconds": {
                "fetch": round(self.fetch_seconds, 4),
                "gate": round(self.gate_seconds, 4),
                "consistency": round(self.consistency_seconds, 4),
                "install": round(self.install_seconds, 4),
            },
        }


@dataclass
class UpdateReport:
    package: str
    status: str = "failed"  # installed | up-to-date | rolled-back | failed
    installed_version: str | None = None
    previous_version: str | None = None
    newest_listed: str | None = None
    mirrors: list[MirrorReport] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    skipped_newer: list[dict[str, Any]] = field(default_factory=list)
    unorderable: list[dict[str, str]] = field(default_factory=list)
    recovered: dict[str, Any] | None = None
    install: InstallOutcome | None = None
    seconds: float = 0.0
    catch_ups: dict[ConsistencyNeed, CatchUp] = field(default_factory=dict, repr=False)
    """Proofs computed from tiles in this run, by need (two mirrors' same bundle: once)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "status": self.status,
            "installed_version": self.installed_version,
            "previous_version": self.previous_version,
            "newest_listed": self.newest_listed,
            "mirrors": [m.as_json() for m in self.mirrors],
            "attempts": [a.as_json() for a in self.attempts],
            "skipped_newer": self.skipped_newer,
            "unorderable": self.unorderable,
            "recovered": self.recovered,
            "install": self.install.as_json() if self.install else None,
            "seconds": round(self.seconds, 4),
        }


def resolve_mirrors(cli: list[str] | None, policy: gateway.UpdaterPolicy) -> tuple[str, ...]:
    """The mirrors to use: the command line's if any, else the policy's."""
    return tuple(cli) if cli else policy.mirrors


def resolve_logs(cli: list[str] | None, policy: gateway.UpdaterPolicy) -> tuple[str, ...]:
    """The log tile sources to try first: the command line's if any, else the policy's."""
    return tuple(cli) if cli else policy.logs


def run_update(request: UpdateRequest, policy: gateway.UpdaterPolicy) -> UpdateReport:
    """Update one package; raises UpdateFailedError (exit 1) when nothing passed the gate."""
    t0 = time.monotonic()
    package = policy.package(request.package)  # UsageError when the policy has no such package
    report = UpdateReport(request.package)
    request.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    def reconfirm(artifact: Path, bundle: bytes) -> bool:
        return gateway.confirm_installed(artifact, bundle, policy, request.state_dir)

    with InstallDir(request.install_dir).locked(request.lock_wait) as d:
        test_step("locked")
        recovered = d.recover(package.health_check, reconfirm)
        if recovered is not None:
            report.recovered = recovered.as_json()
        d.clean()
        installed = d.installed()
        if installed is not None and installed.meta.package != request.package:
            raise UsageError(
                f"{request.install_dir} holds {installed.meta.package}, not {request.package}"
            )
        report.installed_version = installed.meta.version if installed else None
        try:
            asyncio.run(_update(request, policy, package, d, report))
        finally:
            if not d.journal.exists():
                d.clean()
            report.seconds = time.monotonic() - t0
    if report.status == "failed":
        raise UpdateFailedError(_failure_summary(report), report)
    return report


async def _update(
    request: UpdateRequest,
    policy: gateway.UpdaterPolicy,
    package: gateway.PackagePolicy,
    d: LockedInstallDir,
    report: UpdateReport,
) -> None:
    deadline = time.monotonic() + request.deadline
    async with MirrorSession(request.fetch, deadline) as session:
        report.mirrors = await asyncio.gather(
            *(_read_index(session, url, request) for url in request.mirrors)
        )
        if not any(m.index is not None for m in report.mirrors):
            # No answer is not "nothing new": a mirror an attacker cuts off
            # must not look like an up-to-date install (a freeze).
            report.status = "failed"
            return
        listed = _listed_versions(report)
        newest = _order(listed, report)
        report.newest_listed = newest[0] if newest else None
        if request.version is not None:
            if request.version not in listed:
                report.status = "failed"
                return
            candidates = [request.version]
        else:
            candidates = newest
        if report.installed_version is not None:
            if request.version == report.installed_version:
                report.status = "up-to-date"
                return
            if request.version is None:
                # Only newer versions are worth fetching. An explicitly requested
                # version is always put to the gate, which refuses a downgrade.
                candidates = [
                    v for v in candidates if gateway.is_newer(v, report.installed_version)
                ]
                if not candidates:
                    report.status = "up-to-date"
                    return
        failed_newer: list[dict[str, Any]] = []
        for version in candidates:
            for mirror in report.mirrors:
                if mirror.index is None or mirror.index.get(version) is None:
                    continue
                attempt = await _attempt(
                    session,
                    request,
                    policy,
                    package,
                    d,
                    mirror=mirror,
                    version=version,
                    report=report,
                )
                report.attempts.append(attempt)
                if attempt.outcome in ("installed", "rolled-back"):
                    report.status = attempt.outcome
                    report.skipped_newer = failed_newer
                    return
            failed_newer.append(
                {
                    "version": version,
                    "listed_by": [m.url for m in report.mirrors if version in m.versions],
                    "reasons": [
                        f"{a.mirror}: {a.outcome}" for a in report.attempts if a.version == version
                    ],
                }
            )
        report.skipped_newer = failed_newer
        report.status = "failed"


async def _read_index(session: MirrorSession, url: str, request: UpdateRequest) -> MirrorReport:
    m = MirrorReport(url)
    try:
        m.base = check_mirror_url(url, request.fetch.insecure_loopback)
        data = await session.get_bytes(join(m.base, index_path(request.package)), MAX_INDEX_BYTES)
        m.index = parse_index(data, request.package, what=f"{url}: {index_path(request.package)}")
        m.versions = [r.version for r in m.index.releases]
    except MirrorError as e:
        m.status, m.error = e.kind, str(e)
    except OperationalError as e:  # parse_index: the mirror serves garbage
        m.status, m.error = "bad-index", str(e)
    return m


def _listed_versions(report: UpdateReport) -> set[str]:
    return {v for m in report.mirrors for v in m.versions}


def _order(versions: set[str], report: UpdateReport) -> list[str]:
    """Newest first; versions the gate could never order are reported and dropped."""
    orderable = []
    for v in versions:
        try:
            gateway.version_key(v)
            orderable.append(v)
        except VerifyError as e:
            report.unorderable.append({"version": v, "error": str(e)})
    return sorted(orderable, key=gateway.version_key, reverse=True)


async def _attempt(
    session: MirrorSession,
    request: UpdateRequest,
    policy: gateway.UpdaterPolicy,
    package: gateway.PackagePolicy,
    d: LockedInstallDir,
    *,
    mirror: MirrorReport,
    version: str,
    report: UpdateReport,
) -> Attempt:
    assert mirror.index is not None and mirror.base is not None
    listed = mirror.index.get(version)
    assert listed is not None
    a = Attempt(mirror.url, version, "failed")
    work = d.new_incoming()
    try:
        t = time.monotonic()
        if listed.size > package.max_artifact_bytes:
            raise MirrorError(
                "too-large",
                f"lists {listed.size} bytes for the artifact, over the policy's "
                f"{package.max_artifact_bytes}",
            )
        bundle = await session.get_bytes(
            join(mirror.base, bundle_path(request.package, version)), package.max_bundle_bytes
        )
        art = await session.download(
            join(mirror.base, artifact_path(request.package, listed)),
            work / listed.artifact,
            package.max_artifact_bytes,
        )
        a.fetch_seconds = time.monotonic() - t
        test_step("fetched")
        if art.sha256 != listed.sha256 or art.size != listed.size:
            a.outcome = "inconsistent"
            a.error = "the artifact does not match the mirror's own version list (tampered?)"
            return a
        proofs: tuple[ConsistencyProof, ...] = ()
        while True:
            t = time.monotonic()
            with gateway.gate(art.path, bundle, policy, request.state_dir, proofs) as g:
                a.gate_seconds += time.monotonic() - t
                a.gate = g.decision()
                need = g.needs_consistency
                if need is None or a.consistency is not None:
                    return _judged(
                        g,
                        a,
                        request=request,
                        package=package,
                        d=d,
                        bundle=bundle,
                        sha256=art.sha256,
                        version=version,
                        report=report,
                    )
            # The gate's only objection is a consistency proof the bundle lacks:
            # compute it from the log's tiles (the state's lock is not held
            # meanwhile) and ask once more. A state that moved on in between
            # only makes the second answer a rejection.
            t = time.monotonic()
            a.consistency = await _catch_up(session, request, report, mirror, need)
            a.consistency_seconds = time.monotonic() - t
            if a.consistency.proof is None:
                a.outcome = "rejected"
                a.error = f"{g.reasons()}; {a.consistency.summary()}; {ADVICE}"
                return a
            proofs = (a.consistency.proof,)
    except MirrorError as e:
        a.outcome, a.error = e.kind, str(e)
        return a
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def _catch_up(
    session: MirrorSession,
    request: UpdateRequest,
    report: UpdateReport,
    mirror: MirrorReport,
    need: ConsistencyNeed,
) -> CatchUp:
    """The proof for ``need`` from the tile sources (of the mirrors' ``log/``, this one's first)."""
    known = report.catch_ups.get(need)
    if known is not None:
        return known
    mirrors = [mirror.url, *(m.url for m in report.mirrors if m is not mirror)]
    found = await fetch_consistency(session, tile_sources(request.logs, mirrors), need)
    report.catch_ups[need] = found
    return found


def _judged(
    g: gateway.GateSession,
    a: Attempt,
    *,
    request: UpdateRequest,
    package: gateway.PackagePolicy,
    d: LockedInstallDir,
    bundle: bytes,
    sha256: str,
    version: str,
    report: UpdateReport,
) -> Attempt:
    """Act on the gate's answer, inside its session: refuse, or commit and install."""
    if not g.accepted:
        a.outcome, a.error = "rejected", g.reasons()
        return a
    test_step("gated")
    if g.version != version or g.package != request.package or not g.artifact_name:
        a.outcome = "mislabelled"
        a.error = (
            f"listed as {request.package} {version}, but the signed release is "
            f"{g.package} {g.version}"
        )
        return a
    # the log view is accepted now, whatever the install does next
    g.commit_checkpoint()
    t = time.monotonic()
    meta = ReleaseMeta(g.package, g.version, g.artifact_name, sha256)

    def record(_artifact: Path, _bundle: bytes) -> bool:
        g.commit_installed()
        return True

    outcome = d.install(g.artifact, meta, bundle, package.health_check, record)
    a.install_seconds = time.monotonic() - t
    a.outcome = outcome.status
    report.install = outcome
    report.previous_version = report.installed_version
    if outcome.status == "rolled-back":
        detail = outcome.health.output.strip()[-500:] if outcome.health else ""
        a.error = f"{outcome.reason}: {detail}" if detail else outcome.reason
    return a


def _failure_summary(report: UpdateReport) -> str:
    if not report.attempts:
        if not any(m.index is not None for m in report.mirrors):
            reasons = "; ".join(f"{m.url}: {m.status} ({m.error})" for m in report.mirrors)
            return f"no mirror answered for {report.package} ({reasons})"
        if report.newest_listed is None:
            return f"no mirror lists a release of {report.package}"
        return f"no mirror lists the requested release of {report.package}"
    reasons = "; ".join(f"{a.mirror} {a.version}: {a.outcome}" for a in report.attempts)
    return f"no mirror delivered a release of {report.package} that passed the gate ({reasons})"


__all__ = [
    "BUNDLE_NAME",
    "Attempt",
    "MirrorReport",
    "UpdateFailedError",
    "UpdateReport",
    "UpdateRequest",
    "resolve_logs",
    "resolve_mirrors",
    "run_update",
]
