"""in-toto Statement v1 with rebuild's two predicate types, parsed strictly.

A statement binds subjects (artifact name + sha256) to a predicate. rebuild
defines exactly two predicates, each identified by a stable URI declared once
here (and documented in docs/formats.md):

* :data:`RELEASE_PREDICATE_TYPE`: the maintainer's release statement
  (:class:`ReleasePredicate`): package, version, source, the recipe text and
  its digest. Subjects are the released artifacts.
* :data:`REBUILD_PREDICATE_TYPE`: a rebuilder's attestation
  (:class:`RebuildPredicate`): verdict, rebuilt digest, source, recipe
  digest, environment, tool, times, diff report digest, causes. The single
  subject is the upstream artifact.

Parsing is strict and bounded: exact field sets (no unknown fields, no
nulls), lowercase hex digests of the right length, short control-free text,
bounded counts. Every value is a frozen dataclass validated on construction,
so an invalid statement cannot be built in code either. This module decides
whether a payload *is* a well-formed statement; whether it is *trusted* is
:mod:`verify.dsse`'s job (:func:`verify_statement` combines the two). It never
reads files or fetches anything.
"""

from __future__ import annotations

import calendar
import datetime
import hashlib
import re
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal, TypeAlias, get_args

from verify.dsse import (
    MAX_ENVELOPE_SIZE,
    PAYLOAD_TYPE_INTOTO,
    VerificationResult,
    dump_json,
    load_json,
    sign_envelope,
    verify_envelope,
)
from verify.errors import EnvelopeFormatError
from verify.keys import SigningKey, VerifierKey
from verify.parsing import unsafe_character

STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"

ReleasePredicateType: TypeAlias = Literal["https://rebuild-tools.github.io/predicates/release/v1"]
RebuildPredicateType: TypeAlias = Literal["https://rebuild-tools.github.io/predicates/rebuild/v1"]
RELEASE_PREDICATE_TYPE: Final[ReleasePredicateType] = get_args(ReleasePredicateType)[0]
REBUILD_PREDICATE_TYPE: Final[RebuildPredicateType] = get_args(RebuildPredicateType)[0]

Verdict: TypeAlias = Literal["reproduced", "equivalent", "mismatch", "failed", "error"]
VERDICTS: Final[tuple[Verdict, ...]] = get_args(Verdict)

# The normalizations an ``equivalent`` verdict may rest on (docs/formats.md):
# each leaves every byte that can change what an installer writes or runs.
NormalizationRule: TypeAlias = Literal[
    "zip-entry-times",  # DOS time/date -> 1980-01-01 00:00; time extra fields dropped
    "zip-entry-order",  # records and data ordered by the entry name's bytes
    "zip-permission-bits",  # Unix rw bits -> 0644, or 0755 when any x bit is set
]
NORMALIZATION_RULES: Final[tuple[NormalizationRule, ...]] = get_args(NormalizationRule)

# A statement travels base64-encoded inside a <= 64 KiB envelope.
MAX_STATEMENT_SIZE: Final = MAX_ENVELOPE_SIZE * 3 // 4
MAX_SUBJECTS: Final = 256
MAX_TEXT: Final = 256
MAX_URL: Final = 2048
MAX_RECIPE_TEXT: Final = 16 * 1024
MAX_CAUSES: Final = 32
MAX_CAUSE_TEXT: Final = 200
MAX_TIME: Final = 253402300799  # 9999-12-31T23:59:59Z

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX40 = re.compile(r"[0-9a-f]{40}")
_RFC3339_UTC = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)Z")
# The line breaks and tabs multi-line text (the recipe) may hold.
_LAYOUT = str.maketrans("", "", "\t\n\r")
# re's \s is exactly str.isspace().
_WHITE_SPACE = re.compile(r"\s")


# -- value checks -------------------------------------------------------------


def _fail(what: str, problem: str) -> EnvelopeFormatError:
    return EnvelopeFormatError(f"{what}: {problem}")


def _check_text(value: object, what: str, limit: int = MAX_TEXT, *, multiline: bool = False) -> str:
    if not isinstance(value, str):
        raise _fail(what, "must be a string")
    if not value:
        raise _fail(what, "must not be empty")
    if len(value) > limit:
        raise _fail(what, f"longer than {limit} characters")
    bad = unsafe_character(value.translate(_LAYOUT) if multiline else value)
    if bad is not None:
        # C0/C1 controls, bidi overrides, zero-width and line-separator
        # characters would make the text read differently from what it is.
        raise _fail(what, f"contains a control character or an invisible one (U+{ord(bad):04X})")
    return value


def _check_token(value: object, what: str, limit: int = MAX_TEXT) -> str:
    """Text without white space: URLs, tags, versions, names."""
    text = _check_text(value, what, limit)
    if _WHITE_SPACE.search(text):
        raise _fail(what, "must not contain white space")
    return text


def _check_sha256(value: object, what: str) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise _fail(what, "must be 64 lowercase hex digits (sha256)")
    return value


def _check_commit(value: object, what: str) -> str:
    if not isinstance(value, str) or not _HEX40.fullmatch(value):
        raise _fail(what, "must be a full 40-hex-digit lowercase commit id")
    return value


def _check_time(value: object, what: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_TIME:
        raise _fail(what, "must be a Unix time between 1970 and 9999")
    return value


def format_time(t: int) -> str:
    """Unix seconds as RFC 3339 UTC, e.g. ``2026-11-23T09:00:00Z``.

    Raises OverflowError or ValueError for a time the platform cannot convert.
    """
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def parse_time(value: object, what: str) -> int:
    """RFC 3339 UTC with second precision and a ``Z`` suffix, nothing else.

    Raises EnvelopeFormatError for any other spelling, an impossible date or a time
    outside 1970..9999.
    """
    if not isinstance(value, str):
        raise _fail(what, "must be an RFC 3339 UTC time string")
    m = _RFC3339_UTC.fullmatch(value)
    if not m:
        raise _fail(what, "must look like 2026-01-31T12:00:00Z")
    try:
        # datetime validates the calendar (no 31 February, no second 60).
        year, month, day, hour, minute, second = (int(g) for g in m.groups())
        stamp = datetime.datetime(year, month, day, hour, minute, second)
        t = calendar.timegm(stamp.timetuple())
    except (ValueError, OverflowError):
        raise _fail(what, "is not a valid date and time") from None
    if format_time(t) != value:  # one spelling per instant (ASCII digits only)
        raise _fail(what, "is not a valid date and time")
    return _check_time(t, what)


def _fields(
    doc: object, what: str, required: Iterable[str], optional: Iterable[str] = ()
) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise _fail(what, "must be a JSON object")
    req = set(required)
    allowed = req | set(optional)
    missing = sorted(req - doc.keys())
    if missing:
        raise _fail(what, f"missing field {missing[0]!r}")
    extra = sorted(doc.keys() - allowed)
    if extra:
        raise _fail(what, f"unknown field {extra[0]!r}")
    for k, v in doc.items():
        if v is None:
            raise _fail(what, f"field {k!r} is null; omit it instead")
    return doc


def _digest_set(doc: object, what: str) -> str:
    """An in-toto DigestSet restricted to exactly ``{"sha256": hex}``."""
    d = _fields(doc, what, ["sha256"])
    return _check_sha256(d["sha256"], f"{what}.sha256")


def _digest_dict(sha256: str) -> dict[str, str]:
    return {"sha256": sha256}


# -- building blocks ------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """An artifact a statement is about."""

    name: str
    """File name of the artifact (no directory), e.g. ``app-1.0.0.phar``."""
    sha256: str
    """SHA-256 of the artifact's bytes, 64 lowercase hex digits."""
    download_location: str | None = None
    """Where the artifact can be downloaded (in-toto ResourceDescriptor
    ``downloadLocation``), an ``https://`` or ``http://`` URL. A hint only: the
    bytes fetched from it must still have ``sha256``."""

    def __post_init__(self) -> None:
        _check_text(self.name, "subject name", MAX_TEXT)
        if "/" in self.name or self.name in (".", ".."):
            raise _fail("subject name", "must be a plain file name")
        if not unicodedata.is_normalized("NFC", self.name):
            # One spelling per name: "é" precomposed and "e" + U+0301 look alike.
            raise _fail("subject name", "must be in Unicode normalization form NFC")
        _check_sha256(self.sha256, f"subject {self.name} digest")
        if self.download_location is not None:
            url = _check_token(self.download_location, f"subject {self.name} downloadLocation")
            if not url.startswith(("https://", "http://")):
                raise _fail(f"subject {self.name} downloadLocation", "must be an http(s) URL")

    def to_dict(self) -> dict[str, Any]:
        """The in-toto ResourceDescriptor of this subject. Never raises."""
        doc: dict[str, Any] = {"name": self.name, "digest": _digest_dict(self.sha256)}
        if self.download_location is not None:
            doc["downloadLocation"] = self.download_location
        return doc

    @classmethod
    def from_dict(cls, doc: object, what: str = "subject") -> Subject:
        """Parse a subject object strictly. Raises EnvelopeFormatError."""
        d = _fields(doc, what, ["name", "digest"], ["downloadLocation"])
        name = _check_text(d["name"], f"{what}.name")
        url = d.get("downloadLocation")
        if url is not None:
            url = _check_token(url, f"{what}.downloadLocation")
        return cls(name, _digest_set(d["digest"], f"{what}.digest"), url)


@dataclass(frozen=True)
class GitSource:
    """Source taken from a git repository at a tag, pinned to its full commit."""

    url: str
    """Where to clone from (any URL or path git accepts)."""
    tag: str
    """The release tag, e.g. ``v1.0.0``; informative, the commit is what counts."""
    commit: str
    """The full 40-hex commit the tag must point at."""

    def __post_init__(self) -> None:
        _check_token(self.url, "source.git", MAX_URL)
        _check_token(self.tag, "source.tag")
        _check_commit(self.commit, "source.commit")

    def to_dict(self) -> dict[str, Any]:
        """The ``source`` object of a statement. Never raises."""
        return {"git": self.url, "tag": self.tag, "commit": self.commit}


@dataclass(frozen=True)
class SdistSource:
    """Source taken from a source archive pinned by its sha256."""

    url: str
    """Where to download the archive from."""
    sha256: str
    """SHA-256 of the archive's bytes."""

    def __post_init__(self) -> None:
        _check_token(self.url, "source.sdist", MAX_URL)
        _check_sha256(self.sha256, "source.sha256")

    def to_dict(self) -> dict[str, Any]:
        """The ``source`` object of a statement. Never raises."""
        return {"sdist": self.url, "sha256": self.sha256}


Source: TypeAlias = GitSource | SdistSource


def source_from_dict(doc: object, what: str = "source") -> Source:
    """``{"git", "tag", "commit"}`` or ``{"sdist", "sha256"}``, nothing else.

    Raises EnvelopeFormatError for anything else.
    """
    if isinstance(doc, dict) and "git" in doc:
        d = _fields(doc, what, ["git", "tag", "commit"])
        return GitSource(d["git"], d["tag"], d["commit"])
    if isinstance(doc, dict) and "sdist" in doc:
        d = _fields(doc, what, ["sdist", "sha256"])
        return SdistSource(d["sdist"], d["sha256"])
    raise _fail(what, "must have either a 'git' or an 'sdist' field")


@dataclass(frozen=True)
class EnvironmentRef:
    """A pinned build environment: its name and the digest of its lock file."""

    name: str
    """Environment name, e.g. ``debian-bookworm-php``."""
    lock_sha256: str
    """SHA-256 of the environment's lock file bytes."""

    def __post_init__(self) -> None:
        _check_token(self.name, "environment.name")
        _check_sha256(self.lock_sha256, "environment.lock digest")

    def to_dict(self) -> dict[str, Any]:
        """The ``environment`` object of a rebuild predicate. Never raises."""
        return {"name": self.name, "lockDigest": _digest_dict(self.lock_sha256)}

    @classmethod
    def from_dict(cls, doc: object, what: str = "environment") -> EnvironmentRef:
        """Parse an ``environment`` object strictly. Raises EnvelopeFormatError."""
        d = _fields(doc, what, ["name", "lockDigest"])
        return cls(d["name"], _digest_set(d["lockDigest"], f"{what}.lockDigest"))


@dataclass(frozen=True)
class Normalization:
    """What an ``equivalent`` verdict rests on: the rules, and both normalized digests."""

    rules: tuple[NormalizationRule, ...]
    """The normalizations applied to both artifacts, in :data:`NORMALIZATION_RULES` order."""
    subject_sha256: str
    """SHA-256 of the subject's normalized form."""
    rebuilt_sha256: str
    """SHA-256 of the rebuilt artifact's normalized form; equal to ``subject_sha256``."""

    def __post_init__(self) -> None:
        if not isinstance(self.rules, tuple) or not self.rules:
            raise _fail("predicate.normalization.rules", "must list at least one rule")
        for r in self.rules:
            if r not in NORMALIZATION_RULES:
                raise _fail(
                    "predicate.normalization.rules",
                    f"{r!r} is not one of {', '.join(NORMALIZATION_RULES)}",
                )
        canonical = tuple(r for r in NORMALIZATION_RULES if r in self.rules)
        if self.rules != canonical:
            raise _fail("predicate.normalization.rules", "must be unique and in canonical order")
        _check_sha256(self.subject_sha256, "predicate.normalization.subjectDigest")
        _check_sha256(self.rebuilt_sha256, "predicate.normalization.rebuiltDigest")
        # Equivalent means the normalized forms are the same bytes; anything else is a mismatch.
        if self.subject_sha256 != self.rebuilt_sha256:
            raise _fail("predicate.normalization", "the two normalized digests differ")

    def to_dict(self) -> dict[str, Any]:
        """The predicate's ``normalization`` object. Never raises."""
        return {
            "rules": list(self.rules),
            "subjectDigest": _digest_dict(self.subject_sha256),
            "rebuiltDigest": _digest_dict(self.rebuilt_sha256),
        }

    @classmethod
    def from_dict(cls, doc: object, what: str = "normalization") -> Normalization:
        """Parse a ``normalization`` object strictly. Raises EnvelopeFormatError."""
        d = _fields(doc, what, ["rules", "subjectDigest", "rebuiltDigest"])
        rules = d["rules"]
        if not isinstance(rules, list) or len(rules) > len(NORMALIZATION_RULES):
            raise _fail(f"{what}.rules", "must be a list of known rules")
        return cls(
            tuple(rules),
            _digest_set(d["subjectDigest"], f"{what}.subjectDigest"),
            _digest_set(d["rebuiltDigest"], f"{what}.rebuiltDigest"),
        )


# -- the two predicates -------------------------------------------------------


@dataclass(frozen=True)
class ReleasePredicate:
    """The maintainer's statement: these artifacts are release VERSION of PACKAGE."""

    package: str
    """Package name, e.g. ``hello-phar``."""
    version: str
    """Release version, e.g. ``1.0.0``."""
    source: Source
    """Where the release's source lives (git tag + commit, or sdist + sha256)."""
    recipe: str
    """The build recipe's exact text (TOML, see docs/formats.md)."""
    recipe_sha256: str
    """SHA-256 of the recipe's UTF-8 bytes; must match ``recipe``."""

    PREDICATE_TYPE: ClassVar[ReleasePredicateType] = RELEASE_PREDICATE_TYPE

    def __post_init__(self) -> None:
        _check_token(self.package, "predicate.package")
        _check_token(self.version, "predicate.version")
        if not isinstance(self.source, GitSource | SdistSource):
            raise _fail("predicate.source", "must be a git or sdist source")
        _check_text(self.recipe, "predicate.recipe.content", MAX_RECIPE_TEXT, multiline=True)
        _check_sha256(self.recipe_sha256, "predicate.recipe.digest")
        if hashlib.sha256(self.recipe.encode()).hexdigest() != self.recipe_sha256:
            raise _fail("predicate.recipe", "digest does not match the recipe text")

    def to_dict(self) -> dict[str, Any]:
        """The release predicate as a JSON object. Never raises."""
        return {
            "package": self.package,
            "version": self.version,
            "source": self.source.to_dict(),
            "recipe": {"content": self.recipe, "digest": _digest_dict(self.recipe_sha256)},
        }

    @classmethod
    def from_dict(cls, doc: object, what: str = "predicate") -> ReleasePredicate:
        """Parse a release predicate object strictly. Raises EnvelopeFormatError."""
        d = _fields(doc, what, ["package", "version", "source", "recipe"])
        r = _fields(d["recipe"], f"{what}.recipe", ["content", "digest"])
        return cls(
            package=d["package"],
            version=d["version"],
            source=source_from_dict(d["source"], f"{what}.source"),
            recipe=r["content"],
            recipe_sha256=_digest_set(r["digest"], f"{what}.recipe.digest"),
        )


@dataclass(frozen=True)
class RebuildPredicate:
    """A rebuilder's attestation about one upstream artifact (the subject)."""

    package: str
    """Package name from the recipe."""
    version: str
    """Version from the recipe."""
    verdict: Verdict
    """``reproduced`` (bit-identical), ``equivalent`` (bytes differ, identical
    after the recorded ``normalization``; never bit-identical), ``mismatch``
    (built, bytes differ), ``failed`` (the build itself failed) or ``error``
    (rebuild could not run)."""
    source: Source
    """The source that was built (git commit or sdist digest)."""
    recipe_sha256: str
    """SHA-256 of the exact recipe bytes used."""
    environment: EnvironmentRef
    """The pinned environment the build ran in."""
    tool_version: str
    """Name and version of the rebuilding tool, e.g. ``rebuild/0.1.0``."""
    started_at: int
    """Unix time the rebuild started (RFC 3339 ``startedOn`` in JSON)."""
    finished_at: int
    """Unix time the rebuild finished (``finishedOn``); not before ``started_at``."""
    rebuilt_sha256: str | None = None
    """SHA-256 of the rebuilt artifact; required for reproduced, equivalent and
    mismatch, absent for failed and error."""
    diff_report_sha256: str | None = None
    """SHA-256 of the stored diff report; required exactly when equivalent or mismatch."""
    causes: tuple[str, ...] = ()
    """Short diagnoses (e.g. ``zip timestamps differ``), at most 32."""
    normalization: Normalization | None = None
    """The normalizations and both normalized digests; required exactly when equivalent."""

    PREDICATE_TYPE: ClassVar[RebuildPredicateType] = REBUILD_PREDICATE_TYPE

    def __post_init__(self) -> None:
        _check_token(self.package, "predicate.package")
        _check_token(self.version, "predicate.version")
        if self.verdict not in VERDICTS:
            raise _fail("predicate.verdict", f"must be one of {', '.join(VERDICTS)}")
        if not isinstance(self.source, GitSource | SdistSource):
            raise _fail("predicate.source", "must be a git or sdist source")
        _check_sha256(self.recipe_sha256, "predicate.recipeDigest")
        if not isinstance(self.environment, EnvironmentRef):
            raise _fail("predicate.environment", "must be an EnvironmentRef")
        _check_text(self.tool_version, "predicate.toolVersion")
        _check_time(self.started_at, "predicate.startedOn")
        _check_time(self.finished_at, "predicate.finishedOn")
        if self.finished_at < self.started_at:
            raise _fail("predicate.finishedOn", "is before startedOn")
        built = self.verdict in ("reproduced", "equivalent", "mismatch")
        if built and self.rebuilt_sha256 is None:
            raise _fail("predicate.rebuiltDigest", f"is required for verdict {self.verdict}")
        if not built and self.rebuilt_sha256 is not None:
            raise _fail("predicate.rebuiltDigest", f"must be absent for verdict {self.verdict}")
        if self.rebuilt_sha256 is not None:
            _check_sha256(self.rebuilt_sha256, "predicate.rebuiltDigest")
        compared = self.verdict in ("equivalent", "mismatch")
        if compared != (self.diff_report_sha256 is not None):
            raise _fail(
                "predicate.diffReportDigest",
                "is required exactly for verdicts equivalent and mismatch",
            )
        if (self.verdict == "equivalent") != (self.normalization is not None):
            raise _fail("predicate.normalization", "is required exactly for verdict equivalent")
        if self.normalization is not None and not isinstance(self.normalization, Normalization):
            raise _fail("predicate.normalization", "must be a Normalization")
        if self.diff_report_sha256 is not None:
            _check_sha256(self.diff_report_sha256, "predicate.diffReportDigest")
        if not isinstance(self.causes, tuple) or len(self.causes) > MAX_CAUSES:
            raise _fail("predicate.causes", f"must be a tuple of at most {MAX_CAUSES} strings")
        for i, c in enumerate(self.causes):
            _check_text(c, f"predicate.causes[{i}]", MAX_CAUSE_TEXT)

    def to_dict(self) -> dict[str, Any]:
        """The rebuild predicate as a JSON object. Never raises."""
        doc: dict[str, Any] = {
            "package": self.package,
            "version": self.version,
            "verdict": self.verdict,
            "source": self.source.to_dict(),
            "recipeDigest": _digest_dict(self.recipe_sha256),
            "environment": self.environment.to_dict(),
            "toolVersion": self.tool_version,
            "startedOn": format_time(self.started_at),
            "finishedOn": format_time(self.finished_at),
            "causes": list(self.causes),
        }
        if self.rebuilt_sha256 is not None:
            doc["rebuiltDigest"] = _digest_dict(self.rebuilt_sha256)
        if self.diff_report_sha256 is not None:
            doc["diffReportDigest"] = _digest_dict(self.diff_report_sha256)
        if self.normalization is not None:
            doc["normalization"] = self.normalization.to_dict()
        return doc

    @classmethod
    def from_dict(cls, doc: object, what: str = "predicate") -> RebuildPredicate:
        """Parse a rebuild predicate object strictly. Raises EnvelopeFormatError."""
        d = _fields(
            doc,
            what,
            [
                "package",
                "version",
                "verdict",
                "source",
                "recipeDigest",
                "environment",
                "toolVersion",
                "startedOn",
                "finishedOn",
                "causes",
            ],
            ["rebuiltDigest", "diffReportDigest", "normalization"],
        )
        causes = d["causes"]
        if not isinstance(causes, list):
            raise _fail(f"{what}.causes", "must be a list of strings")
        if d["verdict"] not in VERDICTS:
            raise _fail(f"{what}.verdict", f"must be one of {', '.join(VERDICTS)}")
        verdict: Verdict = d["verdict"]
        return cls(
            package=d["package"],
            version=d["version"],
            verdict=verdict,
            source=source_from_dict(d["source"], f"{what}.source"),
            recipe_sha256=_digest_set(d["recipeDigest"], f"{what}.recipeDigest"),
            environment=EnvironmentRef.from_dict(d["environment"], f"{what}.environment"),
            tool_version=d["toolVersion"],
            started_at=parse_time(d["startedOn"], f"{what}.startedOn"),
            finished_at=parse_time(d["finishedOn"], f"{what}.finishedOn"),
            rebuilt_sha256=(
                _digest_set(d["rebuiltDigest"], f"{what}.rebuiltDigest")
                if "rebuiltDigest" in d
                else None
            ),
            diff_report_sha256=(
                _digest_set(d["diffReportDigest"], f"{what}.diffReportDigest")
                if "diffReportDigest" in d
                else None
            ),
            causes=tuple(causes),
            normalization=(
                Normalization.from_dict(d["normalization"], f"{what}.normalization")
                if "normalization" in d
                else None
            ),
        )


Predicate: TypeAlias = ReleasePredicate | RebuildPredicate
_PREDICATES: Final[dict[str, type[ReleasePredicate] | type[RebuildPredicate]]] = {
    RELEASE_PREDICATE_TYPE: ReleasePredicate,
    REBUILD_PREDICATE_TYPE: RebuildPredicate,
}


# -- the statement ------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    """An in-toto Statement v1 carrying one of rebuild's predicates."""

    subjects: tuple[Subject, ...]
    """The artifacts; for a rebuild attestation exactly one (the upstream artifact)."""
    predicate: Predicate
    """A :class:`ReleasePredicate` or :class:`RebuildPredicate`."""

    def __post_init__(self) -> None:
        if not isinstance(self.subjects, tuple) or not self.subjects:
            raise _fail("statement.subject", "must list at least one artifact")
        if len(self.subjects) > MAX_SUBJECTS:
            raise _fail("statement.subject", f"more than {MAX_SUBJECTS} artifacts")
        names = [s.name for s in self.subjects]
        if len(set(names)) != len(names):
            raise _fail("statement.subject", "names the same artifact twice")
        if not isinstance(self.predicate, ReleasePredicate | RebuildPredicate):
            raise _fail("statement.predicate", "must be a release or rebuild predicate")
        if isinstance(self.predicate, RebuildPredicate):
            if len(self.subjects) != 1:
                raise _fail("statement.subject", "a rebuild attestation has exactly one subject")
            p, subject = self.predicate, self.subjects[0]
            # A verdict that contradicts its own digests is not a verdict.
            if p.verdict == "reproduced" and p.rebuilt_sha256 != subject.sha256:
                raise _fail("predicate.rebuiltDigest", "differs from the subject for reproduced")
            if p.verdict in ("equivalent", "mismatch") and p.rebuilt_sha256 == subject.sha256:
                raise _fail("predicate.rebuiltDigest", f"equals the subject for {p.verdict}")

    @property
    def predicate_type(self) -> str:
        """The predicate's type URI. Never raises."""
        return self.predicate.PREDICATE_TYPE

    def subject_for(self, sha256: str) -> Subject | None:
        """The subject with this digest, if any. Never raises."""
        return next((s for s in self.subjects if s.sha256 == sha256), None)

    def to_dict(self) -> dict[str, Any]:
        """The in-toto Statement v1 as a JSON object. Never raises."""
        return {
            "_type": STATEMENT_TYPE,
            "subject": [s.to_dict() for s in self.subjects],
            "predicateType": self.predicate_type,
            "predicate": self.predicate.to_dict(),
        }

    def to_json(self) -> bytes:
        """Compact, key-sorted JSON: the bytes that get signed.

        Raises EnvelopeFormatError when the statement would not fit in an envelope.
        """
        data = dump_json(self.to_dict())
        if len(data) > MAX_STATEMENT_SIZE:
            raise _fail("statement", f"{len(data)} bytes, over the {MAX_STATEMENT_SIZE} limit")
        return data

    @classmethod
    def from_dict(cls, doc: object) -> Statement:
        """Parse a statement object strictly. Raises EnvelopeFormatError."""
        d = _fields(doc, "statement", ["_type", "subject", "predicateType", "predicate"])
        if d["_type"] != STATEMENT_TYPE:
            raise _fail("statement._type", f"must be {STATEMENT_TYPE}")
        subjects = d["subject"]
        if not isinstance(subjects, list) or not subjects:
            raise _fail("statement.subject", "must be a non-empty list")
        if len(subjects) > MAX_SUBJECTS:
            raise _fail("statement.subject", f"more than {MAX_SUBJECTS} artifacts")
        ptype = d["predicateType"]
        kind = _PREDICATES.get(ptype) if isinstance(ptype, str) else None
        if kind is None:
            raise _fail("statement.predicateType", f"unsupported predicate type {ptype!r}")
        return cls(
            tuple(Subject.from_dict(s, f"statement.subject[{i}]") for i, s in enumerate(subjects)),
            kind.from_dict(d["predicate"]),
        )

    @classmethod
    def parse(cls, payload: bytes) -> Statement:
        """Parse statement JSON bytes (an envelope's payload) strictly.

        Raises EnvelopeFormatError for anything but one well-formed statement.
        """
        return cls.from_dict(load_json(payload, "statement", MAX_STATEMENT_SIZE))


def make_statement(subjects: Iterable[Subject], predicate: Predicate) -> Statement:
    """Build a validated statement about ``subjects``.

    Raises EnvelopeFormatError when the subjects and predicate do not make a valid
    statement.
    """
    return Statement(tuple(subjects), predicate)


def sign_statement(statement: Statement, signers: Sequence[SigningKey]) -> bytes:
    """The DSSE envelope (JSON bytes) carrying ``statement``, signed by each signer.

    Raises EnvelopeFormatError as :func:`verify.dsse.sign_envelope` and
    :meth:`Statement.to_json` do.
    """
    return sign_envelope(statement.to_json(), signers, payload_type=PAYLOAD_TYPE_INTOTO)


@dataclass(frozen=True)
class VerifiedStatement:
    """A statement from an envelope that enough distinct trusted keys signed."""

    statement: Statement
    result: VerificationResult


def verify_statement(
    envelope: bytes,
    trusted: Iterable[VerifierKey],
    threshold: int = 1,
    *,
    predicate_type: str | None = None,
) -> VerifiedStatement:
    """Verify an envelope's signatures, then parse its statement strictly.

    With ``predicate_type`` set, any other predicate is an EnvelopeFormatError.
    Signatures are checked before the payload is parsed, so unsigned bytes
    never reach the statement parser.

    Raises EnvelopeFormatError (malformed, wrong type), SignatureError (a trusted key's
    signature is bad), UnsignedError (no trusted key signed) or ThresholdError (too few
    did).
    """
    verified = verify_envelope(envelope, trusted, threshold)
    statement = Statement.parse(verified.payload)
    if predicate_type is not None and statement.predicate_type != predicate_type:
        raise _fail(
            "statement.predicateType",
            f"is {statement.predicate_type}, expected {predicate_type}",
        )
    return VerifiedStatement(statement, verified.result)
