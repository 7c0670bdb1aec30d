"""Acceptance: wheels and phars that differ in exactly one way are classified exactly.

Every fixture is built here in Python (zipfile for wheels, the test PHAR
writer for phars); each test asserts the complete causes list.
"""

from __future__ import annotations

import dataclasses
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from rebuild.compare import compare
from tests.compare.builders import DIST, FILES, record_for, write_wheel
from tests.compare.phar_writer import DEMO_FILES, PharFile, build_phar

# --- wheels -----------------------------------------------------------------

WHEEL_CASES: dict[str, tuple[dict[str, object], tuple[str, ...]]] = {
    "timestamps_only": ({"date_time": (2024, 5, 6, 7, 8, 10)}, ("timestamps",)),
    "umask_permissions_only": ({"mode": 0o600}, ("permissions",)),
    "stored_instead_of_deflated": (
        {"compression": zipfile.ZIP_STORED, "compresslevel": None},
        ("compression",),
    ),
    "deflate_level_only": ({"compresslevel": 1}, ("compression",)),
    "bzip2_instead_of_deflate": (
        {"compression": zipfile.ZIP_BZIP2, "compresslevel": None},
        ("compression",),
    ),
    "file_order_only": ({"order": sorted(FILES, reverse=True)}, ("order",)),
    "one_file_trojaned": (
        {"files": {**FILES, "demo/mod.py": b"import os\nos.system('id')\n"}},
        ("content:demo/mod.py",),
    ),
    "file_added": (
        {"files": {**FILES, "demo/extra.py": b"x = 1\n"}},
        ("added:demo/extra.py",),
    ),
    "file_removed": (
        {"files": {k: v for k, v in FILES.items() if k != "demo/data.txt"}},
        ("removed:demo/data.txt",),
    ),
}


@pytest.mark.parametrize("case", sorted(WHEEL_CASES))
def test_wheel_difference_is_classified_exactly(tmp_path: Path, case: str) -> None:
    options, causes = WHEEL_CASES[case]
    a = write_wheel(tmp_path / "a" / "demo-1.0-py3-none-any.whl")
    b = write_wheel(tmp_path / "b" / "demo-1.0-py3-none-any.whl", **options)  # type: ignore[arg-type]
    result = compare(a, b)
    assert not result.identical
    assert result.format == "wheel"
    assert result.causes == causes


def test_wheel_record_difference_caused_by_content_is_not_reported_twice(tmp_path: Path) -> None:
    a = write_wheel(tmp_path / "a.whl")
    b = write_wheel(tmp_path / "b.whl", files={**FILES, "demo/mod.py": b"changed\n"})
    result = compare(a, b)
    record = [d for d in result.differences if d.path == f"{DIST}/RECORD"]
    assert len(record) == 1 and record[0].explained_by_others
    assert result.causes == ("content:demo/mod.py",)


def test_wheel_whose_record_lies_about_a_hash_is_record_invalid(tmp_path: Path) -> None:
    a = write_wheel(tmp_path / "a.whl")
    # The attacker changes a file and leaves RECORD claiming the original hash.
    evil = {**FILES, "demo/mod.py": b"import os\n"}
    b = write_wheel(tmp_path / "b.whl", files=evil, record=record_for(FILES, sorted(FILES)))
    result = compare(a, b)
    assert result.causes == ("content:demo/mod.py", "record-invalid:actual")


def test_wheel_record_with_an_extra_row_is_a_record_content_difference(tmp_path: Path) -> None:
    a = write_wheel(tmp_path / "a.whl")
    rec = record_for(FILES, sorted(FILES)) + b"demo/ghost.py,sha256=AAAA,1\n"
    b = write_wheel(tmp_path / "b.whl", record=rec)
    result = compare(a, b)
    assert result.causes == (f"content:{DIST}/RECORD", "record-invalid:actual")


def test_identical_wheels_take_the_fast_path(tmp_path: Path) -> None:
    a = write_wheel(tmp_path / "a.whl")
    b = write_wheel(tmp_path / "b.whl")
    result = compare(a, b, report_dir=tmp_path / "reports")
    assert result.identical and result.causes == () and result.differences == ()
    assert result.diffoscope is None and result.reports == () and result.report_sha256 is None
    assert not (tmp_path / "reports").exists()


def test_zip_comment_is_metadata(tmp_path: Path) -> None:
    a = write_wheel(tmp_path / "a.whl")
    b = write_wheel(tmp_path / "b.whl")
    with zipfile.ZipFile(b, "a") as z:
        z.comment = b"built on host 42"
    assert compare(a, b).causes == ("metadata",)


def test_unix_extra_timestamp_only_is_timestamps(tmp_path: Path) -> None:
    """Info-ZIP's UT extra field carries the real mtime even when DOS time matches."""
    paths = []
    for n, mtime in (("a.zip", 1_600_000_000), ("b.zip", 1_700_000_000)):
        with zipfile.ZipFile(tmp_path / n, "w") as z:
            info = zipfile.ZipInfo("f.txt", (2020, 1, 1, 0, 0, 0))
            info.extra = b"UT\x05\x00\x01" + mtime.to_bytes(4, "little")
            z.writestr(info, b"same")
        paths.append(tmp_path / n)
    assert compare(paths[0], paths[1]).causes == ("timestamps",)


# --- native phars -----------------------------------------------------------


def _phar(path: Path, **kw: object) -> Path:
    files = kw.pop("files", DEMO_FILES)
    path.write_bytes(build_phar(files, **kw))  # type: ignore[arg-type]
    return path


def _each(files: tuple[PharFile, ...], **changes: object) -> tuple[PharFile, ...]:
    return tuple(dataclasses.replace(f, **changes) for f in files)  # type: ignore[arg-type]


PHAR_CASES: dict[str, tuple[dict[str, object], tuple[str, ...]]] = {
    "timestamps_only": ({"files": _each(DEMO_FILES, timestamp=1_700_000_000)}, ("timestamps",)),
    "permissions_only": ({"files": _each(DEMO_FILES, perms=0o600)}, ("permissions",)),
    "gz_compression_only": ({"files": _each(DEMO_FILES, compression="gz")}, ("compression",)),
    "bz2_compression_only": ({"files": _each(DEMO_FILES, compression="bz2")}, ("compression",)),
    "order_only": ({"files": tuple(reversed(DEMO_FILES))}, ("order",)),
    "one_file_trojaned": (
        {
            "files": (
                DEMO_FILES[0],
                dataclasses.replace(DEMO_FILES[1], data=b"<?php system($_GET['c']);\n"),
                DEMO_FILES[2],
            )
        },
        ("content:src/App.php",),
    ),
    "alias_only": ({"alias": b"other.phar"}, ("alias",)),
    "stub_only": ({"stub": b"<?php __HALT_COMPILER(); ?>\r\n"}, ("stub",)),
    "signature_algorithm_only": ({"signature": "sha1"}, ("signature",)),
    "unsigned_vs_signed": ({"signature": None}, ("signature",)),
    "phar_metadata_only": ({"metadata": b'a:1:{s:1:"k";s:1:"v";}'}, ("metadata",)),
    "entry_metadata_only": (
        {"files": (dataclasses.replace(DEMO_FILES[0], metadata=b"i:1;"), *DEMO_FILES[1:])},
        ("metadata",),
    ),
    "api_version_only": ({"api": b"\x11\x00"}, ("manifest",)),
    "file_added": (
        {"files": (*DEMO_FILES, PharFile("extra.php", b"<?php\n"))},
        ("added:extra.php",),
    ),
}


@pytest.mark.parametrize("case", sorted(PHAR_CASES))
def test_phar_difference_is_classified_exactly(tmp_path: Path, case: str) -> None:
    options, causes = PHAR_CASES[case]
    a = _phar(tmp_path / "a.phar")
    b = _phar(tmp_path / "b.phar", **options)
    result = compare(a, b)
    assert result.format == "phar"
    assert result.causes == causes


def test_phar_signature_changed_by_other_differences_is_explained(tmp_path: Path) -> None:
    a = _phar(tmp_path / "a.phar")
    b = _phar(tmp_path / "b.phar", alias=b"x.phar")
    sig = [d for d in compare(a, b).differences if d.kind == "signature"]
    assert len(sig) == 1 and sig[0].explained_by_others


def test_phar_with_tampered_signature_is_signature_invalid(tmp_path: Path) -> None:
    a = _phar(tmp_path / "a.phar")
    data = bytearray(build_phar(DEMO_FILES))
    data[-9] ^= 0x01  # last byte of the SHA-256 value
    b = tmp_path / "b.phar"
    b.write_bytes(bytes(data))
    assert compare(a, b).causes == ("signature-invalid:actual",)


def test_phar_openssl_signature_from_another_key_is_signature(tmp_path: Path) -> None:
    a = _phar(tmp_path / "a.phar", signature=None, openssl_signature=b"\x01" * 256)
    b = _phar(tmp_path / "b.phar", signature=None, openssl_signature=b"\x02" * 256)
    assert compare(a, b).causes == ("signature",)


# --- tar- and zip-based phars -----------------------------------------------


def _tar_phar(path: Path, *, mtime: int = 1_600_000_000, alias: bytes = b"demo.phar") -> Path:
    members = {
        ".phar/stub.php": b"<?php __HALT_COMPILER(); ?>",
        ".phar/alias.txt": alias,
        **{f.name: f.data for f in DEMO_FILES},
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), mtime, 0o644
            t.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return path


def _zip_phar(
    path: Path, *, date: tuple[int, ...] = (2020, 1, 1, 0, 0, 0), stub: bytes = b""
) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(zipfile.ZipInfo(".phar/stub.php", date), stub or b"<?php __HALT_COMPILER(); ?>")  # type: ignore[arg-type]
        for f in DEMO_FILES:
            z.writestr(zipfile.ZipInfo(f.name, date), f.data)  # type: ignore[arg-type]
    return path


def test_tar_based_phar_timestamps_and_alias_are_classified(tmp_path: Path) -> None:
    a = _tar_phar(tmp_path / "a.phar.tar")
    result = compare(a, _tar_phar(tmp_path / "b.phar.tar", mtime=1_700_000_000))
    assert (result.format, result.causes) == ("phar-tar", ("timestamps",))
    result = compare(a, _tar_phar(tmp_path / "c.phar.tar", alias=b"other"))
    assert result.causes == ("alias",)


def test_zip_based_phar_stub_and_timestamps_are_classified(tmp_path: Path) -> None:
    a = _zip_phar(tmp_path / "a.phar.zip")
    result = compare(a, _zip_phar(tmp_path / "b.phar.zip", date=(2021, 1, 1, 0, 0, 0)))
    assert (result.format, result.causes) == ("phar-zip", ("timestamps",))
    result = compare(
        a, _zip_phar(tmp_path / "c.phar.zip", stub=b"<?php echo 1; __HALT_COMPILER();")
    )
    assert result.causes == ("stub",)


# --- whole-file compression -------------------------------------------------


def _gz(path: Path, payload: bytes, *, mtime: int = 0, level: int = 9) -> Path:
    import gzip

    with (
        path.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=mtime, compresslevel=level, filename="") as g,
    ):
        g.write(payload)
    return path


def test_gzipped_phar_differing_only_in_gzip_mtime_is_timestamps(tmp_path: Path) -> None:
    payload = build_phar(DEMO_FILES)
    a = _gz(tmp_path / "a.phar.gz", payload)
    b = _gz(tmp_path / "b.phar.gz", payload, mtime=1_700_000_000)
    result = compare(a, b)
    assert (result.format, result.causes) == ("phar.gz", ("timestamps",))


def test_gzipped_phar_recompressed_at_another_level_is_compression(tmp_path: Path) -> None:
    payload = build_phar(DEMO_FILES) * 3
    a = _gz(tmp_path / "a.phar.gz", payload, level=9)
    b = _gz(tmp_path / "b.phar.gz", payload, level=1)
    assert compare(a, b).causes == ("compression",)


def test_gzipped_phar_with_a_changed_entry_is_diagnosed_inside(tmp_path: Path) -> None:
    a = _gz(tmp_path / "a.phar.gz", build_phar(DEMO_FILES))
    changed = (
        DEMO_FILES[0],
        dataclasses.replace(DEMO_FILES[1], data=b"<?php evil();\n"),
        DEMO_FILES[2],
    )
    b = _gz(tmp_path / "b.phar.gz", build_phar(changed))
    assert compare(a, b).causes == ("content:src/App.php",)


def test_many_timestamp_differences_keep_details_bounded(tmp_path: Path) -> None:
    from rebuild.compare import _compare

    files = {f"pkg/m{i:05d}.py": b"x" for i in range(_compare.MAX_DIFFERENCES + 50)}
    a = write_wheel(tmp_path / "a.whl", files=files)
    b = write_wheel(tmp_path / "b.whl", files=files, date_time=(2024, 1, 1, 0, 0, 0))
    result = compare(a, b)
    assert result.causes == ("timestamps",)
    assert len(result.differences) == _compare.MAX_DIFFERENCES
    assert any("further differences omitted" in n for n in result.notes)
