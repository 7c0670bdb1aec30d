"""The diffoscope seam against the real /usr/bin/diffoscope, and its failure modes.

Missing diffoscope is tested with a real missing binary (a path that does not
exist), and the timeout with a real diffoscope given less time than it needs
to start. Only the crash uses a stand-in (the real one crashes only sometimes;
that test's docstring says how).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from rebuild.compare import DEFAULT_DIFFOSCOPE, compare
from tests.compare.builders import write_wheel

needs_diffoscope = pytest.mark.skipif(
    not Path(DEFAULT_DIFFOSCOPE).exists(), reason="diffoscope is not installed (scripts/setup)"
)


def _pair(tmp_path: Path) -> tuple[Path, Path]:
    a = write_wheel(tmp_path / "a" / "demo-1.0-py3-none-any.whl")
    b = write_wheel(tmp_path / "b" / "demo-1.0-py3-none-any.whl", date_time=(2024, 1, 1, 0, 0, 0))
    return a, b


@needs_diffoscope
def test_real_diffoscope_reports_are_stored_under_their_sha256(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    result = compare(a, b, report_dir=tmp_path / "r", diffoscope_timeout=120)
    assert result.causes == ("timestamps",)
    assert result.diffoscope is not None and result.diffoscope.status == "ran"
    assert result.diffoscope.exit_code == 1 and result.diffoscope.json_format_version == 1
    kinds = sorted(r.kind for r in result.reports)
    assert kinds == ["comparison-json", "diffoscope-html", "diffoscope-json", "diffoscope-text"]
    for r in result.reports:
        data = r.path.read_bytes()
        assert r.path.name.split(".")[0] == r.sha256 == hashlib.sha256(data).hexdigest()
    doc = json.loads(result.report("diffoscope-json").path.read_bytes())  # type: ignore[union-attr]
    assert doc["diffoscope-json-version"] == 1
    # The attested digest is the comparison report, which names all the others.
    summary = result.report("comparison-json")
    assert summary is not None and summary.sha256 == result.report_sha256
    named = {r["sha256"] for r in json.loads(summary.path.read_bytes())["reports"]}
    assert named == {r.sha256 for r in result.reports if r.kind != "comparison-json"}


def test_missing_diffoscope_degrades_to_diagnosis_with_a_note(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    result = compare(a, b, report_dir=tmp_path / "r", diffoscope=str(tmp_path / "no-diffoscope"))
    assert result.causes == ("timestamps",)
    assert result.diffoscope is not None and result.diffoscope.status == "missing"
    assert any("diffoscope is not available" in n for n in result.notes)
    assert [r.kind for r in result.reports] == ["comparison-json"]


@needs_diffoscope
def test_diffoscope_that_overruns_its_timeout_is_killed_and_noted(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    result = compare(a, b, report_dir=tmp_path / "r", diffoscope_timeout=0.05)
    assert result.diffoscope is not None and result.diffoscope.status == "timeout"
    assert result.causes == ("timestamps",)
    assert any("did not finish" in n for n in result.notes)


def test_same_comparison_stores_the_same_report_digest(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    first = compare(a, b, report_dir=tmp_path / "r1", diffoscope=None)
    second = compare(a, b, report_dir=tmp_path / "r2", diffoscope=None)
    assert first.report_sha256 is not None
    assert first.report_sha256 == second.report_sha256


@needs_diffoscope
def test_diffoscope_lacking_zipinfo_is_noted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real missing tool: diffoscope runs with a PATH that holds only diff(1)."""
    import shutil

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    diff = shutil.which("diff")
    assert diff is not None
    (bin_dir / "diff").symlink_to(diff)
    monkeypatch.setenv("PATH", str(bin_dir))
    a, b = _pair(tmp_path)
    result = compare(a, b, report_dir=tmp_path / "r", diffoscope_timeout=120)
    assert result.diffoscope is not None and result.diffoscope.status == "ran"
    assert any("lacked tools" in n and "zipinfo" in n for n in result.notes)
    assert result.causes == ("timestamps",)


def test_diffoscope_that_crashes_is_noted_and_diagnosis_still_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A diffoscope that crashes is a note, not trouble; the diagnosis still answers.

    A stand-in: the real diffoscope 240 without diff(1) crashes only in some
    runs (in others it finishes with exit 1), so a script named diffoscope,
    first on PATH, answers ``--version`` as diffoscope does and then dies as
    its crash does (a traceback on stderr, exit 2, no report) every time. The
    real diffoscope's clean finish is proven by the tests above that run it.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "diffoscope"
    stand_in.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = --version ]; then echo "diffoscope 240"; exit 0; fi\n'
        "echo 'Traceback (most recent call last):' >&2\n"
        "echo \"FileNotFoundError: [Errno 2] No such file or directory: 'diff'\" >&2\n"
        "exit 2\n"
    )
    stand_in.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    a, b = _pair(tmp_path)
    result = compare(a, b, report_dir=tmp_path / "r", diffoscope="diffoscope")
    assert result.diffoscope is not None and result.diffoscope.status == "failed"
    assert result.diffoscope.version == "240" and result.diffoscope.exit_code == 2
    assert result.notes == (
        "diffoscope failed (exit 2, no report written): "
        "FileNotFoundError: [Errno 2] No such file or directory: 'diff'",
    )
    assert [r.kind for r in result.reports] == ["comparison-json"]
    assert result.causes == ("timestamps",)
