"""Decisions about environment images, with no Docker and no network.

What an image holds arrives here as text (the output of ``dpkg-query`` and
``sha256sum`` run in it, apt's index records) and leaves as a decision: how
the image differs from its lock (:func:`drift_from_lock`), which packages a
build installs itself (:func:`own_packages`), whether a builder's lock still
fits its parent's (:func:`check_parent_lock`) and which ``.deb`` files a new
lock pins (:func:`pin_packages`). :mod:`rebuild.envs.images` runs the
containers and builds; everything it decides is decided here, so it can be
tested without an engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rebuild.envs.deb822 import parse_stanzas
from rebuild.envs.definition import Definition, InstalledPackage, Lock, LockedPackage
from rebuild.errors import InputError, ToolError, UsageError

_FILES_MARK = "--rebuild-files--"
_ARCH_MARK = "--rebuild-arch--"

CONTENTS_SCRIPT = (
    "set -e; dpkg --print-architecture; "
    f"echo {_ARCH_MARK}; "
    "dpkg-query -W -f='${db:Status-Abbrev}\\t${Package}\\t${Version}\\t${Architecture}\\n'; "
    f'echo {_FILES_MARK}; for f in "$@"; do sha256sum "$f" 2>/dev/null || true; done'
)
"""``sh -c`` script printing an image's architecture, packages and the digests of its arguments."""

IndexRecords = dict[tuple[str, str, str], tuple[str, int, str]]
"""(package, version, architecture) -> (sha256, size, filename) of its ``.deb``."""


@dataclass(frozen=True)
class Drift:
    """How an image's contents differ from its lock."""

    missing: tuple[str, ...] = ()  # locked, not installed
    extra: tuple[str, ...] = ()  # installed, not locked
    changed: tuple[str, ...] = ()  # installed at another version
    files: tuple[str, ...] = ()  # definition files missing or different
    architecture: str | None = None  # set when the architecture differs

    @property
    def empty(self) -> bool:
        return not (self.missing or self.extra or self.changed or self.files or self.architecture)

    def lines(self) -> list[str]:
        out = [f"missing {m}" for m in self.missing]
        out += [f"extra {e}" for e in self.extra]
        out += [f"changed {c}" for c in self.changed]
        out += [f"file {f}" for f in self.files]
        if self.architecture:
            out.append(f"architecture {self.architecture}")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "missing": list(self.missing),
            "extra": list(self.extra),
            "changed": list(self.changed),
            "files": list(self.files),
            "architecture": self.architecture,
        }


@dataclass(frozen=True)
class ImageContents:
    architecture: str
    packages: tuple[InstalledPackage, ...]
    file_digests: dict[str, str | None] = field(default_factory=dict)


def parse_contents(text: str, file_targets: list[str]) -> ImageContents:
    """What :data:`CONTENTS_SCRIPT` printed: only fully installed (``ii``) packages count."""
    arch_part, _, rest = text.partition(f"{_ARCH_MARK}\n")
    pkg_part, _, files_part = rest.partition(f"{_FILES_MARK}\n")
    packages: list[InstalledPackage] = []
    for line in pkg_part.splitlines():
        parts = line.split("\t")
        if len(parts) != 4:
            continue
        status, name, version, arch = parts
        # Only fully installed packages count; 'rc' (removed, config left) does not.
        if status.strip() == "ii":
            packages.append(InstalledPackage(name, version, arch))
    digests: dict[str, str | None] = dict.fromkeys(file_targets)
    for line in files_part.splitlines():
        digest, _, path = line.partition("  ")
        if path in digests:
            digests[path] = digest
    return ImageContents(arch_part.strip(), tuple(sorted(packages)), digests)


def drift_from_lock(lock: Lock, contents: ImageContents) -> Drift:
    """Every way ``contents`` differs from ``lock`` (empty: the image matches it)."""
    want = lock.package_map()
    have = {(p.name, p.architecture): p.version for p in contents.packages}
    missing = sorted(f"{n}={v} ({a})" for (n, a), v in want.items() if (n, a) not in have)
    extra = sorted(f"{n}={v} ({a})" for (n, a), v in have.items() if (n, a) not in want)
    changed = sorted(
        f"{n} ({a}): locked {want[(n, a)]}, installed {have[(n, a)]}"
        for (n, a) in want.keys() & have.keys()
        if want[(n, a)] != have[(n, a)]
    )
    files = sorted(
        f"{f.target}: locked sha256 {f.sha256[:12]}…, image has "
        f"{(contents.file_digests.get(f.target) or 'none')[:12]}"
        for f in lock.files
        if contents.file_digests.get(f.target) != f.sha256
    )
    arch = None
    if contents.architecture != lock.architecture:
        arch = f"locked {lock.architecture}, image is {contents.architecture}"
    return Drift(tuple(missing), tuple(extra), tuple(changed), tuple(files), arch)


def check_parent_lock(definition: Definition, lock: Lock, parent_lock: Lock) -> None:
    """A builder's lock was made on its parent's current lock and pins the parent's files.

    Raises UsageError when the parent was re-locked since, InputError when
    the builder pins another file for a package version the parent pins.
    """
    if lock.parent_lock_digest != parent_lock.digest:
        raise UsageError(
            f"{definition.lock_path}: made on parent {definition.parent} lock "
            f"{lock.parent_lock_digest}, but that parent is now {parent_lock.digest}; "
            f"re-lock with: rebuild env lock {definition.name}"
        )
    check_inherited(lock, parent_lock, definition.lock_path)


def check_inherited(lock: Lock, parent_lock: Lock, where: Path) -> None:
    """A builder's copy of a parent package must pin the parent's very file.

    Raises InputError naming the first package that does not.
    """
    parent = {p.key: p for p in parent_lock.packages}
    for p in lock.packages:
        q = parent.get(p.key)
        if q is not None and (q.sha256, q.size) != (p.sha256, p.size):
            raise InputError(
                f"{where}: {p} pins sha256 {p.sha256} but the parent "
                f"{parent_lock.name} pins {q.sha256} for the same version; re-lock"
            )


def own_packages(lock: Lock, parent_lock: Lock | None) -> list[LockedPackage]:
    """The packages a build of ``lock`` installs itself (not inherited from the parent)."""
    if parent_lock is None:
        return list(lock.packages)
    inherited = {p.key for p in parent_lock.packages}
    return [p for p in lock.packages if p.key not in inherited]


def check_relocked_contents(
    definition: Definition, contents: ImageContents, keep: list[InstalledPackage] | None
) -> None:
    """A freshly built image holds the definition's files and, when asked, the kept versions.

    Raises ToolError otherwise.
    """
    for f in definition.files:
        if contents.file_digests.get(f.target) != f.sha256:
            raise ToolError(f"{f.target} did not land in the image as defined")
    if keep is not None and set(contents.packages) != set(keep):
        kept = sorted(set(keep) ^ set(contents.packages))
        raise ToolError(
            f"{definition.name}: could not keep the locked versions; the mirror "
            f"installed a different set: {', '.join(map(str, kept[:10]))}"
        )


def parse_index_records(text: str) -> IndexRecords:
    """The first record apt's index shows for each package version (others skipped)."""
    records: IndexRecords = {}
    for f in parse_stanzas(text):
        try:
            key = (f["Package"], f["Version"], f["Architecture"])
            value = (f["SHA256"], int(f["Size"]), f["Filename"])
        except (KeyError, ValueError):
            continue  # a record of an installed package no archive offers
        records.setdefault(key, value)
    return records


def pin_packages(
    name: str,
    installed: Iterable[InstalledPackage],
    inherited: dict[tuple[str, str, str], LockedPackage],
    records: IndexRecords,
) -> list[LockedPackage]:
    """The locked packages of an image: the parent's pins, then the index's for its own.

    Raises ToolError naming the packages no index offers (their files cannot
    be pinned), and what :meth:`LockedPackage.check` raises for a bad record.
    """
    installed = list(installed)
    locked = [inherited[p.key] for p in installed if p.key in inherited]
    unknown = []
    for p in installed:
        if p.key in inherited:
            continue
        record = records.get(p.key)
        if record is None:
            unknown.append(str(p))
            continue
        locked.append(LockedPackage(*p.key, *record).check("the apt index"))
    if unknown:
        raise ToolError(
            f"{name}: no apt index offers {', '.join(unknown[:10])}; cannot pin their .deb files"
        )
    return locked
