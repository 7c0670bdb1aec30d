"""The updater's one door to the gate: every trust decision goes through here.

The delivery code (mirrors, downloads, the installer, the daemon) decides
nothing about trust. It asks this module, which only calls the gate
(``verify.gate`` through its rebuild-side runner) and the policy, bundle and
version parsers the gate owns:

- :func:`load_policy`: the rebuild-policy/v1 file (with its tlog-policy);
- :func:`gate`: may this artifact with this bundle be installed, given the
  policy and the trusted state? The session it opens holds the state's lock
  and separates the two commits: "checkpoint accepted" (before installing)
  and "version installed" (only after the switch and the health check);
- :func:`confirm_installed`: after a crash between the switch and that
  second commit, the same question again, and the commit;
- :func:`version_key` / :func:`is_newer`: the gate's version order, so the
  updater's "newest" and the gate's "no downgrade" never disagree;
- :func:`release_info`: what a bundle's release statement *says* (package,
  version, artifact name), unverified, for ``rebuild mirror publish``, which
  only files bytes and trusts nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rebuild.errors import InputError, UsageError
from rebuild.gate import GateRun, open_gate
from rebuild.gate import load_policy as gate_load_policy
from verify.bundle import ConsistencyProof, parse_bundle
from verify.dsse import Envelope
from verify.errors import VerifyError
from verify.gate import ConsistencyNeed
from verify.intoto import RELEASE_PREDICATE_TYPE, ReleasePredicate, Statement
from verify.policy import PackagePolicy, UpdatePolicy
from verify.version import Version, parse_version

__all__ = [
    "GateSession",
    "PackagePolicy",
    "UpdaterPolicy",
    "confirm_installed",
    "gate",
    "is_newer",
    "load_policy",
    "release_info",
    "version_key",
]


@dataclass(frozen=True)
class UpdaterPolicy:
    """The parsed policy plus where it came from."""

    path: Path
    policy: UpdatePolicy

    @property
    def mirrors(self) -> tuple[str, ...]:
        return self.policy.mirrors

    @property
    def logs(self) -> tuple[str, ...]:
        return self.policy.logs

    def package(self, name: str) -> PackagePolicy:
        p = self.policy.package(name)
        if p is None:
            raise UsageError(f"{self.path}: the policy has no package {name!r}")
        return p

    @property
    def package_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.policy.packages)


def load_policy(path: Path) -> UpdaterPolicy:
    """Read and validate the policy file (and the tlog-policy it names); InputError if bad."""
    return UpdaterPolicy(path, gate_load_policy(path))


def version_key(text: str) -> Version:
    """The gate's order; raises VersionError for a version the gate cannot order."""
    return parse_version(text)


def is_newer(candidate: str, installed: str) -> bool:
    """True when ``candidate`` is newer than ``installed`` in the gate's order.

    An installed version the gate cannot order makes every candidate worth
    asking the gate about (it refuses what it cannot order).
    """
    try:
        installed_key = parse_version(installed)
    except VerifyError:
        return True
    return parse_version(candidate) > installed_key


@dataclass(frozen=True)
class ReleaseInfo:
    package: str
    version: str
    artifact: str


def release_info(bundle: bytes, artifact_sha256: str, what: str = "bundle") -> ReleaseInfo:
    """What the bundle's release statement claims about the artifact (NOT verified)."""
    try:
        b = parse_bundle(bundle)
        statement = Statement.parse(Envelope.parse(b.release.envelope).payload)
    except VerifyError as e:
        raise InputError(f"{what}: {e}") from None
    pred = statement.predicate
    if statement.predicate_type != RELEASE_PREDICATE_TYPE or not isinstance(pred, ReleasePredicate):
        raise InputError(f"{what}: its release entry is not a release statement")
    subject = statement.subject_for(artifact_sha256)
    if subject is None:
        raise InputError(
            f"{what}: the release statement does not list an artifact with sha256 "
            f"{artifact_sha256[:12]}…"
        )
    return ReleaseInfo(pred.package, pred.version, subject.name)


@dataclass
class GateSession:
    """One gate run, open while its state lock is held (see :func:`gate`)."""

    run: GateRun
    artifact_name: str | None

    @property
    def accepted(self) -> bool:
        return self.run.decision.accepted

    @property
    def package(self) -> str | None:
        return self.run.decision.package

    @property
    def version(self) -> str | None:
        return self.run.decision.version

    @property
    def artifact(self) -> bytes:
        """The exact bytes the gate judged: install these."""
        return self.run.artifact

    @property
    def needs_consistency(self) -> ConsistencyNeed | None:
        """The consistency proof the gate lacked, when that is its only objection."""
        return self.run.decision.only_needs_consistency

    def reasons(self) -> str:
        return (
            "; ".join(f"step {f.step} {f.code}: {f.reason}" for f in self.run.decision.failures)
            or "rejected"
        )

    def decision(self) -> dict[str, Any]:
        doc: dict[str, Any] = self.run.decision.to_dict()
        return doc

    def commit_checkpoint(self) -> None:
        """Record the accepted checkpoint (before installing)."""
        self.run.commit_checkpoint()

    def commit_installed(self) -> None:
        """Record the release as installed (after the switch and the health check)."""
        self.run.commit_installed()


@contextlib.contextmanager
def gate(
    artifact: Path,
    bundle: bytes,
    policy: UpdaterPolicy,
    state: Path,
    consistency: Sequence[ConsistencyProof] = (),
) -> Iterator[GateSession]:
    """Run the gate on a downloaded artifact and its bundle, holding the state's lock.

    The caller installs only when ``session.accepted``, and commits through
    the session. Leaving the block without a commit records nothing.
    ``consistency``: proofs the caller computed from the log's tiles for
    what an earlier session's ``needs_consistency`` named.
    """
    with open_gate(artifact, bundle, policy.policy, state, consistency=consistency) as run:
        name = None
        if run.decision.accepted:
            # the release statement is verified now: its subject names the file
            name = release_info(bundle, run.decision.artifact_sha256).artifact
        yield GateSession(run, name)


def confirm_installed(artifact: Path, bundle: bytes, policy: UpdaterPolicy, state: Path) -> bool:
    """After a crash: gate the switched-to release again and record it installed.

    False when the gate no longer accepts it (say its checkpoint grew too old
    while the machine was down): the installer then rolls back.
    """
    with gate(artifact, bundle, policy, state) as session:
        if not session.accepted:
            return False
        session.commit_installed()
        return True
