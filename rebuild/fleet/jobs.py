"""Fleet jobs and results: the two messages that travel through the broker.

A *job* names one target to rebuild and carries everything a worker on
another machine needs (the release statement itself, or the index files of
a ``pypi:`` release); a *result* is what the worker found, everything the
publisher needs to sign a rebuild attestation. Both are frozen values
validated on construction and parsed strictly from JSON with bounded sizes,
because the broker is a network service: a message is input, not trusted
code. This module decides the deduplication key of a target and nothing
else; it does no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias, get_args

from verify.errors import VerifyError
from verify.intoto import GitSource, Normalization, SdistSource, Source, source_from_dict
from verify.parsing import decode_base64

JOB_FORMAT: Final = "rebuild-fleet-job/v1"
RESULT_FORMAT: Final = "rebuild-fleet-result/v1"
MAX_MESSAGE_BYTES: Final = 256 * 1024
MAX_STATEMENT_BYTES: Final = 0xFFFF  # a log entry
MAX_TEXT: Final = 256
MAX_URL: Final = 2048
MAX_SOURCES: Final = 16
MAX_KEYS: Final = 16
MAX_CAUSES: Final = 32
MAX_CAUSE_TEXT: Final = 200
MAX_LINKS: Final = 8
MAX_ATTEMPTS: Final = 100

Verdict: TypeAlias = Literal["reproduced", "equivalent", "mismatch", "failed", "error"]
VERDICTS: Final[tuple[str, ...]] = get_args(Verdict)
JobKind: TypeAlias = Literal["release", "pypi"]
UNKNOWN_DIGEST: Final = "0" * 64
_PYPI_RECIPE_DOMAIN: Final = b"rebuild-fleet/pypi-wheel-strategy\x00"
_HEX64 = re.compile(r"[0-9a-f]{64}")


class MessageError(ValueError):
    """A job or result message that is malformed, oversized or inconsistent."""


def _fail(what: str, problem: str) -> MessageError:
    return MessageError(f"{what} {problem}")


def _text(value: object, what: str, limit: int = MAX_TEXT, *, empty: bool = False) -> str:
    if not isinstance(value, str) or len(value) > limit or (not value and not empty):
        raise _fail(what, f"must be a {'' if empty else 'non-empty '}string of at most {limit}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise _fail(what, "must not contain control characters")
    return value


def _sha256(value: object, what: str) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise _fail(what, "must be 64 lowercase hex digits")
    return value


def _opt_sha256(value: object, what: str) -> str | None:
    return None if value is None else _sha256(value, what)


def _int(value: object, what: str, lo: int = 0, hi: int = 2**63 - 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise _fail(what, f"must be an integer in {lo}..{hi}")
    return value


def _texts(value: object, what: str, limit: int, item_limit: int = MAX_URL) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > limit:
        raise _fail(what, f"must be a list of at most {limit} strings")
    return tuple(_text(v, f"{what}[{i}]", item_limit) for i, v in enumerate(value))


def _fields(doc: object, what: str, names: set[str]) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise _fail(what, "must be a JSON object")
    missing = names - doc.keys()
    extra = doc.keys() - names
    if missing or extra:
        raise _fail(what, f"has missing {sorted(missing)} or unknown {sorted(extra)} fields")
    return doc


def pypi_recipe_key(sdist_sha256: str) -> str:
    """The recipe half of a ``pypi:`` target's key.

    Its recipe is inferred by the worker, so its digest is not known when the
    target is found; the sdist it will be inferred from stands in for it.
    """
    return hashlib.sha256(_PYPI_RECIPE_DOMAIN + sdist_sha256.encode()).hexdigest()


def target_key(artifact_sha256: str, recipe_key: str) -> str:
    """``<artifact sha256>-<recipe digest>``: one target, however often it is found."""
    return f"{_sha256(artifact_sha256, 'artifact sha256')}-{_sha256(recipe_key, 'recipe key')}"


# -- jobs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Artifact:
    """The upstream artifact a job rebuilds: its file name and sha256."""

    name: str
    sha256: str

    def __post_init__(self) -> None:
        _text(self.name, "artifact.name")
        if "/" in self.name or self.name in (".", ".."):
            raise _fail("artifact.name", "must be a plain file name")
        _sha256(self.sha256, "artifact.sha256")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256}

    @classmethod
    def from_json(cls, doc: object, what: str = "artifact") -> Artifact:
        d = _fields(doc, what, {"name", "sha256"})
        return cls(_text(d["name"], f"{what}.name"), _sha256(d["sha256"], f"{what}.sha256"))


@dataclass(frozen=True)
class IndexFileRef:
    """A file of a release as the package index listed it."""

    filename: str
    url: str
    sha256: str

    def __post_init__(self) -> None:
        Artifact(self.filename, self.sha256)  # the same checks
        _text(self.url, "index file url", MAX_URL)

    def to_json(self) -> dict[str, Any]:
        return {"filename": self.filename, "url": self.url, "sha256": self.sha256}

    @classmethod
    def from_json(cls, doc: object, what: str) -> IndexFileRef:
        d = _fields(doc, what, {"filename", "url", "sha256"})
        return cls(
            _text(d["filename"], f"{what}.filename"),
            _text(d["url"], f"{what}.url", MAX_URL),
            _sha256(d["sha256"], f"{what}.sha256"),
        )


@dataclass(frozen=True)
class Job:
    """One target: a release statement from the log, or a release on the index.

    ``release`` jobs carry the statement (a DSSE envelope, as logged), where
    to fetch the artifact it releases, and the maintainer keys the worker
    must check it against (none: the signature is not checked, as with
    ``rebuild verify STATEMENT ARTIFACT``). ``pypi`` jobs carry the wheel and
    sdist the index listed; the worker must find the same files.
    """

    kind: JobKind
    package: str
    version: str
    artifact: Artifact
    recipe_key: str
    source: Source
    statement: bytes = b""
    log_index: int | None = None
    artifact_sources: tuple[str, ...] = ()
    maintainer_keys: tuple[str, ...] = ()
    sdist: IndexFileRef | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("release", "pypi"):
            raise _fail("job.kind", "must be release or pypi")
        _text(self.package, "job.package")
        _text(self.version, "job.version")
        _sha256(self.recipe_key, "job.recipe_key")
        if not isinstance(self.source, GitSource | SdistSource):
            raise _fail("job.source", "must be a git or sdist source")
        if len(self.artifact_sources) > MAX_SOURCES or len(self.maintainer_keys) > MAX_KEYS:
            raise _fail("job", f"has more than {MAX_SOURCES} sources or {MAX_KEYS} keys")
        if self.kind == "release":
            if not 0 < len(self.statement) <= MAX_STATEMENT_BYTES:
                raise _fail("job.statement", f"must be 1..{MAX_STATEMENT_BYTES} bytes")
            if not self.artifact_sources:
                raise _fail("job.artifact_sources", "must name where the artifact is")
        elif self.sdist is None or self.statement:
            raise _fail("job", "of kind pypi needs the sdist and no statement")
        elif self.recipe_key != pypi_recipe_key(self.sdist.sha256):
            raise _fail("job.recipe_key", "does not match the sdist")

    @property
    def key(self) -> str:
        return target_key(self.artifact.sha256, self.recipe_key)

    @property
    def label(self) -> str:
        if self.kind == "pypi":
            return f"pypi:{self.package}=={self.version}"
        return f"{self.package} {self.version} ({self.artifact.name})"

    @property
    def recipe_sha256(self) -> str | None:
        """The recipe digest when known before the build (release statements)."""
        return self.recipe_key if self.kind == "release" else None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "format": JOB_FORMAT,
            "kind": self.kind,
            "package": self.package,
            "version": self.version,
            "artifact": self.artifact.to_json(),
            "recipe_key": self.recipe_key,
            "source": self.source.to_dict(),
        }
        if self.kind == "release":
            doc["statement"] = base64.b64encode(self.statement).decode()
            doc["log_index"] = self.log_index
            doc["artifact_sources"] = list(self.artifact_sources)
            doc["maintainer_keys"] = list(self.maintainer_keys)
        else:
            assert self.sdist is not None
            doc["sdist"] = self.sdist.to_json()
        return doc

    @classmethod
    def from_json(cls, doc: object) -> Job:
        _check_size(doc, "job")
        if not isinstance(doc, dict) or doc.get("format") != JOB_FORMAT:
            raise _fail("job.format", f"must be {JOB_FORMAT}")
        common = {"format", "kind", "package", "version", "artifact", "recipe_key", "source"}
        source = _source(doc.get("source"), "job.source")
        if doc.get("kind") == "release":
            extra = {"statement", "log_index", "artifact_sources", "maintainer_keys"}
            d = _fields(doc, "job", common | extra)
            text = _text(d["statement"], "job.statement", 1 << 17)
            statement = decode_base64(text, "job.statement", MessageError)
            return cls(
                kind="release",
                package=_text(d["package"], "job.package"),
                version=_text(d["version"], "job.version"),
                artifact=Artifact.from_json(d["artifact"], "job.artifact"),
                recipe_key=_sha256(d["recipe_key"], "job.recipe_key"),
                source=source,
                statement=statement,
                log_index=None if d["log_index"] is None else _int(d["log_index"], "job.log_index"),
                artifact_sources=_texts(d["artifact_sources"], "job.artifact_sources", MAX_SOURCES),
                maintainer_keys=_texts(d["maintainer_keys"], "job.maintainer_keys", MAX_KEYS, 512),
            )
        if doc.get("kind") != "pypi":
            raise _fail("job.kind", "must be release or pypi")
        d = _fields(doc, "job", common | {"sdist"})
        return cls(
            kind="pypi",
            package=_text(d["package"], "job.package"),
            version=_text(d["version"], "job.version"),
            artifact=Artifact.from_json(d["artifact"], "job.artifact"),
            recipe_key=_sha256(d["recipe_key"], "job.recipe_key"),
            source=source,
            sdist=IndexFileRef.from_json(d["sdist"], "job.sdist"),
        )


def pypi_job(package: str, version: str, wheel: IndexFileRef, sdist: IndexFileRef) -> Job:
    return Job(
        kind="pypi",
        package=package,
        version=version,
        artifact=Artifact(wheel.filename, wheel.sha256),
        recipe_key=pypi_recipe_key(sdist.sha256),
        source=SdistSource(sdist.url, sdist.sha256),
        sdist=sdist,
    )


# -- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportLink:
    """A stored report of a rebuild (build log, comparison) and where to read it."""

    kind: str
    href: str
    sha256: str | None = None

    def __post_init__(self) -> None:
        _text(self.kind, "report.kind", 64)
        _text(self.href, "report.href", MAX_URL)
        _opt_sha256(self.sha256, "report.sha256")

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "href": self.href, "sha256": self.sha256}

    @classmethod
    def from_json(cls, doc: object) -> ReportLink:
        d = _fields(doc, "report", {"kind", "href", "sha256"})
        return cls(d["kind"], d["href"], d["sha256"])


@dataclass(frozen=True)
class JobResult:
    """What one worker found for one job: everything the attestation says, unsigned."""

    job_key: str
    label: str
    package: str
    version: str
    artifact: Artifact
    verdict: Verdict
    source: Source
    recipe_sha256: str | None
    rebuilt_sha256: str | None
    environment: str | None
    environment_lock: str | None
    tool_version: str
    started_at: int
    finished_at: int
    diff_report_sha256: str | None
    causes: tuple[str, ...]
    attempts: int
    worker: str
    message: str = ""
    reports: tuple[ReportLink, ...] = ()
    normalization: Normalization | None = None
    """For ``equivalent``: the rules and both normalized digests (docs/comparison.md)."""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise _fail("result.verdict", f"must be one of {', '.join(VERDICTS)}")
        _text(self.job_key, "result.job_key", 129)
        for what, value in (("label", self.label), ("package", self.package)):
            _text(value, f"result.{what}")
        _text(self.version, "result.version")
        for what, digest in (
            ("recipe_sha256", self.recipe_sha256),
            ("rebuilt_sha256", self.rebuilt_sha256),
            ("environment_lock", self.environment_lock),
            ("diff_report_sha256", self.diff_report_sha256),
        ):
            _opt_sha256(digest, f"result.{what}")
        if self.environment is not None:
            _text(self.environment, "result.environment")
        _text(self.tool_version, "result.tool_version")
        _text(self.worker, "result.worker")
        _text(self.message, "result.message", 2048, empty=True)
        _int(self.started_at, "result.started_at")
        _int(self.finished_at, "result.finished_at", self.started_at)
        _int(self.attempts, "result.attempts", 1, MAX_ATTEMPTS)
        if len(self.causes) > MAX_CAUSES or len(self.reports) > MAX_LINKS:
            raise _fail("result", f"has more than {MAX_CAUSES} causes or {MAX_LINKS} reports")
        for i, c in enumerate(self.causes):
            _text(c, f"result.causes[{i}]", MAX_CAUSE_TEXT)
        # The first rule again, before anything is signed: only two equal
        # digests are "reproduced"; "mismatch" needs two different ones.
        if self.verdict == "reproduced" and self.rebuilt_sha256 != self.artifact.sha256:
            raise _fail("result", "says reproduced without equal digests")
        if self.verdict in ("equivalent", "mismatch") and self.rebuilt_sha256 in (
            None,
            self.artifact.sha256,
        ):
            raise _fail("result", f"says {self.verdict} without two different digests")
        if (self.verdict == "equivalent") != (self.normalization is not None):
            raise _fail("result.normalization", "is required exactly for verdict equivalent")

    @property
    def triple_recipe(self) -> str:
        """The recipe digest the attestation will carry (all zeros when never known)."""
        return self.recipe_sha256 or UNKNOWN_DIGEST

    def to_json(self) -> dict[str, Any]:
        return {
            "format": RESULT_FORMAT,
            "job_key": self.job_key,
            "label": self.label,
            "package": self.package,
            "version": self.version,
            "artifact": self.artifact.to_json(),
            "verdict": self.verdict,
            "source": self.source.to_dict(),
            "recipe_sha256": self.recipe_sha256,
            "rebuilt_sha256": self.rebuilt_sha256,
            "environment": self.environment,
            "environment_lock": self.environment_lock,
            "tool_version": self.tool_version,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "diff_report_sha256": self.diff_report_sha256,
            "causes": list(self.causes),
            "attempts": self.attempts,
            "worker": self.worker,
            "message": self.message,
            "reports": [r.to_json() for r in self.reports],
            # Only when present: results of other verdicts keep the v1 shape.
            **(
                {"normalization": self.normalization.to_dict()}
                if self.normalization is not None
                else {}
            ),
        }

    @classmethod
    def from_json(cls, doc: object) -> JobResult:
        _check_size(doc, "result")
        names = {
            "format", "job_key", "label", "package", "version", "artifact", "verdict", "source",
            "recipe_sha256", "rebuilt_sha256", "environment", "environment_lock",
            "tool_version", "started_at", "finished_at", "diff_report_sha256", "causes",
            "attempts", "worker", "message", "reports",
        }  # fmt: skip
        if isinstance(doc, dict) and "normalization" in doc:
            names.add("normalization")
        d = _fields(doc, "result", names)
        if d["format"] != RESULT_FORMAT:
            raise _fail("result.format", f"must be {RESULT_FORMAT}")
        if not isinstance(d["reports"], list) or len(d["reports"]) > MAX_LINKS:
            raise _fail("result.reports", f"must be a list of at most {MAX_LINKS}")
        source = _source(d["source"], "result.source")
        return cls(
            job_key=d["job_key"],
            label=d["label"],
            package=d["package"],
            version=d["version"],
            artifact=Artifact.from_json(d["artifact"], "result.artifact"),
            verdict=d["verdict"],
            source=source,
            recipe_sha256=d["recipe_sha256"],
            rebuilt_sha256=d["rebuilt_sha256"],
            environment=d["environment"],
            environment_lock=d["environment_lock"],
            tool_version=d["tool_version"],
            started_at=d["started_at"],
            finished_at=d["finished_at"],
            diff_report_sha256=d["diff_report_sha256"],
            causes=_texts(d["causes"], "result.causes", MAX_CAUSES, MAX_CAUSE_TEXT),
            attempts=d["attempts"],
            worker=d["worker"],
            message=d["message"],
            reports=tuple(ReportLink.from_json(r) for r in d["reports"]),
            normalization=_normalization(d.get("normalization")),
        )


def _normalization(doc: object) -> Normalization | None:
    if doc is None:
        return None
    try:
        return Normalization.from_dict(doc, "result.normalization")
    except VerifyError as e:
        raise MessageError(str(e)) from None


def _source(doc: object, what: str) -> Source:
    try:
        return source_from_dict(doc, what)
    except VerifyError as e:
        raise MessageError(str(e)) from None


def _check_size(doc: object, what: str) -> None:
    try:
        size = len(json.dumps(doc))
    except (TypeError, ValueError):
        raise _fail(what, "is not JSON") from None
    if size > MAX_MESSAGE_BYTES:
        raise _fail(what, f"is larger than {MAX_MESSAGE_BYTES} bytes")
