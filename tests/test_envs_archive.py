"""rebuild env export / import: a shared environment, and hostile archives refused whole.

The environments here are real definitions and v2 locks (a debootstrap base
and a builder on it) over real ``.deb`` files made by dpkg-deb; no Docker
(the image part is in tests/test_envs_docker.py). Every refusal is checked
to leave the receiving package store exactly as it was.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from rebuild.cli import main
from rebuild.envs.archive import (
    ArchiveRejectedError,
    export_environment,
    import_environment,
)
from rebuild.envs.definition import Lock, LockedPackage, load_definition
from rebuild.envs.store import DigestMismatchError, PackageStore
from rebuild.errors import InputError, NegativeVerdict
from tests.debtools import TestMirror, make_deb

BASE_TEMPLATE = load_definition("debian-bookworm").apt_sources_template


@dataclasses.dataclass
class Env:
    containers: Path
    store: PackageStore
    packages: list[LockedPackage]
    base: Lock
    tool: Lock


def _write_lock(containers: Path, lock: Lock) -> None:
    (containers / lock.name / "lock.json").write_bytes(lock.canonical_bytes())


@pytest.fixture
def env(tmp_path: Path) -> Env:
    """probe-base (three packages) and probe-tool on it (one more), all stored."""
    debs = tmp_path / "debs"
    debs.mkdir()
    made = [
        make_deb(debs, "probe-libc", "2.0"),
        make_deb(debs, "probe-shell", "1:5.2-1", depends="probe-libc"),
        make_deb(debs, "probe-apt", "2.6"),
        make_deb(debs, "probe-tool", "1.0", depends="probe-shell"),
    ]
    mirror = TestMirror(tmp_path / "mirror")
    mirror.publish(made)
    pins = [
        mirror.locked("probe-libc", "2.0"),
        mirror.locked("probe-shell", "1:5.2-1"),
        mirror.locked("probe-apt", "2.6"),
        mirror.locked("probe-tool", "1.0"),
    ]
    store = PackageStore(tmp_path / "store-a")
    for p, f in zip(pins, made, strict=True):
        store.add_file(p, f, "test")
    containers = tmp_path / "containers"
    (containers / "probe-base").mkdir(parents=True)
    (containers / "probe-tool").mkdir()
    assert BASE_TEMPLATE is not None
    (containers / "probe-base" / "apt.sources.in").write_text(BASE_TEMPLATE)
    (containers / "probe-base" / "environment.toml").write_text(
        'name = "probe-base"\nbase = "debootstrap"\nsuite = "bookworm"\n'
        'apt_sources = "apt.sources.in"\npackages = []\n'
    )
    (containers / "probe-tool" / "environment.toml").write_text(
        'name = "probe-tool"\nparent = "probe-base"\npackages = ["probe-tool"]\n'
    )
    base = Lock("probe-base", "debootstrap bookworm minbase", None, None, "amd64", (), ())
    base = dataclasses.replace(base, packages=tuple(sorted(pins[:3])))
    tool = dataclasses.replace(
        base,
        name="probe-tool",
        parent="probe-base",
        parent_lock_digest=base.digest,
        packages=tuple(sorted(pins)),
    )
    _write_lock(containers, base)
    _write_lock(containers, tool)
    return Env(containers, store, pins, base, tool)


def _export(env: Env, tmp_path: Path) -> Path:
    out = tmp_path / "probe-tool.tar"
    export_environment("probe-tool", out, env.store, None, containers_dir=env.containers)
    return out


def _members(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path) as tar:
        return [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]


def _rewrite(
    src: Path,
    dest: Path,
    edit: Callable[[list[tuple[tarfile.TarInfo, bytes]]], list[tuple[tarfile.TarInfo, bytes]]],
    fmt: int = tarfile.USTAR_FORMAT,
) -> Path:
    members = edit(_members(src))
    with tarfile.open(dest, "w", format=fmt) as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return dest


def _import(env: Env, path: Path, store: PackageStore) -> None:
    import_environment(path, store, containers_dir=env.containers)


def _stored(store: PackageStore) -> list[str]:
    return sorted(p.name for p in store.objects.iterdir()) if store.objects.is_dir() else []


def _deb_names(env: Env) -> set[str]:
    return {f"debs/{p.sha256}.deb" for p in env.packages}


# ----------------------------------------------------------------- round trip


def test_export_then_import_gives_the_other_store_every_pinned_deb(
    env: Env, tmp_path: Path
) -> None:
    archive = _export(env, tmp_path)
    names = [m.name for m, _ in _members(archive)]
    assert names[:3] == [
        "rebuild-env-export.json",
        "locks/probe-base.json",
        "locks/probe-tool.json",
    ]
    assert set(names[3:]) == _deb_names(env)
    target = PackageStore(tmp_path / "store-b")
    report = import_environment(archive, target, containers_dir=env.containers)
    assert (report.name, report.lock_digest) == ("probe-tool", env.tool.digest)
    assert (report.packages, report.added) == (4, 4)
    assert _stored(target) == sorted(p.sha256 for p in env.packages)
    assert list((target.root / "incoming").iterdir()) == []


def test_the_same_environment_exports_to_the_same_bytes(env: Env, tmp_path: Path) -> None:
    first = _export(env, tmp_path).read_bytes()
    second = tmp_path / "again.tar"
    export_environment("probe-tool", second, env.store, None, containers_dir=env.containers)
    assert second.read_bytes() == first


def test_export_cli_and_import_cli_report_json(
    env: Env,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REBUILD_CONTAINERS_DIR", str(env.containers))
    out = tmp_path / "e.tar"
    args = ["env", "export", "probe-tool", "-o", str(out), "--store", str(env.store.root)]
    assert main([*args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["lock_digest"] == env.tool.digest and doc["packages"] == 4
    assert doc["size"] == out.stat().st_size
    assert main(["env", "import", str(out), "--store", str(tmp_path / "b"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["added_to_store"] == 4 and doc["image_in_archive"] is False


# ----------------------------------------------------------------- hostile archives


def _tamper_deb(
    members: list[tuple[tarfile.TarInfo, bytes]],
) -> list[tuple[tarfile.TarInfo, bytes]]:
    out: list[tuple[tarfile.TarInfo, bytes]] = []
    for info, data in members:
        first_deb = info.name.startswith("debs/") and not out[-1][0].name.startswith("debs/")
        # One bit flipped in the first .deb.
        out.append((info, data[:-1] + bytes([data[-1] ^ 1]) if first_deb else data))
    return out


def test_tampered_deb_is_refused_naming_the_package_and_both_digests(
    env: Env, tmp_path: Path
) -> None:
    bad = _rewrite(_export(env, tmp_path), tmp_path / "bad.tar", _tamper_deb)
    target = PackageStore(tmp_path / "store-b")
    with pytest.raises(DigestMismatchError) as e:
        _import(env, bad, target)
    assert isinstance(e.value, NegativeVerdict)
    first = sorted(env.packages, key=lambda p: p.sha256)[0]
    message = str(e.value)
    assert f"{first.name}={first.version}" in message and first.sha256 in message
    assert e.value.got_sha256 != first.sha256 and e.value.got_sha256 in message
    assert _stored(target) == []


def test_tampered_deb_makes_the_import_command_exit_1(
    env: Env,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REBUILD_CONTAINERS_DIR", str(env.containers))
    bad = _rewrite(_export(env, tmp_path), tmp_path / "bad.tar", _tamper_deb)
    store = tmp_path / "store-b"
    assert main(["env", "import", str(bad), "--store", str(store), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["reason"]["kind"] == "DigestMismatchError"
    assert not (store / "sha256").exists() or not any((store / "sha256").iterdir())


def _add(
    name: str, data: bytes, kind: bytes = tarfile.REGTYPE, link: str = ""
) -> Callable[[list[tuple[tarfile.TarInfo, bytes]]], list[tuple[tarfile.TarInfo, bytes]]]:
    def edit(
        members: list[tuple[tarfile.TarInfo, bytes]],
    ) -> list[tuple[tarfile.TarInfo, bytes]]:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = link
        return [*members, (info, data)]

    return edit


def _extra_deb(env: Env, tmp_path: Path) -> tuple[str, bytes]:
    deb = make_deb(tmp_path, "probe-extra", "1.0").read_bytes()
    return f"debs/{hashlib.sha256(deb).hexdigest()}.deb", deb


@pytest.mark.parametrize(
    ("case", "error", "message"),
    [
        ("extra file", InputError, "has no place"),
        ("path traversal", InputError, "has no place"),
        ("absolute path", InputError, "has no place"),
        ("symlink", InputError, "symbolic link"),
        ("hard link", InputError, "hard link"),
        ("directory", InputError, "directory"),
        ("extra deb", ArchiveRejectedError, "not a package any of the locks pins"),
        ("duplicate deb", InputError, "repeated"),
    ],
)
def test_archive_with_anything_but_the_pinned_files_is_refused_whole(
    env: Env, tmp_path: Path, case: str, error: type[Exception], message: str
) -> None:
    first = sorted(env.packages, key=lambda p: p.sha256)[0]
    deb_name = f"debs/{first.sha256}.deb"
    edits = {
        "extra file": _add("notes.txt", b"hello"),
        "path traversal": _add("debs/../../../etc/cron.d/evil", b"* * * * * root sh\n"),
        "absolute path": _add("/etc/cron.d/evil", b"x"),
        "symlink": _add(deb_name, b"", tarfile.SYMTYPE, "/etc/shadow"),
        "hard link": _add(deb_name, b"", tarfile.LNKTYPE, "/etc/shadow"),
        "directory": _add("debs", b"", tarfile.DIRTYPE),
        "extra deb": _add(*_extra_deb(env, tmp_path)),
        "duplicate deb": lambda ms: [*ms, next((i, d) for i, d in ms if i.name == deb_name)],
    }
    bad = _rewrite(_export(env, tmp_path), tmp_path / "bad.tar", edits[case])
    target = PackageStore(tmp_path / "store-b")
    with pytest.raises(error, match=message):
        _import(env, bad, target)
    assert _stored(target) == []


def test_archive_missing_one_pinned_deb_is_refused_not_partly_imported(
    env: Env, tmp_path: Path
) -> None:
    first = sorted(env.packages, key=lambda p: p.sha256)[0]
    bad = _rewrite(
        _export(env, tmp_path),
        tmp_path / "bad.tar",
        lambda ms: [(i, d) for i, d in ms if i.name != f"debs/{first.sha256}.deb"],
    )
    target = PackageStore(tmp_path / "store-b")
    with pytest.raises(ArchiveRejectedError, match=r"lacks 1 pinned package.*partial"):
        _import(env, bad, target)
    assert _stored(target) == []


def test_oversized_manifest_is_refused_before_it_is_read(env: Env, tmp_path: Path) -> None:
    def huge(ms: list[tuple[tarfile.TarInfo, bytes]]) -> list[tuple[tarfile.TarInfo, bytes]]:
        info, data = ms[0]
        return [(info, data + b" " * (1024 * 1024)), *ms[1:]]

    bad = _rewrite(_export(env, tmp_path), tmp_path / "bad.tar", huge)
    with pytest.raises(InputError, match="over its 65536-byte bound"):
        _import(env, bad, PackageStore(tmp_path / "store-b"))


def test_deb_larger_than_its_pinned_size_is_refused_before_it_is_read(
    env: Env, tmp_path: Path
) -> None:
    first = sorted(env.packages, key=lambda p: p.sha256)[0]

    def grow(ms: list[tuple[tarfile.TarInfo, bytes]]) -> list[tuple[tarfile.TarInfo, bytes]]:
        return [
            (i, d + b"\0" * 4096 if i.name.endswith(first.sha256 + ".deb") else d) for i, d in ms
        ]

    bad = _rewrite(_export(env, tmp_path), tmp_path / "bad.tar", grow)
    target = PackageStore(tmp_path / "store-b")
    with pytest.raises(InputError, match=f"over its {first.size}-byte bound"):
        _import(env, bad, target)
    assert _stored(target) == []


def test_archive_of_other_locks_is_refused(env: Env, tmp_path: Path) -> None:
    """A lock in the archive that is not this machine's lock is not this environment."""
    archive = _export(env, tmp_path)
    relocked = dataclasses.replace(env.tool, packages=env.tool.packages[:-1])
    _write_lock(env.containers, relocked)
    target = PackageStore(tmp_path / "store-b")
    with pytest.raises(ArchiveRejectedError, match="this machine's probe-tool lock is"):
        _import(env, archive, target)
    assert _stored(target) == []


def test_lock_swapped_inside_the_archive_is_refused(env: Env, tmp_path: Path) -> None:
    """The manifest names the local digest but the lock member says something else."""
    forged = dataclasses.replace(env.tool, packages=env.tool.packages[:-1])

    def swap(ms: list[tuple[tarfile.TarInfo, bytes]]) -> list[tuple[tarfile.TarInfo, bytes]]:
        return [
            (i, forged.canonical_bytes() if i.name == "locks/probe-tool.json" else d) for i, d in ms
        ]

    bad = _rewrite(_export(env, tmp_path), tmp_path / "bad.tar", swap)
    with pytest.raises(ArchiveRejectedError, match="not the lock"):
        _import(env, bad, PackageStore(tmp_path / "store-b"))


def test_pax_extended_headers_are_refused(env: Env, tmp_path: Path) -> None:
    bad = _rewrite(
        _export(env, tmp_path), tmp_path / "bad.tar", _add("x" * 120, b"long"), tarfile.PAX_FORMAT
    )
    with pytest.raises(InputError, match="only regular files"):
        _import(env, bad, PackageStore(tmp_path / "store-b"))


def test_truncated_archive_is_refused(env: Env, tmp_path: Path) -> None:
    archive = _export(env, tmp_path)
    data = archive.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2])
    target = PackageStore(tmp_path / "store-b")
    with pytest.raises(InputError, match=r"\.(deb|json): truncated|truncated after|no end-of"):
        _import(env, cut, target)
    assert _stored(target) == []


def test_corrupted_header_checksum_is_refused(env: Env, tmp_path: Path) -> None:
    data = bytearray(_export(env, tmp_path).read_bytes())
    data[0] ^= 0x20  # the manifest's name, covered by the header checksum
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(data))
    with pytest.raises(InputError, match="a tar header's checksum is wrong"):
        _import(env, bad, PackageStore(tmp_path / "store-b"))


def test_export_refuses_a_store_file_that_is_not_the_pinned_deb(env: Env, tmp_path: Path) -> None:
    first = sorted(env.packages, key=lambda p: p.sha256)[0]
    path = env.store.path(first)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    out = tmp_path / "out.tar"
    with pytest.raises(Exception, match="changed while exporting"):
        export_environment("probe-tool", out, env.store, None, containers_dir=env.containers)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.tar")] == []


def test_import_needs_the_environment_defined_here(env: Env, tmp_path: Path) -> None:
    archive = _export(env, tmp_path)
    shutil.rmtree(env.containers / "probe-tool")
    with pytest.raises(Exception, match="unknown environment 'probe-tool'"):
        _import(env, archive, PackageStore(tmp_path / "store-b"))
