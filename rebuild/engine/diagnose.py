"""Step 4b: explain a mismatch through the comparison seam.

Hands the two artifacts to :func:`rebuild.compare.compare` (format-aware
diagnosis plus the real diffoscope, with a timeout) and returns its causes,
the stored comparison report and that report's digest, which goes into the
attestation. Decides no verdict: by the time this runs the sha256s differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rebuild.compare import compare
from rebuild.errors import ToolError

DIFFOSCOPE_TIMEOUT = 300.0


def explain(
    upstream: Path, rebuilt: Path, report_dir: Path
) -> tuple[list[str], Path, str, dict[str, Any]]:
    """Return (causes, comparison report path, its sha256, a summary for the result)."""
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
    return causes, report.path, result.report_sha256, details
