"""compare(): the one entry point that decides whether two artifacts are identical
and, when they are not, says why.

1. Hash both files (one streaming pass each). Equal digests end the comparison:
   nothing is unpacked and diffoscope is not run.
2. Otherwise diagnose with the format-aware parsers (pure Python, bounded).
   A side that cannot be parsed is itself a difference (``format:<side>``).
   2b. For zips whose every cause is ``timestamps``, ``order`` or
   ``permissions``, normalize both sides by exactly those rules
   (``_normalize``); equal normalized digests make the pair *equivalent*.
   Never identical: that is only ever equal sha256s.
3. With a report directory, run diffoscope (bounded) and store its JSON, HTML
   and text reports content-addressed, then store the comparison report (which
   names all of them) and return its digest.

It never executes anything from an artifact and never writes outside
``report_dir``.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

from rebuild.compare._diagnose import Diagnosis, diagnose, sniff_format
from rebuild.compare._diffoscope import DEFAULT_DIFFOSCOPE, DEFAULT_TIMEOUT, run_diffoscope
from rebuild.compare._hashing import sha256_file
from rebuild.compare._limits import DEFAULT_LIMITS, InflationLimits
from rebuild.compare._model import Comparison, DiffoscopeRun, ReportFile, causes_of
from rebuild.compare._normalize import normalize_pair
from rebuild.compare._store import store_report

COMPARISON_REPORT_TYPE = "https://rebuild.invalid/comparison/v1"
# Details kept per comparison (causes are always computed from all of them).
MAX_DIFFERENCES = 10_000


def compare(
    expected: Path,
    actual: Path,
    *,
    report_dir: Path | None = None,
    diffoscope_timeout: float = DEFAULT_TIMEOUT,
    diffoscope: str | None = DEFAULT_DIFFOSCOPE,
    limits: InflationLimits = DEFAULT_LIMITS,
) -> Comparison:
    """Compare ``expected`` (the published artifact) with ``actual`` (the rebuild).

    ``diffoscope=None`` skips diffoscope; it also only runs with a
    ``report_dir`` (its reports must be stored somewhere). ``limits`` caps
    how much either side may inflate (docs/comparison.md); a side over them
    is reported as ``limit:<side>`` and diffoscope is not run on the pair.
    """
    start = time.monotonic()
    expected, actual = Path(expected), Path(actual)
    e_sha, e_size = sha256_file(expected)
    a_sha, a_size = sha256_file(actual)
    pair = functools.partial(
        Comparison,
        expected=expected,
        actual=actual,
        expected_sha256=e_sha,
        actual_sha256=a_sha,
        expected_size=e_size,
        actual_size=a_size,
    )
    if e_sha == a_sha:
        return pair(
            identical=True,
            format=sniff_format(expected),
            causes=(),
            seconds=time.monotonic() - start,
        )
    diag: Diagnosis = diagnose(expected, actual, limits)
    notes = list(diag.notes)
    causes = causes_of(diag.differences)
    normalized = None
    if diag.format in {"wheel", "zip"}:
        # Step 2b: equivalence. Only zips whose every cause has a normalization
        # rule are normalized; equal normalized digests make them equivalent.
        normalized = normalize_pair(expected, actual, causes)
        if normalized is not None and not normalized.equal:
            notes.append(
                "still different after normalizing "
                + ", ".join(normalized.rules)
                + ": not equivalent"
            )
    differences = diag.differences[:MAX_DIFFERENCES]
    if len(diag.differences) > MAX_DIFFERENCES:
        omitted = len(diag.differences) - MAX_DIFFERENCES
        notes.append(f"{omitted} further differences omitted from the details")
    run, reports, said = _diffoscope_step(
        expected,
        actual,
        diag,
        report_dir=report_dir,
        diffoscope=diffoscope,
        timeout=diffoscope_timeout,
        limits=limits,
    )
    notes += said
    result = pair(
        identical=False,
        format=diag.format,
        causes=causes,
        differences=differences,
        notes=tuple(notes),
        diffoscope=run,
        reports=tuple(reports),
        seconds=time.monotonic() - start,
        normalized=normalized,
    )
    return result if report_dir is None else _with_summary(result, report_dir)


def _diffoscope_step(
    expected: Path,
    actual: Path,
    diag: Diagnosis,
    *,
    report_dir: Path | None,
    diffoscope: str | None,
    timeout: float,
    limits: InflationLimits,
) -> tuple[DiffoscopeRun | None, list[ReportFile], list[str]]:
    """Run diffoscope when it may (a report directory, caps kept): its run, reports and notes."""
    reports: list[ReportFile] = []
    notes: list[str] = []
    run = None
    over = [d for d in diag.differences if d.kind == "limit"]
    if report_dir is not None and diffoscope is not None and over:
        # diffoscope would extract (and often load) what the caps refused.
        run = DiffoscopeRun(
            "refused",
            None,
            None,
            None,
            0.0,
            f"diffoscope was not run: the {' and the '.join(str(d.side) for d in over)} "
            "artifact exceeds the inflation caps",
        )
        notes.append(str(run.note))
    elif report_dir is not None and diffoscope is not None:
        out = run_diffoscope(
            expected, actual, executable=diffoscope, timeout=timeout, limits=limits
        )
        run = out.run
        if run.note:
            notes.append(run.note)
        for kind, data in (
            ("diffoscope-json", out.json_report),
            ("diffoscope-html", out.html_report),
            ("diffoscope-text", out.text_report),
        ):
            if data is not None:
                reports.append(store_report(report_dir, kind, data))
    elif diffoscope is None:
        notes.append("diffoscope was not requested; format-aware diagnosis only")
    else:
        notes.append("no report directory given; diffoscope was not run")
    return run, reports, notes


def _with_summary(result: Comparison, report_dir: Path) -> Comparison:
    """``result`` with its stored comparison report listed first and its digest recorded."""
    summary = store_report(report_dir, "comparison-json", comparison_report_bytes(result))
    return Comparison(
        **{
            **{f: getattr(result, f) for f in result.__dataclass_fields__},
            "reports": (summary, *result.reports),
            "report_sha256": summary.sha256,
        }
    )


def comparison_report_bytes(result: Comparison) -> bytes:
    """The stored comparison report: the result plus the digests of the other reports.

    Deterministic (sorted keys, no times, no absolute paths) so that the same
    comparison stores the same report under the same digest.
    """
    doc: dict[str, Any] = result.to_json()
    doc.pop("report_sha256")
    doc["type"] = COMPARISON_REPORT_TYPE
    doc["files"] = {"expected": result.expected.name, "actual": result.actual.name}
    doc["reports"] = [{"kind": r.kind, "sha256": r.sha256, "size": r.size} for r in result.reports]
    if doc["diffoscope"] is not None:
        doc["diffoscope"].pop("seconds", None)
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
