"""Compare a published artifact with a rebuilt one and explain the difference.

Public surface (pinned by tests/test_compare_api.py); everything in the
underscore modules is internal. :func:`compare` is the entry point; it returns
a frozen :class:`Comparison` whose ``causes`` (docs/comparison.md) go into the
rebuild attestation together with ``report_sha256``.
"""

from __future__ import annotations

from rebuild.compare._compare import compare, comparison_report_bytes
from rebuild.compare._diffoscope import DEFAULT_DIFFOSCOPE, DEFAULT_TIMEOUT
from rebuild.compare._errors import (
    ArchiveFormatError,
    DiffoscopeError,
    PharFormatError,
    TarFormatError,
    ZipFormatError,
)
from rebuild.compare._html import render_html_report, store_html_report, write_html_report
from rebuild.compare._limits import DEFAULT_LIMITS, InflationLimitError, InflationLimits
from rebuild.compare._model import Comparison, Difference, DiffoscopeRun, ReportFile
from rebuild.compare._vocab import DESCRIPTIONS, describe

__all__ = [
    "DEFAULT_DIFFOSCOPE",
    "DEFAULT_LIMITS",
    "DEFAULT_TIMEOUT",
    "DESCRIPTIONS",
    "ArchiveFormatError",
    "Comparison",
    "Difference",
    "DiffoscopeError",
    "DiffoscopeRun",
    "InflationLimitError",
    "InflationLimits",
    "PharFormatError",
    "ReportFile",
    "TarFormatError",
    "ZipFormatError",
    "compare",
    "comparison_report_bytes",
    "describe",
    "render_html_report",
    "store_html_report",
    "write_html_report",
]
