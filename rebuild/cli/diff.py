"""``rebuild diff``: compare two local artifacts and explain the difference.

Exit status: 0 identical, 1 different, 2 trouble (unreadable input, a report
directory that cannot be written). An artifact that cannot be parsed as its
format is a difference (cause ``format:<side>``), not trouble.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rebuild.cli._output import Output
from rebuild.compare import DEFAULT_DIFFOSCOPE, DEFAULT_LIMITS, DEFAULT_TIMEOUT
from rebuild.compare._limits import MiB
from rebuild.errors import UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from rebuild.compare._model import Difference


def register(sub: Any) -> None:
    p = sub.add_parser(
        "diff",
        help="compare two artifacts and explain any difference",
        description=(
            "Compare EXPECTED (the published artifact) with ACTUAL (the rebuild). Equal "
            "sha256 ends the comparison. Otherwise wheels, zips, native/tar/zip phars, tars "
            "and their gzip/bzip2 forms are diagnosed entry by entry, and with --report-dir "
            "diffoscope runs and its JSON/HTML/text reports are stored there, named by their "
            "sha256, with an HTML summary. An artifact over the inflation caps is not "
            "inflated (cause limit:<side>) and diffoscope is not run on it; diffoscope runs "
            "with the same file size cap and a memory cap. Zips that differ only in entry "
            "times, order or permission bits are reported equivalent when normalizing those "
            "makes them byte-identical (still exit 1: not identical). "
            "Exit status: 0 identical, 1 different (equivalent included), 2 trouble."
        ),
    )
    p.add_argument("expected", type=Path, metavar="EXPECTED")
    p.add_argument("actual", type=Path, metavar="ACTUAL")
    p.add_argument("--report-dir", type=Path, metavar="DIR", help="store reports here")
    p.add_argument(
        "--diffoscope",
        default=DEFAULT_DIFFOSCOPE,
        metavar="PATH",
        help=f"diffoscope executable (default {DEFAULT_DIFFOSCOPE}); needs --report-dir",
    )
    p.add_argument("--no-diffoscope", action="store_true", help="diagnosis only")
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"diffoscope wall-clock limit (default {DEFAULT_TIMEOUT:g})",
    )
    p.add_argument(
        "--max-inflated-mib",
        type=int,
        default=DEFAULT_LIMITS.max_inflated // MiB,
        metavar="MIB",
        help="refuse to inflate an artifact whose entries declare more than this many MiB "
        f"in all (default {DEFAULT_LIMITS.max_inflated // MiB}); diffoscope gets the same cap",
    )
    p.add_argument(
        "--max-ratio",
        type=int,
        default=DEFAULT_LIMITS.max_ratio,
        metavar="N",
        help="refuse an entry that inflates more than N times its stored size "
        f"(entries under 1 KiB stored count as 1 KiB; default {DEFAULT_LIMITS.max_ratio})",
    )
    p.add_argument(
        "--diffoscope-memory-mib",
        type=int,
        default=DEFAULT_LIMITS.diffoscope_memory // MiB,
        metavar="MIB",
        help="address space diffoscope and its tools may use "
        f"(default {DEFAULT_LIMITS.diffoscope_memory // MiB})",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_diff, negative_verdict="different")


def cmd_diff(args: argparse.Namespace, out: Output) -> int:
    from rebuild.compare import InflationLimits, compare, store_html_report  # noqa: PLC0415
    from rebuild.compare._vocab import describe  # noqa: PLC0415

    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    if min(args.max_inflated_mib, args.max_ratio, args.diffoscope_memory_mib) <= 0:
        raise UsageError(
            "--max-inflated-mib, --max-ratio and --diffoscope-memory-mib must be positive"
        )
    limits = InflationLimits(
        max_inflated=args.max_inflated_mib * MiB,
        max_ratio=args.max_ratio,
        diffoscope_memory=args.diffoscope_memory_mib * MiB,
    )
    result = compare(
        args.expected,
        args.actual,
        report_dir=args.report_dir,
        diffoscope_timeout=args.timeout,
        diffoscope=None if args.no_diffoscope else args.diffoscope,
        limits=limits,
    )
    summary = None
    if args.report_dir is not None and not result.identical:
        summary = store_html_report(
            args.report_dir, result, {"command": "rebuild diff", "title": None}
        )
    doc = result.to_json()
    doc["verdict"] = "identical" if result.identical else "different"
    if summary is not None:
        doc["reports"].append(summary.to_json())

    def human(c: Console) -> None:
        from rich.table import Table  # noqa: PLC0415
        from rich.text import Text  # noqa: PLC0415

        if result.identical:
            c.print(f"[bold green]identical[/] sha256 {result.expected_sha256}")
            return
        if result.equivalent and result.normalized is not None:
            c.print(
                f"[bold yellow]different, but equivalent[/] ({result.format}): identical after "
                f"normalizing {', '.join(result.normalized.rules)} "
                f"(sha256 {result.normalized.expected_sha256})"
            )
        else:
            c.print(f"[bold red]different[/] ({result.format})")
        table = Table("cause", "meaning", "differences", title="Causes")
        entries: list[str] = []
        for cause in result.causes:
            found = [d for d in result.differences if d.cause() == cause]
            # Entry names are attacker-chosen: never let rich read them as markup.
            table.add_row(Text(cause), Text(describe(cause)), str(len(found)))
            listed = _entries(found)
            if listed:
                entries.append(f"  {cause}: {listed}")
        c.print(table)
        if entries:
            c.print("entries per cause:", markup=False)
            for line in entries:
                c.print(line, markup=False)
        c.print(f"expected sha256 {result.expected_sha256}", markup=False)
        c.print(f"actual   sha256 {result.actual_sha256}", markup=False)
        for note in result.notes:
            c.print(f"note: {note}", markup=False, style="yellow")
        for r in (*result.reports, *([summary] if summary else [])):
            c.print(f"{r.kind}: {r.path}", markup=False)

    out.result(doc, human)
    return 0 if result.identical else 1


SHOWN_ENTRIES = 3


def _entries(found: Sequence[Difference]) -> str:
    """The first few entry paths a cause covers, then how many more."""
    paths = list(dict.fromkeys(d.path for d in found if d.path))
    if not paths:
        return ""
    more = len(paths) - SHOWN_ENTRIES
    return ", ".join(paths[:SHOWN_ENTRIES]) + (f" (+{more} more)" if more > 0 else "")
