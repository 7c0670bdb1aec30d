"""The value ``rebuild verify`` produces: a frozen, JSON-ready result.

Decides nothing; it records. The one invariant it enforces is the product's
first rule: the verdict ``reproduced`` is only constructible when the two
sha256 digests are present and equal; ``equivalent`` and ``mismatch`` only
when they differ (``equivalent`` also needs its normalization).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Verdict = Literal["reproduced", "equivalent", "mismatch", "failed", "error"]
# "differs": the compare step ran and the digests differ (never "ok" beside a mismatch).
StepStatus = Literal["ok", "differs", "failed", "error", "skipped"]
STEPS: tuple[str, ...] = ("fetch", "environment", "build", "compare", "attest", "publish")


@dataclass(frozen=True)
class StepTiming:
    """One pipeline step, how it ended, and how long it took."""

    name: str
    status: StepStatus
    seconds: float
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "detail": self.detail,
        }


@dataclass(frozen=True)
class LogEntryRef:
    """Where the attestation landed in the audit log."""

    url: str
    index: int
    proof: str | None

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "index": self.index, "proof": self.proof}


@dataclass(frozen=True)
class StepError:
    """A step after the verdict (attest, publish) that failed: reported, and exit
    status 2, but the verdict stands."""

    step: str
    message: str
    hint: str | None

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "message": self.message, "hint": self.hint}


@dataclass(frozen=True)
class VerifyResult:
    """Everything one ``rebuild verify`` run found out."""

    target: str
    verdict: Verdict
    package: str | None
    version: str | None
    artifact: str | None
    upstream_sha256: str | None
    rebuilt_sha256: str | None
    causes: tuple[str, ...]
    steps: tuple[StepTiming, ...]
    report_dir: str
    build_log: str | None = None
    rebuilt_artifact: str | None = None
    diff_report: str | None = None
    diff_report_sha256: str | None = None
    attestation: str | None = None
    log_entry: LogEntryRef | None = None
    environment: str | None = None
    environment_lock: str | None = None
    source: dict[str, Any] = field(default_factory=dict)
    recipe_sha256: str | None = None
    source_date_epoch: int | None = None
    sde_rule: str | None = None
    message: str = ""
    hint: str | None = None  # what to try next, for verdict error
    details: dict[str, Any] = field(default_factory=dict)
    step_error: StepError | None = None
    normalization: dict[str, Any] | None = None
    """For ``equivalent``: ``{"rules": [...], "sha256": <both normalized forms>}``."""

    def __post_init__(self) -> None:
        if self.verdict == "reproduced" and (
            self.upstream_sha256 is None or self.upstream_sha256 != self.rebuilt_sha256
        ):
            raise ValueError("verdict reproduced requires equal sha256 digests")
        if self.verdict in ("equivalent", "mismatch") and (
            self.rebuilt_sha256 is None or self.upstream_sha256 == self.rebuilt_sha256
        ):
            raise ValueError(f"verdict {self.verdict} requires two different sha256 digests")
        if (self.verdict == "equivalent") != (self.normalization is not None):
            raise ValueError("a normalization is recorded exactly for verdict equivalent")

    @property
    def exit_code(self) -> int:
        """0 reproduced; 1 equivalent (not bit-identical), mismatch, failed; 2 error or a
        failed step after the verdict (attest, publish)."""
        if self.step_error is not None:
            return 2
        return {"reproduced": 0, "equivalent": 1, "mismatch": 1, "failed": 1, "error": 2}[
            self.verdict
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "verdict": self.verdict,
            "package": self.package,
            "version": self.version,
            "artifact": self.artifact,
            "upstream_sha256": self.upstream_sha256,
            "rebuilt_sha256": self.rebuilt_sha256,
            "causes": list(self.causes),
            "steps": [s.to_json() for s in self.steps],
            "report_dir": self.report_dir,
            "build_log": self.build_log,
            "rebuilt_artifact": self.rebuilt_artifact,
            "diff_report": self.diff_report,
            "diff_report_sha256": self.diff_report_sha256,
            "attestation": self.attestation,
            "log_entry": self.log_entry.to_json() if self.log_entry else None,
            "environment": self.environment,
            "environment_lock_sha256": self.environment_lock,
            "source": self.source,
            "recipe_sha256": self.recipe_sha256,
            "source_date_epoch": self.source_date_epoch,
            "source_date_epoch_rule": self.sde_rule,
            "message": self.message,
            "hint": self.hint,
            "details": self.details,
            "step_error": self.step_error.to_json() if self.step_error else None,
            "normalization": self.normalization,
            "exit_code": self.exit_code,
        }
