"""Decompression bombs: refused before they are inflated, by the diagnosis and diffoscope.

The bombs are real archives (tests/compare/bombs.py): valid zips whose
entries truly inflate to hundreds of MiB, which zipfile, unzip and
diffoscope all accept. Before the caps, eight bzip2 entries of 1 GiB took
the diagnosis over two minutes, and diffoscope on a 1.6 KB zip holding one
2 GiB entry used 4 GiB of disk and 15 GiB of memory (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from rebuild.cli import main
from rebuild.compare import InflationLimits, compare
from tests.compare.bombs import MiB, bzip2_bomb, deflate_bomb, write_zip
from tests.compare.builders import write_wheel


def test_eight_bzip2_entries_that_inflate_to_2_gib_are_refused_not_inflated(
    tmp_path: Path,
) -> None:
    a = bzip2_bomb(tmp_path / "a.zip", 256, 8, fill=0)
    b = bzip2_bomb(tmp_path / "b.zip", 256, 8, fill=1)
    assert a.stat().st_size < 8 << 10
    tracemalloc.start()
    try:
        result = compare(a, b, diffoscope=None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.causes == ("limit:actual", "limit:expected")
    assert "more than 200x" in result.differences[0].detail
    assert peak < 16 * MiB


def test_total_inflated_size_is_capped_even_at_a_plausible_ratio(tmp_path: Path) -> None:
    """A 64 MiB entry (1000x, deflate's ceiling) passes a generous ratio but not
    a total cap of 32 MiB."""
    a = deflate_bomb(tmp_path / "a.zip", 64, fill=0)
    b = deflate_bomb(tmp_path / "b.zip", 64, fill=1)
    limits = InflationLimits(max_inflated=32 * MiB, max_ratio=10_000)
    result = compare(a, b, diffoscope=None, limits=limits)
    assert result.causes == ("limit:actual", "limit:expected")
    assert "more than 33554432 bytes" in result.differences[0].detail
    # Under the caps the same pair is diagnosed entry by entry.
    ok = compare(a, b, diffoscope=None, limits=InflationLimits(max_ratio=10_000))
    assert ok.causes == ("content:bomb.bin",)


def test_one_side_over_the_caps_is_named_and_the_other_still_parsed(tmp_path: Path) -> None:
    a = write_zip(tmp_path / "a.zip", [])  # an empty zip: nothing to inflate
    b = bzip2_bomb(tmp_path / "b.zip", 256, 1)
    result = compare(a, b, diffoscope=None)
    assert result.causes == ("limit:actual",)


def test_gzip_wrapped_bomb_is_cut_off_at_the_ratio(tmp_path: Path) -> None:
    """A .tar.gz declares nothing: its payload is streamed and stopped at the caps."""
    import gzip

    for name, fill in (("a.tar.gz", b"\0"), ("b.tar.gz", b"\1")):
        with gzip.open(tmp_path / name, "wb", compresslevel=9) as f:
            for _ in range(64):
                f.write(fill * MiB)
    result = compare(tmp_path / "a.tar.gz", tmp_path / "b.tar.gz", diffoscope=None)
    assert result.causes == ("limit:actual", "limit:expected")


@pytest.mark.slow
def test_rebuild_diff_with_a_report_dir_does_not_give_diffoscope_a_bomb(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = bzip2_bomb(tmp_path / "a.zip", 256, 1, fill=0)
    b = bzip2_bomb(tmp_path / "b.zip", 256, 1, fill=1)
    report = tmp_path / "report"
    code = main(["diff", str(a), str(b), "--json", "--report-dir", str(report)])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1
    assert doc["causes"] == ["limit:actual", "limit:expected"]
    assert doc["diffoscope"]["status"] == "refused"
    assert "inflation caps" in doc["diffoscope"]["note"]
    assert {r["kind"] for r in doc["reports"]} == {"comparison-json", "summary-html"}
    assert sum(p.stat().st_size for p in report.iterdir()) < 1 * MiB


def _nested(path: Path, mib: int, fill: int, count: int = 1) -> Path:
    """An innocent-looking zip that *stores* a zip bomb: nothing to inflate at the
    top level (ratio 1), but diffoscope recurses into the inner zip."""
    inner = path.with_suffix(".inner.zip")
    if count == 1:
        deflate_bomb(inner, mib, fill=fill)
    else:
        from tests.compare.bombs import crc_of, deflate_stream

        stream = deflate_stream(mib, fill)
        write_zip(
            inner,
            [(f"part{i}.bin", 8, stream, mib * MiB, crc_of(mib, fill)) for i in range(count)],
        )
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(zipfile.ZipInfo("inner.zip", (2020, 1, 1, 0, 0, 0)), inner.read_bytes())
    return path


@pytest.mark.slow
def test_diffoscope_cannot_write_a_file_larger_than_the_cap(tmp_path: Path) -> None:
    a = _nested(tmp_path / "a.zip", 128, 0)
    b = _nested(tmp_path / "b.zip", 128, 1)
    limits = InflationLimits(max_inflated=16 * MiB)
    result = compare(a, b, report_dir=tmp_path / "r", limits=limits)
    assert result.causes == ("content:inner.zip",)  # the top level is diagnosed
    run = result.diffoscope
    assert run is not None and run.status == "failed", run
    assert "File too large" in str(run.note) and "files of at most 16777216 bytes" in str(run.note)


@pytest.mark.slow
def test_diffoscope_is_stopped_past_its_disk_cap(tmp_path: Path) -> None:
    """Many files under the file size cap can still fill a disk: the scratch
    directory is measured while diffoscope runs."""
    a = _nested(tmp_path / "a.zip", 3, 0, count=40)
    b = _nested(tmp_path / "b.zip", 3, 1, count=40)
    limits = InflationLimits(max_inflated=8 * MiB, diffoscope_disk=24 * MiB)
    result = compare(a, b, report_dir=tmp_path / "r", limits=limits, diffoscope_timeout=300)
    run = result.diffoscope
    assert run is not None and run.status == "limit", run
    assert "more than 25165824 bytes" in str(run.note)


def test_diffoscope_runs_within_its_memory_cap(tmp_path: Path) -> None:
    """The address-space cap reaches diffoscope: far too little, and it cannot start."""
    a = write_wheel(tmp_path / "a" / "demo-1.0-py3-none-any.whl")
    b = write_wheel(tmp_path / "b" / "demo-1.0-py3-none-any.whl", date_time=(2024, 1, 1, 0, 0, 0))
    limits = InflationLimits(diffoscope_memory=16 * MiB)
    result = compare(a, b, report_dir=tmp_path / "r", limits=limits)
    run = result.diffoscope
    assert run is not None and run.status == "failed", run
    assert "16777216 bytes of address space" in str(run.note)
