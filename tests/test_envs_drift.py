"""The image-versus-lock decisions (rebuild.envs.drift), with no Docker engine.

They take what ``dpkg-query``, ``sha256sum`` and apt's index printed inside
an image and decide; the shipped php-8.2 lock (a builder on debian-bookworm)
is the lock they decide against. The engine-backed path (inspecting a real
image) is covered by tests/test_envs_docker.py.
"""

from __future__ import annotations

import dataclasses

import pytest

from rebuild.envs.definition import Lock, load_definition, load_lock
from rebuild.envs.drift import (
    check_parent_lock,
    drift_from_lock,
    own_packages,
    parse_contents,
    parse_index_records,
    pin_packages,
)
from rebuild.errors import InputError, ToolError, UsageError


def _locks() -> tuple[Lock, Lock]:
    builder = load_lock(load_definition("php-8.2"))
    parent = load_lock(load_definition("debian-bookworm"))
    return builder, parent


def _dpkg_output(lock: Lock, lines: list[str] | None = None) -> str:
    """What CONTENTS_SCRIPT prints in an image that installs exactly ``lock``."""
    pkgs = [f"ii \t{p.name}\t{p.version}\t{p.architecture}" for p in lock.packages]
    files = [f"{f.sha256}  {f.target}" for f in lock.files]
    return "\n".join(
        [lock.architecture, "--rebuild-arch--", *pkgs, *(lines or []), "--rebuild-files--", *files]
    )


def test_an_image_installing_exactly_the_lock_has_no_drift() -> None:
    lock, _ = _locks()
    contents = parse_contents(_dpkg_output(lock), [f.target for f in lock.files])
    assert drift_from_lock(lock, contents).empty


def test_a_removed_package_whose_config_remains_counts_as_not_installed() -> None:
    """dpkg's ``rc`` state: the files are gone, so the locked package is missing."""
    lock, _ = _locks()
    gone = lock.packages[0]
    text = _dpkg_output(lock).replace(f"ii \t{gone.name}\t", f"rc \t{gone.name}\t", 1)
    drift = drift_from_lock(lock, parse_contents(text, [f.target for f in lock.files]))
    assert drift.missing == (f"{gone.name}={gone.version} ({gone.architecture})",)
    assert not drift.empty


def test_an_extra_package_a_changed_version_and_another_architecture_are_drift() -> None:
    lock, _ = _locks()
    first = lock.packages[0]
    text = _dpkg_output(lock, ["ii \tbackdoor\t1.0\tamd64"])
    text = text.replace(f"\t{first.version}\t", "\t9:9.9\t", 1)
    text = text.replace(lock.architecture, "arm64", 1)
    drift = drift_from_lock(lock, parse_contents(text, [f.target for f in lock.files]))
    assert drift.extra == ("backdoor=1.0 (amd64)",)
    assert drift.changed == (
        f"{first.name} ({first.architecture}): locked {first.version}, installed 9:9.9",
    )
    assert drift.architecture == f"locked {lock.architecture}, image is arm64"


def test_a_definition_file_that_did_not_land_is_drift() -> None:
    lock, parent = _locks()
    target = next(f for f in (*lock.files, *parent.files)).target
    with_file = lock if lock.files else parent
    text = _dpkg_output(with_file).rsplit("\n", len(with_file.files))[0]  # no sha256sum lines
    drift = drift_from_lock(with_file, parse_contents(text, [target]))
    assert drift.files and drift.files[0].startswith(f"{target}: locked sha256")


def test_a_builder_locked_on_an_older_parent_is_refused() -> None:
    lock, parent = _locks()
    definition = load_definition("php-8.2")
    check_parent_lock(definition, lock, parent)  # the shipped pair is consistent
    stale = dataclasses.replace(lock, parent_lock_digest="sha256:" + "0" * 64)
    with pytest.raises(UsageError, match=r"re-lock with: rebuild env lock php-8\.2"):
        check_parent_lock(definition, stale, parent)


def test_a_builder_pinning_another_file_for_a_parent_package_is_refused() -> None:
    lock, parent = _locks()
    inherited = parent.packages[0]
    forged = dataclasses.replace(inherited, sha256="f" * 64)
    tampered = dataclasses.replace(lock, packages=(forged, *lock.packages))
    with pytest.raises(InputError, match=r"pins sha256 f{64} but the parent"):
        check_parent_lock(load_definition("php-8.2"), tampered, parent)


def test_a_builder_installs_only_what_its_parent_does_not() -> None:
    lock, parent = _locks()
    own = own_packages(lock, parent)
    parent_keys = {p.key for p in parent.packages}
    assert own and all(p.key not in parent_keys for p in own)
    assert own_packages(parent, None) == list(parent.packages)


def test_a_package_no_apt_index_offers_cannot_be_pinned() -> None:
    lock, _ = _locks()
    p = lock.packages[0]
    record = (
        f"Package: {p.name}\nVersion: {p.version}\nArchitecture: {p.architecture}\n"
        f"SHA256: {p.sha256}\nSize: {p.size}\nFilename: {p.filename}\n"
    )
    records = parse_index_records(record)
    installed = [p.installed()]
    assert pin_packages("php-8.2", installed, {}, records) == [p]
    with pytest.raises(ToolError, match="no apt index offers"):
        pin_packages("php-8.2", installed, {}, {})
