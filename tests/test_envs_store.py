"""Locks that pin .deb digests, the package store, and fetching from a moved mirror.

Real ``.deb`` files (dpkg-deb) in a real apt repository (dpkg-scanpackages)
served over HTTP on 127.0.0.1; no Docker. The builds themselves are in
tests/test_envs_docker.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rebuild.envs import localrepo
from rebuild.envs.deb822 import parse_stanzas
from rebuild.envs.definition import (
    LockedPackage,
    load_definition,
    load_lock,
    parse_lock,
    read_pinned_versions,
)
from rebuild.envs.fetch import PackagesUnavailableError, ensure_in_store
from rebuild.envs.mirror import Mirrors
from rebuild.envs.store import DigestMismatchError, PackageStore, default_store_dir
from rebuild.errors import InputError, NegativeVerdict
from tests.debtools import TestMirror, make_deb, probe_mirror
from tests.staticweb import serving

REPO_LOCK = load_lock(load_definition("python-3.11"))


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[TestMirror, list[Path]]]:
    """A mirror with probe-lib 1.0 and probe-tool 1.0 (depends on probe-lib)."""
    m, lib, tool = probe_mirror(tmp_path)
    with m.serve():
        yield m, [lib, tool]


def _mirrors(url: str, security: str | None = None) -> Mirrors:
    return Mirrors(archive=url, security=security, origin="test")


def _store_with(tmp_path: Path, pinned: LockedPackage, deb: Path) -> PackageStore:
    """A store that kept ``deb`` from an earlier build."""
    store = PackageStore(tmp_path / "store")
    store.add_file(pinned, deb, "an earlier build")
    return store


def _files(store: PackageStore) -> list[str]:
    return sorted(p.name for p in store.objects.iterdir()) if store.objects.is_dir() else []


# ----------------------------------------------------------------- the lock


def test_shipped_locks_pin_every_package_to_a_deb_digest() -> None:
    assert REPO_LOCK.packages
    for p in REPO_LOCK.packages:
        assert len(p.sha256) == 64 and p.size > 0 and p.filename.endswith(".deb")
        assert p.filename.startswith("pool/")


def test_a_v1_lock_without_digests_is_refused_with_keep_versions_advice(tmp_path: Path) -> None:
    doc = json.loads(REPO_LOCK.canonical_bytes())
    doc["format"] = "rebuild-env-lock/v1"
    for p in doc["packages"]:
        del p["sha256"], p["size"], p["filename"]
    raw = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    with pytest.raises(InputError, match="--keep-versions"):
        parse_lock(raw, "old.json")


def test_keep_versions_reads_the_pins_of_a_v1_lock(tmp_path: Path) -> None:
    containers = tmp_path / "containers"
    shutil.copytree(load_definition("python-3.11").directory.parent, containers)
    lock_path = containers / "python-3.11" / "lock.json"
    doc = json.loads(lock_path.read_text())
    doc["format"] = "rebuild-env-lock/v1"
    for p in doc["packages"]:
        del p["sha256"], p["size"], p["filename"]
    lock_path.write_text(json.dumps(doc))
    pins = read_pinned_versions(load_definition("python-3.11", containers))
    assert {p.key for p in pins} == {p.key for p in REPO_LOCK.packages}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("sha256", "ab" * 31, "bad sha256"),
        ("sha256", "AB" * 32, "bad sha256"),
        ("size", 0, "bad size"),
        ("size", True, "bad size"),
        ("size", 2 * 1024**3, "bad size"),
        ("filename", "pool/../../etc/passwd.deb", "bad filename"),
        ("filename", "/etc/passwd.deb", "bad filename"),
        ("filename", "pool/main/b/bash/bash?x=1.deb", "bad filename"),
        ("filename", "pool/main/b/bash/bash.tar", "bad filename"),
    ],
)
def test_lock_entry_with_a_hostile_digest_size_or_path_is_refused(
    field: str, value: Any, message: str
) -> None:
    """A lock entry reaches URLs and file names; each field is validated."""
    first = dataclasses.replace(REPO_LOCK.packages[0], **{field: value})
    evil = dataclasses.replace(REPO_LOCK, packages=(first, *REPO_LOCK.packages[1:]))
    with pytest.raises(InputError, match=message):
        parse_lock(evil.canonical_bytes(), "evil.json")


def test_lock_pinning_one_package_twice_is_refused() -> None:
    first = REPO_LOCK.packages[0]
    twice = dataclasses.replace(first, version=first.version + "+1")
    evil = dataclasses.replace(REPO_LOCK, packages=(first, twice, *REPO_LOCK.packages[1:]))
    with pytest.raises(InputError, match="locked twice"):
        parse_lock(evil.canonical_bytes(), "evil.json")


# ----------------------------------------------------------------- the store


def test_store_location_comes_from_the_environment_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REBUILD_PACKAGE_STORE", str(tmp_path / "s"))
    assert default_store_dir() == tmp_path / "s"
    monkeypatch.delenv("REBUILD_PACKAGE_STORE")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_store_dir() == tmp_path / "data" / "rebuild" / "packages"


def test_store_keeps_a_file_only_under_its_own_sha256(
    tmp_path: Path, mirror: tuple[TestMirror, list[Path]]
) -> None:
    m, (lib, _) = mirror
    pinned = m.locked("probe-lib", "1.0")
    store = _store_with(tmp_path, pinned, lib)
    assert _files(store) == [pinned.sha256]
    other = dataclasses.replace(pinned, sha256="0" * 64)
    with pytest.raises(DigestMismatchError) as e:
        store.add_file(other, lib, "test")
    assert pinned.sha256 in str(e.value) and "0" * 64 in str(e.value)
    assert _files(store) == [pinned.sha256]
    assert list((store.root / "incoming").iterdir()) == []


def test_store_file_altered_on_disk_is_refused_when_staged_for_a_build(
    tmp_path: Path, mirror: tuple[TestMirror, list[Path]]
) -> None:
    m, (lib, _) = mirror
    pinned = m.locked("probe-lib", "1.0")
    store = _store_with(tmp_path, pinned, lib)
    stored = store.path(pinned)
    data = bytearray(stored.read_bytes())
    data[-1] ^= 1
    stored.write_bytes(bytes(data))
    with pytest.raises(DigestMismatchError, match=r"probe-lib=1\.0 .*package store") as e:
        localrepo.stage([pinned], store, tmp_path / "repo")
    assert isinstance(e.value, NegativeVerdict)
    assert list((tmp_path / "repo" / "pool").iterdir()) == []


# ----------------------------------------------------------------- fetching


def test_packages_come_from_the_mirror_into_the_store_by_pool_path(
    tmp_path: Path, mirror: tuple[TestMirror, list[Path]]
) -> None:
    m, _ = mirror
    pins = [m.locked("probe-lib", "1.0"), m.locked("probe-tool", "1.0")]
    store = PackageStore(tmp_path / "store")
    report = ensure_in_store(pins, store, lambda: _mirrors(m.url))
    assert (report.fetched, report.in_store) == (2, 0)
    assert _files(store) == sorted(p.sha256 for p in pins)
    m.requests.clear()
    again = ensure_in_store(pins, store, lambda: _mirrors(m.url))
    assert (again.fetched, again.in_store) == (0, 2)
    assert m.requests == []


def test_a_version_the_mirror_dropped_is_taken_from_the_store(
    tmp_path: Path, mirror: tuple[TestMirror, list[Path]]
) -> None:
    """Debian replaced probe-lib 1.0 by 1.1; the lock still pins 1.0, the store has it."""
    m, (lib, _) = mirror
    pinned = m.locked("probe-lib", "1.0")
    store = _store_with(tmp_path, pinned, lib)
    m.remove(lib)
    m.publish([make_deb(tmp_path, "probe-lib", "1.1")])
    m.requests.clear()
    pins = [pinned, m.locked("probe-tool", "1.0")]
    report = ensure_in_store(pins, store, lambda: _mirrors(m.url))
    assert (report.in_store, report.fetched) == (1, 1)
    assert all("probe-lib" not in r for r in m.requests)


def test_a_version_gone_from_mirror_and_store_is_an_error_naming_it(
    tmp_path: Path, mirror: tuple[TestMirror, list[Path]]
) -> None:
    m, (lib, _) = mirror
    pinned = m.locked("probe-lib", "1.0")
    m.remove(lib)
    store = PackageStore(tmp_path / "store")
    with pytest.raises(PackagesUnavailableError) as e:
        ensure_in_store([pinned, m.locked("probe-tool", "1.0")], store, lambda: _mirrors(m.url))
    message = str(e.value)
    assert "probe-lib=1.0" in message and "HTTP 404" in message and str(store.root) in message
    assert "probe-tool" not in message
    assert [p for p, _ in e.value.missing] == [pinned]


def test_a_mirror_serving_other_bytes_for_a_pinned_package_is_refused(
    tmp_path: Path, mirror: tuple[TestMirror, list[Path]]
) -> None:
    """A compromised or broken mirror: same name and version, other bytes."""
    m, _ = mirror
    pinned = m.locked("probe-lib", "1.0")
    evil = make_deb(tmp_path, "probe-lib", "1.0", script="#!/bin/sh\necho pwned\n")
    m.overrides[pinned.filename] = evil.read_bytes()
    store = PackageStore(tmp_path / "store")
    with pytest.raises(DigestMismatchError) as e:
        ensure_in_store([pinned], store, lambda: _mirrors(m.url))
    message = str(e.value)
    assert "probe-lib=1.0" in message and pinned.sha256 in message
    assert hashlib.sha256(evil.read_bytes()).hexdigest() in message
    assert _files(store) == []


class _Endless(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"\0" * 65536)
        except OSError:
            return

    def log_message(self, format: str, *args: Any) -> None:
        return


def test_an_endless_download_stops_just_past_the_pinned_size(
    tmp_path: Path, mirror: tuple[TestMirror, list[Path]]
) -> None:
    m, _ = mirror
    pinned = m.locked("probe-lib", "1.0")
    store = PackageStore(tmp_path / "store")
    with (
        serving(_Endless) as url,
        pytest.raises(DigestMismatchError, match="more bytes than pinned"),
    ):
        ensure_in_store([pinned], store, lambda: _mirrors(url))
    assert _files(store) == []


def test_security_updates_are_found_on_the_security_mirror(
    tmp_path: Path, mirror: tuple[TestMirror, list[Path]]
) -> None:
    m, (lib, _) = mirror
    security = TestMirror(tmp_path / "security")
    pinned = dataclasses.replace(
        m.locked("probe-lib", "1.0"), filename="pool/updates/main/p/probe-lib/" + lib.name
    )
    (security.root / "pool/updates/main/p/probe-lib").mkdir(parents=True)
    (security.root / "pool/updates/main/p/probe-lib" / lib.name).write_bytes(lib.read_bytes())
    store = PackageStore(tmp_path / "store")
    with security.serve():
        report = ensure_in_store([pinned], store, lambda: _mirrors(m.url, security.url))
    assert report.fetched == 1 and security.requests and not m.requests


def test_a_build_whose_packages_are_all_stored_asks_for_no_mirror(
    tmp_path: Path, mirror: tuple[TestMirror, list[Path]]
) -> None:
    m, (lib, _) = mirror
    pinned = m.locked("probe-lib", "1.0")
    store = _store_with(tmp_path, pinned, lib)

    def no_mirror() -> Mirrors:
        raise AssertionError("a mirror was resolved although the store had everything")

    assert ensure_in_store([pinned], store, no_mirror).in_store == 1


def test_local_repository_index_carries_the_locks_hashes(
    tmp_path: Path, mirror: tuple[TestMirror, list[Path]]
) -> None:
    m, (lib, tool) = mirror
    pins: list[LockedPackage] = [m.locked("probe-lib", "1.0"), m.locked("probe-tool", "1.0")]
    store = PackageStore(tmp_path / "store")
    for p, f in zip(pins, (lib, tool), strict=True):
        store.add_file(p, f, "test")
    repo = tmp_path / "repo"
    localrepo.stage(pins, store, repo)
    localrepo.write_repository(repo, pins, "bookworm", "amd64")
    index = (repo / "dists/bookworm/main/binary-amd64/Packages").read_text()
    stanzas = parse_stanzas(index)
    assert [(s["Package"], s["SHA256"]) for s in stanzas] == [(p.name, p.sha256) for p in pins]
    assert stanzas[1]["Depends"] == "probe-lib (= 1.0)"
    assert index.endswith("\n\n")
    release = (repo / "dists/bookworm/Release").read_text()
    assert hashlib.sha256(index.encode()).hexdigest() in release
