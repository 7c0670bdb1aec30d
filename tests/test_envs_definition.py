"""Environment definitions, locks and mirror discovery (no Docker needed)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from rebuild.envs.definition import (
    LockedPackage,
    build_order,
    default_containers_dir,
    list_definitions,
    load_definition,
    load_lock,
    parse_lock,
)
from rebuild.envs.mirror import render_sources, resolve_mirrors
from rebuild.errors import InputError, UsageError

REPO_CONTAINERS = default_containers_dir()

# Made-up mirror addresses: tests never name a real registry host.
ARCHIVE = "http://mirror.test/debian"
SECURITY = "http://mirror.test/debian-security"


@pytest.fixture
def containers(tmp_path: Path) -> Path:
    root = tmp_path / "containers"
    shutil.copytree(REPO_CONTAINERS, root)
    return root


def test_shipped_environments_load_and_their_locks_are_canonical() -> None:
    names = list_definitions(REPO_CONTAINERS)
    assert {"debian-bookworm", "python-3.11", "php-8.2"} <= set(names)
    for d in build_order(names, REPO_CONTAINERS):
        lock = load_lock(d)
        raw = d.lock_path.read_bytes()
        assert lock.canonical_bytes() == raw
        assert lock.digest == "sha256:" + hashlib.sha256(raw).hexdigest()
        assert lock.image_tag == f"rebuild-env/{d.name}:{lock.digest[7:19]}"
        if d.parent is not None:
            parent_lock = load_lock(load_definition(d.parent, REPO_CONTAINERS))
            assert lock.parent_lock_digest == parent_lock.digest
            # A builder's lock includes its parent's whole package set.
            assert set(parent_lock.packages) <= set(lock.packages)


def test_parents_come_before_builders_in_build_order() -> None:
    order = [d.name for d in build_order(["python-3.11", "php-8.2"], REPO_CONTAINERS)]
    assert order[0] == "debian-bookworm"
    assert set(order[1:]) == {"python-3.11", "php-8.2"}


def test_hand_edited_lock_is_refused_as_not_canonical(containers: Path) -> None:
    lock_path = containers / "python-3.11" / "lock.json"
    text = lock_path.read_text()
    lock_path.write_text(text.replace("\n", "\r\n"))
    with pytest.raises(InputError, match="not in canonical form"):
        load_lock(load_definition("python-3.11", containers))


def test_changed_pin_changes_the_environment_identity(containers: Path) -> None:
    d = load_definition("python-3.11", containers)
    lock = load_lock(d)
    first = lock.packages[0]
    bumped = dataclasses.replace(first, version=first.version + "+evil1")
    other = dataclasses.replace(lock, packages=(bumped, *lock.packages[1:]))
    assert other.digest != lock.digest
    # The new bytes are themselves a valid canonical lock with the new identity.
    assert parse_lock(other.canonical_bytes(), "x").digest == other.digest


def test_definition_file_changed_after_locking_needs_a_relock(containers: Path) -> None:
    (containers / "php-8.2" / "rebuild.ini").write_text("phar.readonly = On\n")
    with pytest.raises(InputError, match="re-lock"):
        load_lock(load_definition("php-8.2", containers))


def test_base_image_by_tag_is_refused_only_digest_pins(containers: Path) -> None:
    toml = containers / "debian-bookworm" / "environment.toml"
    toml.write_text('name = "debian-bookworm"\nbase = "debian:bookworm"\n')
    with pytest.raises(InputError, match="pinned by digest"):
        load_definition("debian-bookworm", containers)
    toml.write_text(
        'name = "debian-bookworm"\nbase = "registry.test/debian@sha256:' + "a" * 64 + '"\n'
    )
    d = load_definition("debian-bookworm", containers)
    assert d.base is not None and d.base.endswith("a" * 64) and not d.is_debootstrap


def test_definition_file_pointing_outside_its_directory_is_refused(containers: Path) -> None:
    toml = containers / "php-8.2" / "environment.toml"
    toml.write_text(
        toml.read_text().replace('source = "rebuild.ini"', 'source = "../../../etc/passwd"')
    )
    with pytest.raises(InputError, match="outside"):
        load_definition("php-8.2", containers)


def test_parent_cycle_is_refused(containers: Path) -> None:
    toml = containers / "debian-bookworm" / "environment.toml"
    toml.write_text('name = "debian-bookworm"\nparent = "python-3.11"\n')
    with pytest.raises(InputError, match="cycle"):
        build_order(["python-3.11"], containers)


def test_environment_name_with_path_characters_is_refused() -> None:
    with pytest.raises(UsageError, match="bad environment name"):
        load_definition("../etc", REPO_CONTAINERS)


def test_lock_with_shell_metacharacters_in_a_version_is_refused() -> None:
    d = load_definition("python-3.11", REPO_CONTAINERS)
    lock = load_lock(d)
    evil = dataclasses.replace(
        lock, packages=(LockedPackage("bash", "5.2; rm -rf /", "amd64"), *lock.packages[1:])
    )
    with pytest.raises(InputError, match="bad package entry"):
        parse_lock(evil.canonical_bytes(), "evil.json")


def _apt_dir(tmp_path: Path, sources: str, one_line: str = "") -> Path:
    d = tmp_path / "apt"
    (d / "sources.list.d").mkdir(parents=True)
    (d / "sources.list.d" / "debian.sources").write_text(sources)
    if one_line:
        (d / "sources.list").write_text(one_line)
    return d


def test_mirror_comes_from_the_hosts_deb822_sources(tmp_path: Path) -> None:
    apt = _apt_dir(
        tmp_path,
        f"Types: deb\n# a comment\nURIs: {ARCHIVE}/\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\n"
        f"Types: deb\nURIs: {SECURITY}\nSuites: bookworm-security\nComponents: main\n\n"
        "Types: deb\nURIs: http://other.test/x\nSuites: nodistro\nComponents: main\n",
    )
    m = resolve_mirrors("bookworm", apt_dir=apt)
    assert (m.archive, m.security) == (ARCHIVE, SECURITY)


def test_mirror_comes_from_one_line_sources_list(tmp_path: Path) -> None:
    apt = _apt_dir(tmp_path, "", f"# x\ndeb [arch=amd64] {ARCHIVE} bookworm main contrib\n")
    m = resolve_mirrors("bookworm", apt_dir=apt)
    assert m.archive == ARCHIVE and m.security is None


def test_mirror_flag_beats_environment_beats_apt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apt = _apt_dir(tmp_path, f"Types: deb\nURIs: {ARCHIVE}\nSuites: bookworm\nComponents: main\n")
    monkeypatch.setenv("REBUILD_DEBIAN_MIRROR", "http://env.test/debian")
    assert resolve_mirrors("bookworm", apt_dir=apt).archive == "http://env.test/debian"
    flag = resolve_mirrors("bookworm", "http://flag.test/debian", apt_dir=apt)
    assert flag.archive == "http://flag.test/debian"


def test_no_mirror_anywhere_is_a_clear_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REBUILD_DEBIAN_MIRROR", raising=False)
    apt = _apt_dir(tmp_path, "")
    with pytest.raises(UsageError, match="--mirror"):
        resolve_mirrors("bookworm", apt_dir=apt)


def test_mirror_flag_that_is_not_a_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not an http"):
        resolve_mirrors("bookworm", "deb.example; rm -rf /", apt_dir=_apt_dir(tmp_path, ""))


def test_sources_template_drops_security_stanza_without_a_security_mirror() -> None:
    template = load_definition("debian-bookworm", REPO_CONTAINERS).apt_sources_template
    assert template is not None
    m = resolve_mirrors("bookworm", ARCHIVE, SECURITY)
    full = render_sources(template, "bookworm", m)
    assert f"URIs: {ARCHIVE}\n" in full and f"URIs: {SECURITY}\n" in full
    assert "Suites: bookworm bookworm-updates" in full and "@" not in full
    only = render_sources(template, "bookworm", dataclasses.replace(m, security=None))
    assert "security" not in only and f"URIs: {ARCHIVE}\n" in only


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_work_dir_with_a_leftover_mount_is_unmounted_not_deleted_through(tmp_path: Path) -> None:
    """An interrupted debootstrap leaves /proc-like mounts; cleanup must not recurse into them."""
    from rebuild.envs import images

    with images._workdir("rebuild-test-") as work:
        target = work / "root" / "proc"
        target.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "none", str(target)], check=True)
        (target / "precious").write_text("x")
        assert images._mounts_under(work) == [str(target)]
    assert not work.exists()
    assert images._mounts_under(work) == []


def test_env_build_with_a_non_http_mirror_flag_is_refused_before_any_work(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from rebuild.cli import main

    assert main(["env", "build", "--all", "--mirror", "ftp://mirror.test/debian", "--json"]) == 2
    err = json.loads(capsys.readouterr().out)["error"]
    assert err["kind"] == "UsageError" and "--mirror" in err["message"]
