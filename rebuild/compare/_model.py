"""Values produced by a comparison: frozen, JSON-ready, no behaviour.

A :class:`Comparison` is what :func:`rebuild.compare.compare` returns and what
``rebuild verify`` puts (through its causes and report digest) into a rebuild
attestation. It must stay stable: the engine and the CLI depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from rebuild.compare._normalize import NormalizedPair

Side = Literal["expected", "actual"]

# The kinds a Difference can have; causes are derived from them (docs/comparison.md).
KINDS: frozenset[str] = frozenset(
    {
        "added",
        "removed",
        "content",
        "timestamps",
        "permissions",
        "compression",
        "order",
        "metadata",
        "manifest",
        "stub",
        "alias",
        "signature",
        "signature-invalid",
        "record-invalid",
        "layout",
        "format",
        "limit",
    }
)


@dataclass(frozen=True)
class Difference:
    """One observed difference between the expected and the actual artifact.

    ``path`` is the entry inside the archive (None for archive-level fields).
    ``explained_by_others`` marks a difference that is a mere consequence of
    other differences (a wheel's RECORD hashes, a phar's hash signature); it
    is kept for the report but contributes no cause.
    """

    kind: str
    path: str | None
    detail: str
    expected: str | None = None
    actual: str | None = None
    explained_by_others: bool = False
    side: Side | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown difference kind {self.kind!r}")
        if self.kind in {"signature-invalid", "record-invalid", "limit"} and self.side is None:
            raise ValueError(f"a {self.kind} difference needs a side")

    def cause(self) -> str | None:
        """The verdict cause string this difference contributes, if any."""
        if self.explained_by_others:
            return None
        if self.kind in {"added", "removed", "content"} and self.path is not None:
            return f"{self.kind}:{self.path}"
        if self.kind in {"signature-invalid", "record-invalid", "format", "limit"}:
            return f"{self.kind}:{self.side}" if self.side else self.kind
        return self.kind

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "detail": self.detail,
            "expected": self.expected,
            "actual": self.actual,
            "explained_by_others": self.explained_by_others,
            "side": self.side,
        }


@dataclass(frozen=True)
class ReportFile:
    """A report stored content-addressed: ``path.name`` is ``<sha256>.<ext>``."""

    kind: str  # "comparison-json" | "diffoscope-json" | "diffoscope-html" | "diffoscope-text"
    path: Path
    sha256: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path), "sha256": self.sha256, "size": self.size}


DiffoscopeStatus = Literal["ran", "missing", "timeout", "failed", "skipped", "refused", "limit"]


@dataclass(frozen=True)
class DiffoscopeRun:
    """What happened when diffoscope was asked (or why it was not)."""

    status: DiffoscopeStatus
    version: str | None
    exit_code: int | None
    json_format_version: int | None
    seconds: float
    note: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "version": self.version,
            "exit_code": self.exit_code,
            "json_format_version": self.json_format_version,
            "seconds": round(self.seconds, 3),
            "note": self.note,
        }


@dataclass(frozen=True)
class Comparison:
    """The result of comparing an expected artifact with an actual one.

    ``identical`` is True exactly when the sha256s are equal. ``causes`` is
    short, sorted and deduplicated: one string per kind of difference (see
    docs/comparison.md for the vocabulary). ``report_sha256`` is the digest
    of the stored comparison report (``comparison-json``), which names the
    digests of every other stored report; it is what an attestation carries.
    """

    identical: bool
    expected: Path
    actual: Path
    expected_sha256: str
    actual_sha256: str
    expected_size: int
    actual_size: int
    format: str
    causes: tuple[str, ...]
    differences: tuple[Difference, ...] = ()
    notes: tuple[str, ...] = ()
    diffoscope: DiffoscopeRun | None = None
    reports: tuple[ReportFile, ...] = ()
    report_sha256: str | None = None
    seconds: float = 0.0
    normalized: NormalizedPair | None = None
    """Both sides normalized by the rules their causes call for (zips only)."""

    @property
    def equivalent(self) -> bool:
        """Not identical, but identical after the recorded normalizations."""
        return not self.identical and self.normalized is not None and self.normalized.equal

    def report(self, kind: str) -> ReportFile | None:
        for r in self.reports:
            if r.kind == kind:
                return r
        return None

    def to_json(self) -> dict[str, Any]:
        """The ``rebuild diff --json`` document (documented in docs/comparison.md)."""
        return {
            "identical": self.identical,
            "format": self.format,
            "causes": list(self.causes),
            "sha256s": {"expected": self.expected_sha256, "actual": self.actual_sha256},
            "sizes": {"expected": self.expected_size, "actual": self.actual_size},
            "files": {"expected": str(self.expected), "actual": str(self.actual)},
            "differences": [d.to_json() for d in self.differences],
            "notes": list(self.notes),
            "diffoscope": self.diffoscope.to_json() if self.diffoscope else None,
            "reports": [r.to_json() for r in self.reports],
            "report_sha256": self.report_sha256,
            "equivalent": self.equivalent,
            "normalized": self.normalized.to_json() if self.normalized else None,
        }


def causes_of(differences: tuple[Difference, ...] | list[Difference]) -> tuple[str, ...]:
    """Sorted, deduplicated causes of ``differences`` (consequential ones excluded)."""
    out = {c for d in differences if (c := d.cause()) is not None}
    return tuple(sorted(out))
