"""``rebuild diff`` end to end through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rebuild.cli import main
from tests.compare.builders import FILES, write_wheel


def test_diff_json_has_exactly_the_causes_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_wheel(tmp_path / "a.whl")
    b = write_wheel(tmp_path / "b.whl", mode=0o600, files={**FILES, "demo/mod.py": b"x\n"})
    code = main(["diff", str(a), str(b), "--json", "--no-diffoscope"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1
    assert doc["causes"] == ["content:demo/mod.py", "permissions"]
    assert doc["identical"] is False
    assert set(doc["sha256s"]) == {"expected", "actual"}


def test_diff_of_identical_files_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_wheel(tmp_path / "a.whl")
    assert main(["diff", str(a), str(a), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["causes"] == []


def test_diff_of_a_missing_file_is_trouble_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_wheel(tmp_path / "a.whl")
    assert main(["diff", str(a), str(tmp_path / "nope.whl"), "--json"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["error"]["kind"] == "InputError" and "nope.whl" in doc["error"]["message"]


def test_diff_human_output_has_a_causes_table_and_report_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_wheel(tmp_path / "a.whl")
    b = write_wheel(tmp_path / "b.whl", date_time=(2024, 1, 1, 0, 0, 0))
    code = main(["diff", str(a), str(b), "--report-dir", str(tmp_path / "r"), "--no-diffoscope"])
    out = capsys.readouterr().out
    assert code == 1
    assert "Causes" in out and "timestamps" in out
    assert "summary-html" in out and "comparison-json" in out


def test_truncated_wheel_is_a_format_difference_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_wheel(tmp_path / "a.whl")
    b = tmp_path / "b.whl"
    b.write_bytes(a.read_bytes()[:-30])
    assert main(["diff", str(a), str(b), "--json", "--no-diffoscope"]) == 1
    assert json.loads(capsys.readouterr().out)["causes"] == ["format:actual"]


def test_diff_human_output_names_the_entries_of_each_cause(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cause with many entries names the first few, then how many more."""
    from tests.compare.builders import FILES

    many = {**FILES, **{f"pkg/data/f{i}.txt": b"x" for i in range(6)}}
    a = write_wheel(tmp_path / "a.whl", files=many)
    b = write_wheel(tmp_path / "b.whl", files=many, date_time=(2024, 1, 1, 0, 0, 0))
    assert main(["diff", str(a), str(b), "--no-diffoscope"]) == 1
    lines = capsys.readouterr().out.splitlines()
    listed = [line for line in lines if line.startswith("  timestamps: ")]
    assert len(listed) == 1, lines
    shown, _, more = listed[0].removeprefix("  timestamps: ").partition(" (+")
    assert len(shown.split(", ")) == 3
    assert set(shown.split(", ")) <= set(many) | {"demo-1.0.dist-info/RECORD"}
    assert more == f"{len(many) + 1 - 3} more)"
