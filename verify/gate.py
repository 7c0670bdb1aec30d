"""The updater's trust decision: install these bytes, or not.

:func:`decide` takes the artifact's bytes, a bundle's bytes, the updater's
policy, its previous trusted state and one reference time ``now``, and
returns a :class:`Decision`. It reads no file, opens no socket, reads no
clock and changes nothing: the caller persists the new state only when the
decision is an acceptance (``rebuild.gate``).

The steps, numbered here, in the code (``# Step N``), in the ``--json``
output and in docs/architecture.md:

1. **Bundle.** The bundle parses (size cap, nesting depth, strict fields);
   the release statement parses; the artifact's sha256 is one of its
   subjects; its package is in the policy; artifact and bundle are within
   the package's size caps.
2. **Maintainer.** A maintainer key trusted for *that* package signed the
   release envelope (a maintainer of another package counts for nothing).
3. **Rebuilders.** At least k *distinct* trusted rebuilders of the package
   attest an accepted verdict (``reproduced`` unless the policy lists
   ``equivalent`` too) for exactly this sha256, the source commit (or sdist
   digest) and the recipe digest the release names. One key counts once
   however many envelopes it signed; untrusted keys, other packages'
   rebuilders and attestations about other bytes, sources or recipes count
   zero. A trusted ``mismatch`` or ``failed`` for this sha256 is reported;
   with ``strict`` it rejects.
4. **Inclusion.** Every envelope used (the release, and for each counted
   rebuilder an attestation) is in the log: its tlog-proof is against the
   bundle's checkpoint and leads from the envelope's leaf hash to its root.
5. **Checkpoint.** The checkpoint is signed by a log of the tlog-policy and
   cosigned by its witness quorum (distinct witnesses); its newest valid
   cosignature is younger than ``max_checkpoint_age`` (no freeze) and none
   is more than :data:`MAX_CLOCK_SKEW` seconds in the future.
6. **Consistency.** The checkpoint extends the last one accepted from that
   log: a smaller tree is a rollback; two roots for one size, or a
   consistency proof that fails, is a fork (the evidence is returned so the
   caller keeps it); a larger tree needs a consistency proof from the stored
   size, from the bundle or handed in by the caller (who computed it from
   the log's tiles: as untrusted as the bundle's, and checked the same
   way), and the decision names the sizes it needs when there is none.
7. **Version.** The release is newer than the installed one
   (:mod:`verify.version` order; equal version and bytes is "already
   installed"); ``allow_downgrade`` overrides, and the override is recorded.

Every step that can still be evaluated meaningfully is evaluated, so a
rejection lists all its reasons; a step that cannot (no parsable bundle, no
known package, no log signature) is ``skipped``. Failures carry a stable
``code`` as well as a sentence.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from verify.bundle import MAX_BUNDLE_SIZE, Bundle, ConsistencyProof, LoggedEnvelope
from verify.bundle import parse_bundle as _parse_bundle
from verify.checkpoint import Checkpoint
from verify.checkpoint import parse as parse_checkpoint
from verify.cosignature import MAX_CLOCK_SKEW, DatedCosignatures, date_cosignatures
from verify.dsse import PAYLOAD_TYPE_INTOTO, Envelope, check_signatures, key_hint
from verify.errors import (
    BundleFormatError,
    FormatError,
    KeyFormatError,
    ProofError,
    SignatureError,
)
from verify.intoto import (
    GitSource,
    RebuildPredicate,
    ReleasePredicate,
    Source,
    Statement,
)
from verify.keys import VerifierKey
from verify.merkle import leaf_hash, verify_consistency, verify_inclusion
from verify.note import open_note, split_note
from verify.policy import PackagePolicy, UpdatePolicy
from verify.state import InstalledRelease, TrustedState
from verify.version import parse_version

DISSENTING_VERDICTS: Final = ("mismatch", "failed")

StepStatus = Literal["passed", "failed", "skipped"]
STEP_NAMES: Final[dict[int, str]] = {
    1: "bundle",
    2: "maintainer",
    3: "rebuilders",
    4: "inclusion",
    5: "checkpoint",
    6: "consistency",
    7: "version",
}


@dataclass(frozen=True)
class Failure:
    """Why a step failed: the step, a stable machine-readable code, a sentence. Never raises."""

    step: int
    code: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """The failure's JSON object. Never raises."""
        return {"step": self.step, "code": self.code, "reason": self.reason}


@dataclass(frozen=True)
class StepResult:
    """One numbered step: passed, failed (with its failures) or skipped (and why).

    Never raises.
    """

    step: int
    status: StepStatus
    summary: str
    failures: tuple[Failure, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The step's name (``bundle``, ``maintainer``, ...). Never raises."""
        return STEP_NAMES[self.step]

    def to_dict(self) -> dict[str, Any]:
        """The step's JSON object. Never raises."""
        return {
            "step": self.step,
            "name": self.name,
            "status": self.status,
            "summary": self.summary,
            "failures": [f.to_dict() for f in self.failures],
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class AttestationReport:
    """What step 3 (and 4) made of one attestation in the bundle. Never raises."""

    position: int
    """Its index in the bundle's ``attestations`` list."""
    log_index: int
    """The log index its proof claims (unverified unless ``included``)."""
    status: Literal["counted", "dissent", "ignored"]
    code: str
    """``counted``, ``duplicate-key``, ``untrusted-key``, ``invalid-signature``,
    ``malformed``, ``other-digest``, ``other-commit``, ``other-recipe``,
    ``verdict-not-accepted``, ``not-rebuild``, ``mismatch`` or ``failed``."""
    reason: str
    signers: tuple[str, ...] = ()
    """``name+keyid`` of the trusted rebuilder keys that signed it."""
    verdict: str | None = None
    included: bool | None = None
    """Step 4's answer for envelopes it checked; None for the others."""

    def to_dict(self) -> dict[str, Any]:
        """The report's JSON object. Never raises."""
        return {
            "position": self.position,
            "log_index": self.log_index,
            "status": self.status,
            "code": self.code,
            "reason": self.reason,
            "signers": list(self.signers),
            "verdict": self.verdict,
            "included": self.included,
        }


@dataclass(frozen=True)
class CheckpointInfo:
    """The bundle's checkpoint as step 5 saw it. Never raises."""

    origin: str
    size: int
    root_hash: bytes
    log_signature: bool
    witnesses: tuple[str, ...]
    """Policy names of the distinct trusted witnesses whose cosignature verified."""
    quorum: str
    quorum_met: bool
    newest_cosignature: int | None

    def to_dict(self, now: int) -> dict[str, Any]:
        """The checkpoint's JSON object, its age measured from ``now``. Never raises."""
        newest = self.newest_cosignature
        return {
            "origin": self.origin,
            "size": self.size,
            "root_hash": base64.b64encode(self.root_hash).decode(),
            "log_signature": self.log_signature,
            "witnesses": list(self.witnesses),
            "quorum": self.quorum,
            "quorum_met": self.quorum_met,
            "newest_cosignature": newest,
            "age_seconds": None if newest is None else now - newest,
        }


@dataclass(frozen=True)
class ForkEvidence:
    """Two checkpoints signed by one log that cannot both be true (step 6). Never raises."""

    origin: str
    accepted: str
    """The checkpoint note this updater accepted before."""
    conflicting: str
    """The bundle's checkpoint note."""
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """The evidence's JSON object. Never raises."""
        return {
            "origin": self.origin,
            "accepted": self.accepted,
            "conflicting": self.conflicting,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class ConsistencyNeed:
    """The consistency proof step 6 needed and did not have. Never raises.

    The checkpoint is the bundle's, signed by a log of the policy (step 6
    runs only then), so these sizes and this root are the log's own claim:
    a caller may fetch the log's tiles for them, compute the proof from
    ``old_size`` to ``new_size`` and ask again with it.
    """

    origin: str
    old_size: int
    """The size of the checkpoint accepted before (the state's)."""
    new_size: int
    """The size of the bundle's checkpoint."""
    new_root: bytes
    """The bundle's checkpoint's root hash."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (the root in base64). Never raises."""
        return {
            "origin": self.origin,
            "old_size": self.old_size,
            "new_size": self.new_size,
            "new_root": base64.b64encode(self.new_root).decode(),
        }


@dataclass(frozen=True)
class Decision:
    """The gate's answer. ``accepted`` is true exactly when no step failed.

    ``new_checkpoint`` and ``install`` say what an acceptance records in the
    trusted state (None on rejection); ``fork`` is evidence to keep even on
    rejection; ``needs_consistency`` names the proof step 6 lacked (from
    ``needs_since_size``, the stored size, to the bundle's size). Only
    :meth:`apply` raises (ValueError, for a rejected decision).
    """

    accepted: bool
    now: int
    artifact_sha256: str
    artifact_size: int
    steps: tuple[StepResult, ...]
    package: str | None = None
    version: str | None = None
    threshold: int | None = None
    counted: tuple[str, ...] = ()
    """``name+keyid`` of the distinct trusted rebuilders counted in step 3 and included."""
    attestations: tuple[AttestationReport, ...] = ()
    checkpoint: CheckpointInfo | None = None
    new_checkpoint: str | None = None
    install: InstalledRelease | None = None
    fork: ForkEvidence | None = None
    needs_consistency: ConsistencyNeed | None = None
    consistency_from_caller: bool = False
    """Step 6 passed with a proof the caller handed in (not the bundle's)."""

    @property
    def needs_since_size(self) -> int | None:
        """The stored tree size a consistency proof must start from, when one was missing.
        Never raises."""
        return None if self.needs_consistency is None else self.needs_consistency.old_size

    @property
    def only_needs_consistency(self) -> ConsistencyNeed | None:
        """The missing proof, when it is the decision's only failure (else None).

        Then a caller that finds the proof (from the log's tiles) and asks
        again may get an acceptance; with any other failure it would not.
        Never raises.
        """
        if self.needs_consistency is None or not self.failures:
            return None
        if any(f.code != "consistency-proof-missing" for f in self.failures):
            return None
        return self.needs_consistency

    @property
    def failures(self) -> tuple[Failure, ...]:
        """Every step's failures, in step order. Never raises."""
        return tuple(f for s in self.steps for f in s.failures)

    def step(self, number: int) -> StepResult:
        """Step ``number`` (1..7). Raises IndexError for another number."""
        return self.steps[number - 1]

    def apply(self, state: TrustedState, *, installed: bool) -> TrustedState:
        """The trusted state after this acceptance.

        ``installed=False`` records only the checkpoint (the updater has not
        installed the release yet); ``installed=True`` records both. Raises
        ValueError on a rejected decision: nothing may be recorded from it.
        """
        if not self.accepted or self.new_checkpoint is None or self.install is None:
            raise ValueError("a rejected decision changes no state")
        new = state.with_checkpoint(self.new_checkpoint)
        return new.with_installed(self.install) if installed else new

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document (steps numbered 1..7). Never raises."""
        return {
            "accepted": self.accepted,
            "decision": "accepted" if self.accepted else "rejected",
            "now": self.now,
            "artifact": {"sha256": self.artifact_sha256, "size": self.artifact_size},
            "package": self.package,
            "version": self.version,
            "steps": [s.to_dict() for s in self.steps],
            "failures": [f.to_dict() for f in self.failures],
            "rebuilders": {
                "threshold": self.threshold,
                "distinct": len(self.counted),
                "counted": list(self.counted),
            },
            "attestations": [a.to_dict() for a in self.attestations],
            "checkpoint": None if self.checkpoint is None else self.checkpoint.to_dict(self.now),
            "needs_since_size": self.needs_since_size,
            "needs_consistency": (
                None if self.needs_consistency is None else self.needs_consistency.to_dict()
            ),
            "fork": None if self.fork is None else self.fork.to_dict(),
            "downgrade_from": None if self.install is None else self.install.downgrade_from,
        }


# -- the run ------------------------------------------------------------------


def _hint(key: VerifierKey) -> str:
    return key_hint(key)


def _source_id(source: Source) -> str:
    if isinstance(source, GitSource):
        return f"commit {source.commit}"
    return f"sdist sha256 {source.sha256}"


@dataclass
class _Step:
    """A step being evaluated: collects failures and notes."""

    number: int
    failures: list[Failure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: str = ""
    skipped: str | None = None

    def fail(self, code: str, reason: str) -> None:
        self.failures.append(Failure(self.number, code, reason))

    def result(self) -> StepResult:
        if self.skipped is not None:
            return StepResult(self.number, "skipped", self.skipped)
        status: StepStatus = "failed" if self.failures else "passed"
        summary = self.summary or (
            "; ".join(f.reason for f in self.failures) if self.failures else ""
        )
        return StepResult(self.number, status, summary, tuple(self.failures), tuple(self.notes))


@dataclass(frozen=True)
class _Judgement:
    """What step 3 made of one attestation, before its position is attached."""

    status: Literal["counted", "dissent", "ignored"]
    code: str
    reason: str
    signers: tuple[VerifierKey, ...] = ()
    verdict: str | None = None


class _Gate:
    """One evaluation of :func:`decide`. Holds what each step learned."""

    def __init__(
        self,
        artifact: bytes | bytearray | memoryview,
        bundle_bytes: bytes,
        policy: UpdatePolicy,
        state: TrustedState,
        *,
        now: int,
        strict: bool,
        allow_downgrade: bool,
        consistency: tuple[ConsistencyProof, ...],
    ) -> None:
        self.artifact_sha256 = hashlib.sha256(artifact).hexdigest()  # no copy of the bytes
        self.artifact_size = len(artifact)
        self.bundle_bytes = bundle_bytes
        self.policy = policy
        self.state = state
        self.now = now
        self.strict = strict
        self.allow_downgrade = allow_downgrade
        self.supplied = consistency
        self.steps = {n: _Step(n) for n in STEP_NAMES}
        self.bundle: Bundle | None = None
        self.release: Statement | None = None
        self.release_predicate: ReleasePredicate | None = None
        self.release_envelope: Envelope | None = None
        self.package: PackagePolicy | None = None
        self.reports: list[AttestationReport] = []
        # public key -> positions of its accepted attestations (step 3)
        self.counted: dict[bytes, tuple[VerifierKey, list[int]]] = {}
        self.included_keys: list[VerifierKey] = []
        self.checkpoint: Checkpoint | None = None
        self.checkpoint_info: CheckpointInfo | None = None
        self.log_signed = False
        self.fork: ForkEvidence | None = None
        self.needs: ConsistencyNeed | None = None
        self.from_caller = False
        self.install: InstalledRelease | None = None

    # Step 1 -------------------------------------------------------------------

    def step1_bundle(self) -> bool:
        """False when nothing else can be evaluated (the bundle did not parse)."""
        s = self.steps[1]
        data = self.bundle_bytes
        cap = max((p.max_bundle_bytes for p in self.policy.packages), default=MAX_BUNDLE_SIZE)
        try:
            self.bundle = _parse_bundle(data, limit=cap)
        except FormatError as e:
            code = e.code if isinstance(e, BundleFormatError) else "bundle-malformed"
            s.fail(code, f"bundle does not parse: {e}")
            return False
        try:
            env = Envelope.parse(self.bundle.release.envelope)
            if env.payload_type != PAYLOAD_TYPE_INTOTO:
                raise FormatError(f"payload type {env.payload_type!r} is not in-toto")
            # The statement is parsed before its signature is checked because
            # its package selects the maintainer keys (step 2). The parser is
            # strict and bounded, and nothing from it is trusted unless step 2
            # passes.
            statement = Statement.parse(env.payload)
            if not isinstance(statement.predicate, ReleasePredicate):
                raise FormatError(f"it is a {statement.predicate_type} statement")
        except FormatError as e:
            s.fail("release-malformed", f"the release envelope is not a release statement: {e}")
            return True
        self.release_envelope, self.release = env, statement
        pred = self.release_predicate = statement.predicate
        subject = statement.subject_for(self.artifact_sha256)
        if subject is None:
            names = ", ".join(f"{x.name} ({x.sha256[:16]}…)" for x in statement.subjects)
            s.fail(
                "subject-mismatch",
                f"the artifact's sha256 {self.artifact_sha256} is not a subject of the release "
                f"{pred.package} {pred.version} (it names {names})",
            )
        self.package = self.policy.package(pred.package)
        if self.package is None:
            s.fail("unknown-package", f"package {pred.package!r} is not in the policy")
            return True
        if self.artifact_size > self.package.max_artifact_bytes:
            s.fail(
                "artifact-too-large",
                f"artifact is {self.artifact_size} bytes, over {pred.package}'s "
                f"max_artifact_bytes {self.package.max_artifact_bytes}",
            )
        if len(data) > self.package.max_bundle_bytes:
            s.fail(
                "bundle-too-large",
                f"bundle is {len(data)} bytes, over {pred.package}'s max_bundle_bytes "
                f"{self.package.max_bundle_bytes}",
            )
        s.summary = (
            f"release {pred.package} {pred.version}, subject "
            f"{subject.name if subject else '(none)'}, {len(self.bundle.attestations)} "
            "attestation(s)"
        )
        return True

    # Step 2 -------------------------------------------------------------------

    def step2_maintainer(self) -> None:
        s = self.steps[2]
        env, pkg = self.release_envelope, self.package
        if env is None or pkg is None:
            s.skipped = "no release statement of a package in the policy (step 1)"
            return
        try:
            result = check_signatures(env, pkg.maintainers, 1)
        except SignatureError as e:
            s.fail("maintainer-signature-invalid", f"release envelope: {e}")
            return
        if result.signed:
            s.summary = "signed by " + ", ".join(_hint(k) for k in result.signed)
            return
        # Say who did sign, if it is someone the policy knows for another package.
        others: list[str] = []
        try:
            other = check_signatures(env, self.policy.all_maintainers(), 1)
            for k in other.signed:
                pkgs = ", ".join(self.policy.maintained_by(k))
                others.append(f"{_hint(k)} (a maintainer of {pkgs})")
        except (SignatureError, KeyFormatError):
            pass
        if others:
            s.fail(
                "maintainer-other-package",
                f"the release is signed by {'; '.join(others)}, not by a maintainer of {pkg.name}",
            )
        else:
            hints = ", ".join(sig.keyid or "(no keyid)" for sig in env.signatures)
            s.fail(
                "maintainer-untrusted",
                f"no maintainer key of {pkg.name} signed the release (signatures: {hints})",
            )

    # Step 3 -------------------------------------------------------------------

    def _judge(self, position: int, logged: LoggedEnvelope) -> AttestationReport:
        """Classify one attestation; record counted keys."""
        read = self._read_attestation(logged.envelope)
        if isinstance(read, _Judgement):
            j = read
        else:
            signers, statement = read
            j = self._compare_with_release(statement, signers)
            if j.code == "counted":
                j = self._count(position, signers, j)
        return AttestationReport(
            position,
            logged.proof.index,
            j.status,
            j.code,
            j.reason,
            tuple(_hint(k) for k in j.signers),
            j.verdict,
        )

    def _read_attestation(
        self, envelope: bytes
    ) -> tuple[tuple[VerifierKey, ...], Statement] | _Judgement:
        """The trusted rebuilders who signed ``envelope`` and its statement, or why not."""
        pkg = self.package
        assert pkg is not None  # step 3 runs only for a package in the policy
        try:
            env = Envelope.parse(envelope)
        except FormatError as e:
            return _Judgement("ignored", "malformed", f"not a DSSE envelope: {e}")
        if env.payload_type != PAYLOAD_TYPE_INTOTO:
            return _Judgement("ignored", "malformed", f"payload type {env.payload_type!r}")
        try:
            result = check_signatures(env, pkg.rebuilders, 1)
        except SignatureError as e:
            return _Judgement("ignored", "invalid-signature", str(e))
        if not result.signed:
            hints = ", ".join(sig.keyid or "(no keyid)" for sig in env.signatures)
            return _Judgement(
                "ignored",
                "untrusted-key",
                f"signed by no trusted rebuilder of {pkg.name} (signatures: {hints})",
            )
        try:
            return result.signed, Statement.parse(env.payload)
        except FormatError as e:
            return _Judgement("ignored", "malformed", f"statement: {e}", result.signed)

    def _compare_with_release(
        self, statement: Statement, signers: tuple[VerifierKey, ...]
    ) -> _Judgement:
        """Does this signed statement attest an accepted verdict for the release's build?"""
        pkg, pred = self.package, self.release_predicate
        assert pkg is not None and pred is not None  # the caller checked
        att = statement.predicate
        if not isinstance(att, RebuildPredicate):
            return _Judgement("ignored", "not-rebuild", "not a rebuild attestation", signers)
        subject = statement.subjects[0]
        if subject.sha256 != self.artifact_sha256:
            reason = f"attests another artifact (sha256 {subject.sha256})"
            return _Judgement("ignored", "other-digest", reason, signers, att.verdict)
        differences = []
        if _source_id(att.source) != _source_id(pred.source):
            differences.append(
                f"built {_source_id(att.source)}, the release names {_source_id(pred.source)}"
            )
        if att.recipe_sha256 != pred.recipe_sha256:
            differences.append(
                f"used recipe sha256 {att.recipe_sha256}, the release names {pred.recipe_sha256}"
            )
        if att.verdict in DISSENTING_VERDICTS:
            extra = f" ({'; '.join(differences)})" if differences else ""
            reason = (
                f"trusted rebuilder {', '.join(_hint(k) for k in signers)} attests "
                f"{att.verdict} for these bytes{extra}"
            )
            return _Judgement("dissent", att.verdict, reason, signers, att.verdict)
        if differences:
            code = "other-commit" if differences[0].startswith("built") else "other-recipe"
            return _Judgement("ignored", code, differences[0], signers, att.verdict)
        if att.verdict not in pkg.verdicts:
            reason = (
                f"verdict {att.verdict!r} is not accepted for {pkg.name} "
                f"(accepted: {', '.join(pkg.verdicts)})"
            )
            return _Judgement("ignored", "verdict-not-accepted", reason, signers, att.verdict)
        return _Judgement("counted", "counted", att.verdict, signers, att.verdict)

    def _count(
        self, position: int, signers: tuple[VerifierKey, ...], accepted: _Judgement
    ) -> _Judgement:
        """Count an accepted attestation's signers; each public key counts once."""
        new = [k for k in signers if k.public_key not in self.counted]
        for k in signers:
            self.counted.setdefault(k.public_key, (k, []))[1].append(position)
        if new:
            return accepted
        reason = f"{', '.join(_hint(k) for k in signers)} already counted (one key counts once)"
        return _Judgement("ignored", "duplicate-key", reason, signers, accepted.verdict)

    def step3_rebuilders(self) -> None:
        s = self.steps[3]
        pkg, bundle = self.package, self.bundle
        if pkg is None or bundle is None or self.release_predicate is None:
            s.skipped = "no release statement of a package in the policy (step 1)"
            return
        self.reports = [self._judge(i, a) for i, a in enumerate(bundle.attestations)]
        distinct = len(self.counted)
        names = ", ".join(_hint(k) for k, _ in self.counted.values()) or "none"
        if distinct < pkg.threshold:
            by_code: dict[str, list[str]] = {}
            for r in self.reports:
                if r.status == "ignored":
                    by_code.setdefault(r.code, []).append(str(r.position))
            ignored = ", ".join(
                f"{code} (attestations {', '.join(ps)})" for code, ps in by_code.items()
            )
            s.fail(
                "threshold-not-met",
                f"{distinct} of the required {pkg.threshold} distinct trusted rebuilders attest "
                f"{' or '.join(pkg.verdicts)} for these bytes, source and recipe "
                f"(counted: {names})" + (f"; ignored: {ignored}" if ignored else ""),
            )
        for r in self.reports:
            if r.status == "dissent":
                if self.strict:
                    s.fail("dissent", f"attestations[{r.position}]: {r.reason} (--strict)")
                else:
                    s.notes.append(f"attestations[{r.position}]: {r.reason}")
        s.summary = f"{distinct} distinct trusted rebuilders, {pkg.threshold} required ({names})"

    # Step 4 -------------------------------------------------------------------

    def _included(self, logged: LoggedEnvelope, what: str, s: _Step, *, report: bool) -> bool:
        bundle = self.bundle
        assert bundle is not None
        # Same tree: the proof's checkpoint body (origin, size, root) must be
        # the bundle's. Its signature lines may differ (a re-cosigned note);
        # step 5 judges the bundle's note.
        if logged.proof.checkpoint != bundle.checkpoint and (
            _body_text(logged.proof.checkpoint) != _body_text(bundle.checkpoint)
        ):
            if report:
                try:
                    other = logged.proof.checkpoint_body()
                    which = f"size {other.size}, origin {other.origin!r}"
                except FormatError:
                    which = "unparsable"
                s.fail(
                    "proof-other-checkpoint",
                    f"{what}'s proof is against another checkpoint ({which}), not the bundle's",
                )
            return False
        cp = bundle.checkpoint_body()
        try:
            if logged.proof.index >= cp.size:
                raise ProofError(f"index {logged.proof.index} is outside the tree")
            verify_inclusion(
                leaf_hash(logged.envelope),
                logged.proof.index,
                cp.size,
                logged.proof.proof,
                cp.root_hash,
            )
        except (ProofError, FormatError) as e:
            if report:
                s.fail(
                    "not-included",
                    f"{what} is not in the log at index {logged.proof.index} of the bundle's "
                    f"checkpoint (size {cp.size}): {e}",
                )
            return False
        return True

    def step4_inclusion(self) -> None:
        s = self.steps[4]
        bundle = self.bundle
        if bundle is None:
            s.skipped = "no bundle (step 1)"
            return
        checked = []
        if self._included(bundle.release, "the release envelope", s, report=True):
            checked.append("the release")
        for key, positions in self.counted.values():
            results = {
                p: self._included(bundle.attestations[p], "", s, report=False) for p in positions
            }
            for p, ok in results.items():
                self.reports[p] = _with_inclusion(self.reports[p], ok)
            if any(results.values()):
                self.included_keys.append(key)
                checked.append(_hint(key))
                continue
            for p in positions:  # none of this key's attestations is in the log: say why
                self._included(
                    bundle.attestations[p], f"attestations[{p}] by {_hint(key)}", s, report=True
                )
        if self.package is not None and self.counted:
            missing = len(self.counted) - len(self.included_keys)
            if missing:
                s.notes.append(f"{missing} counted rebuilder(s) have no attestation in the log")
        s.summary = f"in the log: {', '.join(checked) or 'nothing'}"

    # Step 5 -------------------------------------------------------------------

    def step5_checkpoint(self) -> None:
        s = self.steps[5]
        bundle = self.bundle
        if bundle is None:
            s.skipped = "no bundle (step 1)"
            return
        tlog = self.policy.tlog
        cp = self.checkpoint = bundle.checkpoint_body()
        log_keys = tlog.log_keys(cp.origin)
        if not log_keys:
            known = ", ".join(sorted({lg.origin for lg in tlog.logs}))
            s.fail(
                "log-untrusted",
                f"the checkpoint is for log {cp.origin!r}, which is not in the tlog policy "
                f"(logs: {known})",
            )
        else:
            try:
                open_note(bundle.checkpoint, log_keys)
                self.log_signed = True
            except (SignatureError, KeyFormatError) as e:
                s.fail("log-signature", f"the checkpoint is not signed by the log's key: {e}")
        dated = DatedCosignatures((), ())
        try:
            # Each future-dated cosignature is reported by witness name (and
            # not counted) rather than refusing the note at the first one.
            dated = date_cosignatures(
                bundle.checkpoint, tlog.witness_keys(), now=self.now + MAX_CLOCK_SKEW
            )
        except (SignatureError, FormatError) as e:
            s.fail("cosignature-invalid", f"a trusted witness's cosignature is invalid: {e}")
        names = {w.key: w.name for w in tlog.witnesses}
        for c in dated.future:
            s.fail(
                "cosignature-future",
                f"witness {names[c.key]} cosigned at {c.timestamp}, {c.timestamp - self.now} s "
                f"after now ({self.now}); at most {MAX_CLOCK_SKEW} s of clock skew is allowed",
            )
        valid = dated.current
        quorum = tlog.evaluate(c.key for c in valid)
        if not quorum.satisfied:
            policy_keys = {(k.name, k.key_hash) for k in (*tlog.witness_keys(), *tlog.log_keys())}
            _, sigs = split_note(bundle.checkpoint)
            unknown = sum(1 for sig in sigs if (sig.name, sig.key_hash) not in policy_keys)
            got = ", ".join(quorum.witnesses) or "no trusted witness"
            extra = f"; {unknown} signature(s) by keys not in the policy ignored" if unknown else ""
            s.fail(
                "witness-quorum",
                f"witness quorum {tlog.quorum!r} not met: cosigned by {got}{extra}",
            )
        newest = max((c.timestamp for c in valid), default=None)
        if newest is None:
            s.fail("checkpoint-undated", "no trusted witness cosignature dates the checkpoint")
        elif self.now - newest >= self.policy.max_checkpoint_age:
            s.fail(
                "checkpoint-stale",
                f"the newest trusted cosignature is {self.now - newest} s old, not younger than "
                f"max_checkpoint_age {self.policy.max_checkpoint_age} s (a frozen or replayed "
                "view of the log)",
            )
        self.checkpoint_info = CheckpointInfo(
            cp.origin,
            cp.size,
            cp.root_hash,
            self.log_signed,
            quorum.witnesses,
            quorum.quorum,
            quorum.satisfied,
            newest,
        )
        s.summary = (
            f"{cp.origin} size {cp.size}, cosigned by {', '.join(quorum.witnesses) or 'nobody'}"
            + ("" if newest is None else f", newest cosignature {self.now - newest} s old")
        )

    # Step 6 -------------------------------------------------------------------

    def step6_consistency(self) -> None:
        s = self.steps[6]
        bundle, cp = self.bundle, self.checkpoint
        if bundle is None or cp is None:
            s.skipped = "no bundle (step 1)"
            return
        if not self.log_signed:
            s.skipped = "the checkpoint is not signed by a trusted log (step 5)"
            return
        previous = self.state.checkpoint(cp.origin)
        if previous is None:
            s.summary = f"first checkpoint accepted from {cp.origin} (nothing stored to compare)"
            return
        old = parse_checkpoint(split_note(previous)[0])
        if cp.size < old.size:
            s.fail(
                "rollback",
                f"the checkpoint has size {cp.size}, smaller than size {old.size} this updater "
                "already accepted (a rollback to an older view of the log)",
            )
            return
        if cp.size == old.size:
            if cp.root_hash != old.root_hash:
                self._fork(s, previous, f"two different roots signed for size {cp.size}")
                return
            s.summary = f"same tree as accepted before (size {cp.size})"
            return
        # The bundle's proof first, then the caller's (from the log's tiles).
        # Any one that verifies proves the log only grew: a proof cannot
        # verify for two trees that disagree. None verifying is a fork.
        bundled = bundle.consistency_from(old.size)
        candidates = [(p, False) for p in (bundled,) if p is not None]
        candidates += [(p, True) for p in self.supplied if p.old_size == old.size]
        if not candidates:
            self.needs = ConsistencyNeed(cp.origin, old.size, cp.size, cp.root_hash)
            s.fail(
                "consistency-proof-missing",
                f"the bundle has no consistency proof from size {old.size} (accepted before) to "
                f"{cp.size}: give the updater a tile source of the log (--log URL, or logs = "
                f"[...] in the policy) to compute it from, or rebuild the bundle with "
                f"rebuild bundle --since-size {old.size}",
            )
            return
        errors = []
        for proof, from_caller in candidates:
            try:
                verify_consistency(
                    old.size, cp.size, list(proof.hashes), old.root_hash, cp.root_hash
                )
            except (ProofError, FormatError) as e:
                errors.append(f"the {'caller' if from_caller else 'bundle'}'s proof: {e}")
                continue
            self.from_caller = from_caller
            s.summary = f"extends size {old.size} accepted before to {cp.size}"
            if from_caller:
                s.notes.append(
                    "consistency proof computed by the updater from the log's tiles "
                    "(the bundle did not carry one from this size)"
                )
            return
        self._fork(
            s,
            previous,
            f"checkpoint size {cp.size} is not consistent with size {old.size} accepted "
            f"before ({'; '.join(errors)})",
        )

    def _fork(self, s: _Step, previous: str, reason: str) -> None:
        assert self.bundle is not None and self.checkpoint is not None
        self.fork = ForkEvidence(self.checkpoint.origin, previous, self.bundle.checkpoint, reason)
        s.fail("fork", f"log fork: {reason}; both checkpoints are kept as evidence")

    # Step 7 -------------------------------------------------------------------

    def step7_version(self) -> None:
        s = self.steps[7]
        pred, pkg = self.release_predicate, self.package
        if pred is None or pkg is None:
            s.skipped = "no release statement of a package in the policy (step 1)"
            return
        try:
            new = parse_version(pred.version)
        except FormatError as e:
            s.fail("version-unorderable", str(e))
            return
        installed = self.state.installed_release(pkg.name)
        downgrade_from: str | None = None
        if installed is None:
            s.summary = f"{pred.version} (nothing installed before)"
        else:
            try:
                old = parse_version(installed.version)
            except FormatError as e:
                s.fail("version-unorderable", f"installed version: {e}")
                return
            if new > old:
                s.summary = f"{pred.version} is newer than installed {installed.version}"
            elif new == old and installed.sha256 == self.artifact_sha256:
                s.summary = f"{pred.version} is already installed (same bytes)"
            elif self.allow_downgrade:
                downgrade_from = installed.version
                s.summary = f"{pred.version} replaces {installed.version}"
                s.notes.append(
                    f"downgrade from {installed.version} to {pred.version} allowed by "
                    "--allow-downgrade (recorded in the state)"
                )
            elif new == old:
                s.fail(
                    "version-reused",
                    f"version {pred.version} is installed with sha256 {installed.sha256}; "
                    "these are other bytes under the same version",
                )
                return
            else:
                s.fail(
                    "downgrade",
                    f"version {pred.version} is older than the installed {installed.version} "
                    "(use --allow-downgrade to override)",
                )
                return
        self.install = InstalledRelease(
            pkg.name, pred.version, self.artifact_sha256, self.now, downgrade_from
        )

    # -------------------------------------------------------------------------

    def run(self) -> Decision:
        if self.step1_bundle():
            self.step2_maintainer()
            self.step3_rebuilders()
            self.step4_inclusion()
            self.step5_checkpoint()
            self.step6_consistency()
            self.step7_version()
        else:
            for n in range(2, 8):
                self.steps[n].skipped = "the bundle could not be read (step 1)"
        steps = tuple(self.steps[n].result() for n in STEP_NAMES)
        accepted = all(st.status == "passed" for st in steps)
        pred = self.release_predicate
        return Decision(
            accepted=accepted,
            now=self.now,
            artifact_sha256=self.artifact_sha256,
            artifact_size=self.artifact_size,
            steps=steps,
            package=pred.package if pred else None,
            version=pred.version if pred else None,
            threshold=self.package.threshold if self.package else None,
            counted=tuple(_hint(k) for k in self.included_keys),
            attestations=tuple(self.reports),
            checkpoint=self.checkpoint_info,
            new_checkpoint=self.bundle.checkpoint if accepted and self.bundle else None,
            install=self.install if accepted else None,
            fork=self.fork,
            needs_consistency=self.needs,
            consistency_from_caller=self.from_caller and accepted,
        )


def _body_text(note: str) -> str | None:
    try:
        return split_note(note)[0]
    except FormatError:
        return None


def _with_inclusion(r: AttestationReport, included: bool) -> AttestationReport:
    return AttestationReport(
        r.position, r.log_index, r.status, r.code, r.reason, r.signers, r.verdict, included
    )


def decide(
    artifact: bytes | bytearray | memoryview,
    bundle: bytes,
    policy: UpdatePolicy,
    state: TrustedState,
    *,
    now: int,
    strict: bool = False,
    allow_downgrade: bool = False,
    consistency: Sequence[ConsistencyProof] = (),
) -> Decision:
    """Decide whether ``artifact`` may be installed, from bytes alone (steps 1-7 above).

    ``now`` (POSIX seconds) is the one reference time for every freshness
    and clock check; it is required so that no check silently reads a clock.
    ``consistency`` are proofs from outside the bundle (step 6), e.g. what a
    caller computed from the log's tiles for ``Decision.needs_consistency``;
    they are trusted exactly as little as the bundle's own. A caller should
    hand in only a proof it checked against the bundle's root with the
    tiles' own old root (as ``rebuild`` does): a proof that fails here is
    taken for a fork.
    Returns a Decision (never raises for anything wrong with the artifact or
    the bundle: that is a rejection with its reasons). Raises TypeError or
    ValueError only for a programming error (``now`` not an int, a negative
    time). The caller persists ``Decision.apply(state, ...)`` only on
    acceptance and keeps ``Decision.fork`` as evidence.
    """
    if type(now) is not int or now < 0:
        raise ValueError("now must be a non-negative integer (POSIX seconds)")
    if not isinstance(artifact, bytes | bytearray | memoryview):
        raise TypeError("artifact must be bytes")
    if not isinstance(bundle, bytes):
        raise TypeError("bundle must be bytes")
    if not isinstance(policy, UpdatePolicy) or not isinstance(state, TrustedState):
        raise TypeError("policy must be an UpdatePolicy and state a TrustedState")
    supplied = tuple(consistency)
    if not all(isinstance(p, ConsistencyProof) for p in supplied):
        raise TypeError("consistency must be a sequence of ConsistencyProof")
    return _Gate(
        artifact,
        bundle,
        policy,
        state,
        now=now,
        strict=strict,
        allow_downgrade=allow_downgrade,
        consistency=supplied,
    ).run()


__all__ = [
    "MAX_CLOCK_SKEW",
    "STEP_NAMES",
    "AttestationReport",
    "CheckpointInfo",
    "ConsistencyNeed",
    "Decision",
    "Failure",
    "ForkEvidence",
    "StepResult",
    "decide",
]
