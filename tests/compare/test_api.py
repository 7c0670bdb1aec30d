"""Pin the public surface of rebuild.compare: the engine and the CLI depend on it."""

from __future__ import annotations

import dataclasses

import rebuild.compare as api
from rebuild.compare._model import KINDS


def test_public_names_are_pinned() -> None:
    assert sorted(api.__all__) == sorted(
        [
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
    )


def test_comparison_is_frozen_with_the_agreed_fields() -> None:
    fields = {f.name for f in dataclasses.fields(api.Comparison)}
    assert {
        "identical",
        "expected_sha256",
        "actual_sha256",
        "causes",
        "differences",
        "reports",
        "report_sha256",
        "notes",
    } <= fields
    assert api.Comparison.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_every_difference_kind_has_a_description() -> None:
    assert set(api.DESCRIPTIONS) == set(KINDS)


def test_parse_errors_are_input_errors() -> None:
    from rebuild.errors import InputError

    for cls in (api.ZipFormatError, api.PharFormatError, api.TarFormatError):
        assert issubclass(cls, api.ArchiveFormatError) and issubclass(cls, InputError)
