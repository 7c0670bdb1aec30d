"""Combine the coverage data of every measured process and print the figures.

Run by scripts/test after pytest. Each Python process the tests started
(pytest itself, the CLI, log and witness servers and their front-ends) left a
``.coverage.*`` file; they are merged into ``.coverage``. Prints line and
branch coverage of rebuild/ and verify/ and exits 1 when the total (lines and
branches together, as ``coverage report`` counts it) is below the floor:
``fail_under`` in pyproject.toml's ``[tool.coverage.report]``. With
``--report-only`` (scripts/test passes it when only some tests ran) the floor
is shown, not enforced. ``coverage report -m`` or ``coverage html``
afterwards show the lines no test reaches.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import tempfile
from pathlib import Path

import coverage
from coverage.data import CoverageData
from coverage.exceptions import CoverageException


def _pct(hit: int, total: int) -> str:
    return f"{100.0 * hit / total:5.1f}% ({hit}/{total})" if total else "  n/a"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report-only", action="store_true", help="print, do not enforce the floor")
    args = ap.parse_args()

    # Processes run as other users write theirs into .coverage-other-users/
    # (tests/updaterutil.py).
    found = glob.glob(".coverage.*") + glob.glob(".coverage-other-users/.coverage.*")
    parts = []
    with_code = unreadable = 0
    for part in (p for p in found if not p.endswith(".json")):
        data = CoverageData(basename=part)
        try:
            data.read()
        except CoverageException:
            # A process the tests SIGKILL (the crash tests do, at chosen
            # points) can die while coverage creates its file: it measured
            # nothing that can be read.
            unreadable += 1
            Path(part).unlink()
            continue
        parts.append(part)
        with_code += bool(data.measured_files())
    cov = coverage.Coverage()
    if parts:
        cov.combine(parts, keep=False)
        cov.save()
    else:
        cov.load()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "coverage.json"
        cov.json_report(outfile=str(out))
        report = json.loads(out.read_text())

    packages: dict[str, list[int]] = {}
    for name, f in report["files"].items():
        s = f["summary"]
        row = packages.setdefault(Path(name).parts[0] + "/", [0, 0, 0, 0])
        row[0] += s["covered_lines"]
        row[1] += s["num_statements"]
        row[2] += s["covered_branches"]
        row[3] += s["num_branches"]
    t = report["totals"]
    print(f"coverage: {len(parts)} processes measured, {with_code} of them ran rebuild/verify code")
    if unreadable:
        print(f"coverage: {unreadable} data file(s) left unreadable by a killed process, skipped")
    print(f"{'':10} {'lines':>22} {'branches':>22}")
    for name, (lh, lt, bh, bt) in sorted(packages.items()):
        print(f"{name:10} {_pct(lh, lt):>22} {_pct(bh, bt):>22}")
    lines = _pct(t["covered_lines"], t["num_statements"])
    branches = _pct(t["covered_branches"], t["num_branches"])
    print(f"{'total':10} {lines:>22} {branches:>22}")
    total = float(t["percent_covered"])
    floor = cov.get_option("report:fail_under")
    assert isinstance(floor, int | float)
    checked = "not enforced: only some tests ran" if args.report_only else "enforced"
    print(f"coverage: {total:.1f}% of lines and branches together; floor {floor:g}% ({checked})")
    if total < floor and not args.report_only:
        print(
            f"coverage: {total:.1f}% is below the floor of {floor:g}% (pyproject.toml fail_under)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
