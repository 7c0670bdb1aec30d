"""Step 4b: explain a difference through the comparison seam.

Hands the two artifacts to :func:`rebuild.compare.compare` (format-aware
diagnosis, normalization, and the real diffoscope, with a timeout) and
returns its causes, the stored comparison report and that report's digest,
which goes into the attestation, and the normalized pair when the two are
equivalent. Decides no verdict: by the time this runs the sha256s differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rebuild.compare import compare
from rebuild.compare._normalize import NormalizedPair
from rebuild.errors import ToolError

DIFFOSCOPE_TIMEOUT = 300.0


@dataclass(frozen=True)
class Explanation:
    """Why two artifacts differ, and where the comparison report is."""

    causes: list[str]
    report: Path
    report_sha256: str
    details: dict[str, Any]
    equivalent: NormalizedPair | None
    """Set when normalizing both by the recorded rules gives the same bytes."""


def explain(upstream: Path, rebuilt: Path, report_dir: Path) -> Explanation:
    """Compare; return the causes, the stored report and its digest, and any equivalence."""
    result = compare(
        upstream, rebuilt, report_dir=report_dir / "diff", diffoscope_timeout=DIFFOSCOPE_TIMEOUT
    )
    if result.identical or result.report_sha256 is None:
        raise ToolError("the comparison found the artifacts identical after their sha256s differed")
    report = result.report("comparison-json")
    if report is None:
        raise ToolError("the comparison stored no report")
    causes = list(result.causes) or ["bytes differ (no format-aware cause found)"]
    details = {
        "format": result.format,
        "notes": list(result.notes),
        "reports": [r.to_json() for r in result.reports],
        "diffoscope": result.diffoscope.to_json() if result.diffoscope else None,
    }
    details["normalized"] = result.normalized.to_json() if result.normalized else None
    return Explanation(
        causes,
        report.path,
        result.report_sha256,
        details,
        result.normalized if result.equivalent else None,
    )
