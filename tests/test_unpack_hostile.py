"""Hostile sdists and wheels: every escape route is refused, nothing is left behind."""

from __future__ import annotations

import io
import os
import re
import tarfile
import zipfile
from pathlib import Path

import pytest

from rebuild.errors import InputError
from rebuild.sources.unpack import UnpackLimits, unpack_tar, unpack_zip


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(
    name: str, data: bytes, mtime: int = 1_700_000_000, mode: int = 0o644
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = mtime
    info.mode = mode
    return info, data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def test_well_formed_sdist_unpacks_with_mtimes_and_modes(tmp_path: Path) -> None:
    arc = _tar(
        tmp_path / "ok.tar.gz",
        [
            _file("pkg-1.0/pyproject.toml", b"[build-system]\n", mtime=1_700_000_000),
            _file("pkg-1.0/run.sh", b"#!/bin/sh\n", mtime=1_700_000_010, mode=0o4755),
            _link("pkg-1.0/README", "pyproject.toml"),
        ],
    )
    res = unpack_tar(arc, tmp_path / "out")
    assert res.members == 3
    assert res.max_mtime == 1_700_000_010
    run = tmp_path / "out" / "pkg-1.0" / "run.sh"
    assert int(run.stat().st_mtime) == 1_700_000_010
    assert run.stat().st_mode & 0o7777 == 0o755  # setuid dropped, exec kept
    assert (tmp_path / "out" / "pkg-1.0" / "README").read_bytes() == b"[build-system]\n"


@pytest.mark.parametrize(
    ("label", "members", "refusal"),
    [
        ("absolute path", [_file("/etc/evil", b"x")], "'/etc/evil' has an absolute path"),
        ("dot-dot traversal", [_file("pkg/../../evil", b"x")], "escapes the destination"),
        (
            "symlink to absolute path",
            [_link("pkg/l", "/etc/passwd")],
            "link 'pkg/l' points to an absolute path",
        ),
        (
            "symlink climbing out",
            [_link("pkg/l", "../../etc/passwd")],
            "link 'pkg/l' points outside the archive",
        ),
        (
            "hard link",
            [_file("pkg/a", b"x"), _link("pkg/b", "pkg/a", tarfile.LNKTYPE)],
            "'pkg/b' is a hard link",
        ),
        ("character device", [_link("pkg/dev", "", tarfile.CHRTYPE)], "'pkg/dev' is a device"),
        ("fifo", [_link("pkg/fifo", "", tarfile.FIFOTYPE)], "'pkg/fifo' is a device, FIFO"),
    ],
)
def test_sdist_escape_routes_are_refused(
    tmp_path: Path,
    label: str,
    members: list[tuple[tarfile.TarInfo, bytes | None]],
    refusal: str,
) -> None:
    arc = _tar(tmp_path / "evil.tar.gz", members)
    with pytest.raises(InputError, match=re.escape(refusal)):
        unpack_tar(arc, tmp_path / "out")
    assert not (tmp_path / "evil").exists()
    assert not list((tmp_path / "out").rglob("*")) if (tmp_path / "out").exists() else True


def test_symlink_chain_through_an_inner_link_is_refused(tmp_path: Path) -> None:
    """d -> . makes d/x -> ../y look inside lexically while really pointing out."""
    arc = _tar(
        tmp_path / "chain.tar.gz",
        [_link("d", "."), _link("d/x", "../outside-secret"), _link("pyproject.toml", "d/x")],
    )
    with pytest.raises(InputError, match="outside"):
        unpack_tar(arc, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_write_through_symlinked_directory_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    arc = _tar(
        tmp_path / "via.tar.gz",
        [_link("d", "."), _link("d/up", ".."), _file("d/up/owned", b"pwned")],
    )
    with pytest.raises(InputError, match="would be written outside the destination via a link"):
        unpack_tar(arc, tmp_path / "out")
    assert not (tmp_path / "owned").exists()


def test_tar_bomb_over_size_cap_is_refused(tmp_path: Path) -> None:
    arc = _tar(tmp_path / "big.tar.gz", [_file("pkg/zeros", b"\0" * 200_000)])
    with pytest.raises(InputError, match="bytes"):
        unpack_tar(arc, tmp_path / "out", UnpackLimits(max_total_bytes=100_000))


def test_member_count_cap_is_enforced(tmp_path: Path) -> None:
    arc = _tar(tmp_path / "many.tar.gz", [_file(f"pkg/f{i}", b"x") for i in range(20)])
    with pytest.raises(InputError, match="members"):
        unpack_tar(arc, tmp_path / "out", UnpackLimits(max_members=10))


def test_zip_bomb_compression_ratio_is_refused(tmp_path: Path) -> None:
    arc = tmp_path / "bomb.whl"
    with zipfile.ZipFile(arc, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pkg/zeros", b"\0" * (5 * 1024 * 1024))
    with pytest.raises(InputError, match="zip bomb"):
        unpack_zip(arc, tmp_path / "out")


def test_zip_traversal_and_symlink_members_are_refused(tmp_path: Path) -> None:
    trav = tmp_path / "trav.whl"
    with zipfile.ZipFile(trav, "w") as zf:
        zf.writestr("../evil.py", b"x")
    with pytest.raises(InputError, match="escapes"):
        unpack_zip(trav, tmp_path / "o1")
    link = tmp_path / "link.whl"
    with zipfile.ZipFile(link, "w") as zf:
        info = zipfile.ZipInfo("pkg/l")
        info.external_attr = (0o120777) << 16
        zf.writestr(info, b"/etc/passwd")
    with pytest.raises(InputError, match="link"):
        unpack_zip(link, tmp_path / "o2")
    assert not os.path.lexists(tmp_path / "o2" / "pkg" / "l")
