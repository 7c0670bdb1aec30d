"""Compare a published artifact with a rebuilt one and explain the difference.

Public surface (pinned by tests/test_compare_api.py); everything in the
underscore modules is internal. :func:`compare` is the entry point; it returns
a frozen :class:`Comparison` whose ``causes`` (docs/comparison.md) go into the
rebuild attestation together with ``report_sha256``.

Each public name is loaded from its module on first use (PEP 562): the CLI
builds its parser with ``DEFAULT_TIMEOUT`` and ``DEFAULT_DIFFOSCOPE`` without
loading the comparators (docs/architecture.md, "CLI start-up").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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

# The module each public name lives in (the imports above, for run time).
_HOME = {
    "compare": "_compare",
    "comparison_report_bytes": "_compare",
    "DEFAULT_DIFFOSCOPE": "_diffoscope",
    "DEFAULT_TIMEOUT": "_diffoscope",
    "ArchiveFormatError": "_errors",
    "DiffoscopeError": "_errors",
    "PharFormatError": "_errors",
    "TarFormatError": "_errors",
    "ZipFormatError": "_errors",
    "render_html_report": "_html",
    "store_html_report": "_html",
    "write_html_report": "_html",
    "DEFAULT_LIMITS": "_limits",
    "InflationLimitError": "_limits",
    "InflationLimits": "_limits",
    "Comparison": "_model",
    "Difference": "_model",
    "DiffoscopeRun": "_model",
    "ReportFile": "_model",
    "DESCRIPTIONS": "_vocab",
    "describe": "_vocab",
}


def __getattr__(name: str) -> object:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value
