"""``equivalent``: identical after fixed normalizations, and nothing that can change what runs.

Every test builds two real wheels with zipfile (tests/compare/builders.py)
that differ in exactly the named way. The decision is the digest of the two
normalized forms, never the list of causes alone.
"""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

from rebuild.compare import compare
from rebuild.compare._normalize import write_normalized
from tests.compare.builders import FILES, write_wheel

WHEEL = "demo-1.0-py3-none-any.whl"
LATER = (2024, 6, 1, 12, 30, 4)


def _pair(tmp_path: Path, **actual: object) -> tuple[Path, Path]:
    a = write_wheel(tmp_path / "a" / WHEEL)
    b = write_wheel(tmp_path / "b" / WHEEL, **actual)  # type: ignore[arg-type]
    return a, b


def test_wheel_rebuilt_at_another_time_is_equivalent_not_identical(tmp_path: Path) -> None:
    a, b = _pair(tmp_path, date_time=LATER)
    r = compare(a, b, diffoscope=None)
    assert not r.identical and r.equivalent
    assert r.causes == ("timestamps",)
    assert r.normalized is not None and r.normalized.rules == ("zip-entry-times",)
    assert r.normalized.expected_sha256 == r.normalized.actual_sha256
    assert r.normalized.expected_sha256 not in (r.expected_sha256, r.actual_sha256)


def test_umask_difference_is_equivalent(tmp_path: Path) -> None:
    a, b = _pair(tmp_path, date_time=LATER, mode=0o664)
    r = compare(a, b, diffoscope=None)
    assert r.equivalent
    assert r.normalized is not None
    assert r.normalized.rules == ("zip-entry-times", "zip-permission-bits")


def test_an_execute_bit_is_never_normalized_away(tmp_path: Path) -> None:
    """Installers apply the x bit: a file that became executable can change what runs."""
    a, b = _pair(tmp_path, mode=0o755)
    r = compare(a, b, diffoscope=None)
    assert r.causes == ("permissions",)
    assert not r.equivalent
    assert r.normalized is not None and not r.normalized.equal


def test_content_difference_behind_timestamps_is_a_mismatch(tmp_path: Path) -> None:
    files = {**FILES, "demo-1.0.dist-info/METADATA": FILES["demo-1.0.dist-info/METADATA"] + b"X\n"}
    a, b = _pair(tmp_path, date_time=LATER, files=files)
    r = compare(a, b, diffoscope=None)
    assert "content:demo-1.0.dist-info/METADATA" in r.causes
    assert not r.equivalent and r.normalized is None


def test_a_record_that_differs_alone_is_a_mismatch(tmp_path: Path) -> None:
    """Same files, same times; RECORD lists a row for a file that is not there."""
    a = write_wheel(tmp_path / "a" / WHEEL)
    rec = zipfile.ZipFile(a).read("demo-1.0.dist-info/RECORD") + b"demo/ghost.py,,\n"
    b = write_wheel(tmp_path / "b" / WHEEL, record=rec, date_time=LATER)
    r = compare(a, b, diffoscope=None)
    assert not r.equivalent
    assert "content:demo-1.0.dist-info/RECORD" in r.causes or any(
        c.startswith("record-invalid") for c in r.causes
    )


def test_reordered_entries_are_not_equivalent_since_record_follows_the_order(
    tmp_path: Path,
) -> None:
    a, b = _pair(tmp_path, order=sorted(FILES, reverse=True))
    r = compare(a, b, diffoscope=None)
    assert "order" in r.causes
    assert not r.equivalent
    assert r.normalized is not None and r.normalized.rules == ("zip-entry-order",)
    assert any("not equivalent" in n for n in r.notes)


def test_reordered_zip_without_record_is_equivalent(tmp_path: Path) -> None:
    def z(path: Path, names: list[str]) -> Path:
        with zipfile.ZipFile(path, "w") as f:
            for n in names:
                f.writestr(zipfile.ZipInfo(n, (2020, 1, 1, 0, 0, 0)), FILES[n])
        return path

    names = sorted(FILES)
    r = compare(z(tmp_path / "a.zip", names), z(tmp_path / "b.zip", names[::-1]), diffoscope=None)
    assert r.causes == ("order",) and r.equivalent


def test_owner_ids_are_not_normalized(tmp_path: Path) -> None:
    """uid/gid extra fields count as permissions in the diagnosis, but no rule removes
    them, not even the time rule that edits the same extra field list."""

    def z(path: Path, uid: int, date: tuple[int, int, int, int, int, int]) -> Path:
        with zipfile.ZipFile(path, "w") as f:
            info = zipfile.ZipInfo("demo/mod.py", date)
            info.extra = struct.pack("<HHBBIBI", 0x7875, 11, 1, 4, uid, 4, uid)
            f.writestr(info, FILES["demo/mod.py"])
        return path

    a = z(tmp_path / "a.zip", 1000, (2020, 1, 1, 0, 0, 0))
    r = compare(a, z(tmp_path / "b.zip", 0, LATER), diffoscope=None)
    assert r.causes == ("permissions", "timestamps")
    assert r.normalized is not None
    assert r.normalized.rules == ("zip-entry-times", "zip-permission-bits")
    assert not r.equivalent
    # The same owner at another time: equivalent, so the owner alone made the difference.
    assert compare(a, z(tmp_path / "c.zip", 1000, LATER), diffoscope=None).equivalent


def test_a_header_difference_hidden_behind_timestamps_is_not_equivalent(tmp_path: Path) -> None:
    """The diagnosis reports only timestamps (the 'disk number start' field is not
    classified), yet the normalized forms differ: the digest decides, not the causes."""
    a, b = _pair(tmp_path, date_time=LATER)
    data = bytearray(b.read_bytes())
    cd = data.find(b"PK\x01\x02")
    struct.pack_into("<H", data, cd + 34, 7)  # disk number start of the first central record
    b.write_bytes(bytes(data))
    r = compare(a, b, diffoscope=None)
    assert r.causes == ("timestamps",)
    assert not r.equivalent


def test_recompressed_entries_are_not_equivalent(tmp_path: Path) -> None:
    a, b = _pair(tmp_path, compression=zipfile.ZIP_STORED, compresslevel=None)
    r = compare(a, b, diffoscope=None)
    assert "compression" in r.causes and not r.equivalent and r.normalized is None


def test_the_normalized_form_is_a_valid_zip_with_the_same_content(tmp_path: Path) -> None:
    _, b = _pair(tmp_path, date_time=LATER, mode=0o664)
    out = io.BytesIO()
    assert write_normalized(b, out)
    with zipfile.ZipFile(io.BytesIO(out.getvalue())) as z, zipfile.ZipFile(b) as orig:
        assert z.testzip() is None
        assert sorted(z.namelist()) == z.namelist()
        for info in z.infolist():
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert info.external_attr >> 16 == 0o100644
            assert z.read(info) == orig.read(info.filename)
