"""Environment definitions and lock files: parsing, validation, identity.

A definition (``containers/NAME/environment.toml``) says what an environment
is made of; its lock (``containers/NAME/lock.json``) lists every Debian
package installed in the built image, pinned to the exact version and to the
sha256 and size of its ``.deb`` (as the apt index said at lock time), with the
path of that ``.deb`` in a Debian archive. The environment's identity is the
sha256 of the lock's canonical bytes. This module decides only from files: it
never talks to Docker or the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rebuild.errors import InputError, UsageError
from rebuild.fsio import read_bounded, read_text_bounded

LOCK_FORMAT = "rebuild-env-lock/v2"
# v1 locks pinned versions only; they are read solely to re-lock them with
# the same versions (``rebuild env lock --keep-versions``), never built.
LOCK_FORMAT_V1 = "rebuild-env-lock/v1"
DEFINITION_FILE = "environment.toml"
LOCK_FILE = "lock.json"
IMAGE_REPOSITORY_PREFIX = "rebuild-env/"
LABEL_NAME = "org.rebuild.env.name"
LABEL_LOCK_DIGEST = "org.rebuild.env.lock-digest"

MAX_DEFINITION_BYTES = 64 * 1024
MAX_LOCK_BYTES = 4 * 1024 * 1024
MAX_FILE_BYTES = 256 * 1024
MAX_PACKAGES = 5000
MAX_FILES = 32
# The largest .deb a lock may pin (Debian's biggest binary packages are a
# few hundred MiB); it bounds every download and every archive member.
MAX_DEB_BYTES = 1024 * 1024 * 1024

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}$")
# Debian policy: package names and versions (epoch:upstream-revision).
_PKG_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]{0,127}$")
_VERSION_RE = re.compile(r"^[0-9A-Za-z.+~:-]{1,128}$")
_ARCH_RE = re.compile(r"^[a-z0-9-]{1,32}$")
_SUITE_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# A registry image pinned by digest: REPO@sha256:<64 hex>. A tag alone is not
# a pin (it can move), so it is refused.
_PINNED_IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._/:-]{0,254}@sha256:[0-9a-f]{64}$")
_TARGET_RE = re.compile(r"^/[A-Za-z0-9_.+-]+(/[A-Za-z0-9_.+-]+)*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# A .deb's place in a Debian archive, relative to the archive root (apt's
# ``Filename:``): pool/COMPONENT/.../NAME_VERSION_ARCH.deb. No '..', no
# absolute path, nothing a URL could read differently.
_POOL_PATH_RE = re.compile(r"^pool/[A-Za-z0-9_.+~-]+(/[A-Za-z0-9_.+~%-]+)+\.deb$")

DEBOOTSTRAP = "debootstrap"


def default_containers_dir() -> Path:
    """The ``containers/`` directory: $REBUILD_CONTAINERS_DIR or the source tree's."""
    env = os.environ.get("REBUILD_CONTAINERS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "containers"


def validate_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise UsageError(
            f"bad environment name {name!r}: lower-case letters, digits, '.' and '-' only"
        )
    return name


@dataclass(frozen=True)
class FileSpec:
    """A file of the definition copied into the image (e.g. an ini file)."""

    source: Path  # absolute host path inside the definition directory
    target: str  # absolute path in the image
    sha256: str  # hex digest of the file's bytes


@dataclass(frozen=True)
class Definition:
    """One environment definition, validated."""

    name: str
    directory: Path
    description: str
    # Exactly one of: parent (a builder on top of another environment) or
    # base ("debootstrap", or a registry image pinned by digest).
    parent: str | None
    base: str | None
    suite: str | None
    variant: str | None
    apt_sources_template: str | None
    packages: tuple[str, ...]
    files: tuple[FileSpec, ...]

    @property
    def lock_path(self) -> Path:
        return self.directory / LOCK_FILE

    @property
    def is_debootstrap(self) -> bool:
        return self.base == DEBOOTSTRAP


@dataclass(frozen=True, order=True)
class InstalledPackage:
    """A package as dpkg reports it installed: name, version, architecture."""

    name: str
    version: str
    architecture: str

    def pin(self) -> str:
        """The ``apt-get install`` argument that installs exactly this version."""
        if self.architecture in ("all", "amd64") or not self.architecture:
            return f"{self.name}={self.version}"
        return f"{self.name}:{self.architecture}={self.version}"

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.name, self.version, self.architecture)

    def check_pin(self, where: Path | str) -> None:
        """Name, version and architecture follow Debian policy (they reach argv)."""
        if not (
            isinstance(self.name, str)
            and _PKG_RE.match(self.name)
            and isinstance(self.version, str)
            and _VERSION_RE.match(self.version)
            and isinstance(self.architecture, str)
            and _ARCH_RE.match(self.architecture)
        ):
            raise InputError(f"{where}: bad package entry {self}")

    def __str__(self) -> str:
        return f"{self.name}={self.version} ({self.architecture})"


@dataclass(frozen=True, order=True)
class LockedPackage(InstalledPackage):
    """A locked package: the exact ``.deb`` (sha256, size, archive path)."""

    sha256: str = ""
    size: int = 0
    filename: str = ""  # the .deb's path below a Debian archive's root

    def check(self, where: Path | str) -> LockedPackage:
        """Validate every field; a lock entry is used in URLs, paths and argv."""
        self.check_pin(where)
        if not (isinstance(self.sha256, str) and _SHA256_RE.match(self.sha256)):
            raise InputError(f"{where}: package {self}: bad sha256 {self.sha256!r}")
        size = self.size
        if not (isinstance(size, int) and not isinstance(size, bool) and 0 < size <= MAX_DEB_BYTES):
            raise InputError(f"{where}: package {self}: bad size {self.size!r}")
        if not (
            isinstance(self.filename, str)
            and _POOL_PATH_RE.match(self.filename)
            and ".." not in self.filename.split("/")
        ):
            raise InputError(f"{where}: package {self}: bad filename {self.filename!r}")
        return self

    def installed(self) -> InstalledPackage:
        return InstalledPackage(self.name, self.version, self.architecture)


@dataclass(frozen=True)
class LockedFile:
    target: str
    sha256: str


@dataclass(frozen=True)
class Lock:
    """A lock file's content; ``digest`` is the environment's identity."""

    name: str
    base: str
    parent: str | None
    parent_lock_digest: str | None
    architecture: str
    packages: tuple[LockedPackage, ...]
    files: tuple[LockedFile, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": LOCK_FORMAT,
            "name": self.name,
            "base": self.base,
            "parent": (
                None
                if self.parent is None
                else {"name": self.parent, "lock_digest": self.parent_lock_digest}
            ),
            "architecture": self.architecture,
            "files": [{"target": f.target, "sha256": f.sha256} for f in self.files],
            "packages": [
                {
                    "name": p.name,
                    "version": p.version,
                    "architecture": p.architecture,
                    "sha256": p.sha256,
                    "size": p.size,
                    "filename": p.filename,
                }
                for p in self.packages
            ],
        }

    def canonical_bytes(self) -> bytes:
        """The one byte form of this lock: sorted keys, two-space indent, LF."""
        text = json.dumps(self.to_json(), indent=2, sort_keys=True, ensure_ascii=False)
        return (text + "\n").encode("utf-8")

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.canonical_bytes()).hexdigest()

    @property
    def short_digest(self) -> str:
        return self.digest.removeprefix("sha256:")[:12]

    @property
    def image_tag(self) -> str:
        return f"{IMAGE_REPOSITORY_PREFIX}{self.name}:{self.short_digest}"

    def package_map(self) -> dict[tuple[str, str], str]:
        return {(p.name, p.architecture): p.version for p in self.packages}


def _str(doc: dict[str, Any], key: str, where: Path, *, required: bool = True) -> str | None:
    value = doc.get(key)
    if value is None:
        if required:
            raise InputError(f"{where}: missing {key!r}")
        return None
    if not isinstance(value, str):
        raise InputError(f"{where}: {key!r} must be a string")
    return value


def load_definition(name: str, containers_dir: Path | None = None) -> Definition:
    """Read and validate ``containers/NAME/environment.toml``."""
    validate_name(name)
    root = containers_dir or default_containers_dir()
    directory = root / name
    path = directory / DEFINITION_FILE
    if not path.is_file():
        raise UsageError(
            f"unknown environment {name!r}: no {path}",
            hint="the environments there are: rebuild env list",
        )
    try:
        doc = tomllib.loads(read_text_bounded(path, MAX_DEFINITION_BYTES))
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: not valid TOML: {e}") from None
    known = {"name", "description", "parent", "base", "suite", "variant", "apt_sources"}
    known |= {"packages", "files"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise InputError(f"{path}: unknown keys {', '.join(unknown)}")
    if doc.get("name") != name:
        raise InputError(f"{path}: name must be {name!r} (the directory's name)")
    description = _str(doc, "description", path, required=False) or ""
    parent = _str(doc, "parent", path, required=False)
    base = _str(doc, "base", path, required=False)
    if (parent is None) == (base is None):
        raise InputError(f"{path}: set exactly one of 'parent' and 'base'")
    suite = variant = template = None
    if parent is not None:
        validate_name(parent)
        if parent == name:
            raise InputError(f"{path}: an environment cannot be its own parent")
    elif base == DEBOOTSTRAP:
        suite = _str(doc, "suite", path)
        variant = _str(doc, "variant", path, required=False) or "minbase"
        if suite is None or not _SUITE_RE.match(suite):
            raise InputError(f"{path}: bad suite {suite!r}")
        if variant not in ("minbase", "buildd", "fakechroot"):
            raise InputError(f"{path}: bad variant {variant!r}")
    elif base is not None and not _PINNED_IMAGE_RE.match(base):
        raise InputError(
            f"{path}: base must be 'debootstrap' or an image pinned by digest "
            f"(REPOSITORY@sha256:<64 hex>), not {base!r}"
        )
    sources_name = _str(doc, "apt_sources", path, required=base == DEBOOTSTRAP)
    if sources_name is not None:
        template = _read_member(directory, sources_name, path).decode("utf-8", "replace")
        if "@MIRROR@" not in template:
            raise InputError(f"{path}: {sources_name} has no @MIRROR@ placeholder")
    packages_raw = _package_names(doc.get("packages", []), path)
    files = _file_specs(doc.get("files", []), directory, path)
    return Definition(
        name=name,
        directory=directory,
        description=description,
        parent=parent,
        base=base,
        suite=suite,
        variant=variant,
        apt_sources_template=template,
        packages=tuple(sorted(set(packages_raw))),
        files=tuple(sorted(files, key=lambda f: f.target)),
    )


def _package_names(packages_raw: object, path: Path) -> list[str]:
    """The definition's ``packages``: at most MAX_PACKAGES Debian package names.

    Raises InputError otherwise.
    """
    if not isinstance(packages_raw, list) or len(packages_raw) > MAX_PACKAGES:
        raise InputError(f"{path}: 'packages' must be a list of package names")
    for pkg in packages_raw:
        if not isinstance(pkg, str) or not _PKG_RE.match(pkg):
            raise InputError(f"{path}: bad package name {pkg!r}")
    return packages_raw


def _file_specs(files_raw: object, directory: Path, path: Path) -> list[FileSpec]:
    """The definition's ``[[files]]``, each read from ``directory`` and hashed.

    Raises InputError for more than MAX_FILES, a malformed table, a bad
    target or a source outside ``directory``.
    """
    if not isinstance(files_raw, list) or len(files_raw) > MAX_FILES:
        raise InputError(f"{path}: 'files' must be a list of at most {MAX_FILES} tables")
    files: list[FileSpec] = []
    for entry in files_raw:
        if not isinstance(entry, dict) or set(entry) != {"source", "target"}:
            raise InputError(f"{path}: each [[files]] needs exactly 'source' and 'target'")
        src, target = entry["source"], entry["target"]
        if not isinstance(target, str) or not _TARGET_RE.match(target) or ".." in target:
            raise InputError(f"{path}: bad file target {target!r}")
        if not isinstance(src, str):
            raise InputError(f"{path}: bad file source {src!r}")
        data = _read_member(directory, src, path)
        files.append(
            FileSpec(
                source=(directory / src).resolve(),
                target=target,
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )
    return files


def _read_member(directory: Path, relative: str, where: Path) -> bytes:
    """Read a file named by the definition; it must stay inside its directory."""
    candidate = (directory / relative).resolve()
    if not candidate.is_relative_to(directory.resolve()):
        raise InputError(f"{where}: {relative!r} points outside {directory}")
    return read_bounded(candidate, MAX_FILE_BYTES)


def list_definitions(containers_dir: Path | None = None) -> list[str]:
    root = containers_dir or default_containers_dir()
    if not root.is_dir():
        raise UsageError(f"no environments directory at {root}")
    return sorted(
        p.name for p in root.iterdir() if (p / DEFINITION_FILE).is_file() and _NAME_RE.match(p.name)
    )


def build_order(names: list[str], containers_dir: Path | None = None) -> list[Definition]:
    """Definitions for ``names`` and their ancestors, parents first; refuses cycles."""
    ordered: list[Definition] = []
    seen: set[str] = set()

    def visit(name: str, stack: tuple[str, ...]) -> None:
        if name in stack:
            raise InputError(f"environment parents form a cycle: {' -> '.join((*stack, name))}")
        if name in seen:
            return
        d = load_definition(name, containers_dir)
        if d.parent is not None:
            visit(d.parent, (*stack, name))
        seen.add(name)
        ordered.append(d)

    for n in names:
        visit(n, ())
    return ordered


def parse_lock(data: bytes, where: Path | str) -> Lock:
    """Parse a lock file's bytes; they must be in canonical form."""
    doc = _lock_document(data, where)
    if doc.get("format") == LOCK_FORMAT_V1:
        raise InputError(
            f"{where}: a {LOCK_FORMAT_V1} lock pins versions but not the packages' sha256; "
            "re-lock it with: rebuild env lock NAME --keep-versions"
        )
    if doc.get("format") != LOCK_FORMAT:
        raise InputError(f"{where}: not a {LOCK_FORMAT} lock file")
    try:
        name = doc["name"]
        base = doc["base"]
        arch = doc["architecture"]
        parent_doc = doc["parent"]
        parent = parent_doc["name"] if parent_doc is not None else None
        parent_digest = parent_doc["lock_digest"] if parent_doc is not None else None
        if not isinstance(doc["packages"], list) or len(doc["packages"]) > MAX_PACKAGES:
            raise InputError(f"{where}: 'packages' must be a list of at most {MAX_PACKAGES}")
        packages = tuple(
            LockedPackage(
                p["name"], p["version"], p["architecture"], p["sha256"], p["size"], p["filename"]
            ).check(where)
            for p in doc["packages"]
        )
        files = tuple(LockedFile(f["target"], f["sha256"]) for f in doc["files"])
    except (KeyError, TypeError) as e:
        raise InputError(f"{where}: malformed lock file ({e})") from None
    seen: set[tuple[str, str]] = set()
    for p in packages:
        if (p.name, p.architecture) in seen:
            raise InputError(f"{where}: {p.name} ({p.architecture}) is locked twice")
        seen.add((p.name, p.architecture))
    if parent_digest is not None and not _DIGEST_RE.match(str(parent_digest)):
        raise InputError(f"{where}: bad parent lock digest")
    lock = Lock(
        name=validate_name(str(name)),
        base=str(base),
        parent=parent,
        parent_lock_digest=parent_digest,
        architecture=str(arch),
        packages=packages,
        files=files,
    )
    if lock.canonical_bytes() != data:
        raise InputError(
            f"{where}: lock file is not in canonical form (edited by hand?); "
            "regenerate it with: rebuild env lock NAME"
        )
    return lock


def _lock_document(data: bytes, where: Path | str) -> dict[str, Any]:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{where}: not a JSON lock file: {e}") from None
    if not isinstance(doc, dict):
        raise InputError(f"{where}: not a {LOCK_FORMAT} lock file")
    return doc


def read_pinned_versions(definition: Definition) -> list[InstalledPackage]:
    """The versions an existing lock (v1 or v2) pins, for a re-lock that keeps them.

    Only names, versions and architectures are taken, each validated; the
    caller installs them from the mirror and records fresh digests.
    """
    path = definition.lock_path
    if not path.is_file():
        raise UsageError(f"{path}: no lock to keep the versions of")
    doc = _lock_document(read_bounded(path, MAX_LOCK_BYTES), path)
    if doc.get("format") not in (LOCK_FORMAT, LOCK_FORMAT_V1):
        raise InputError(f"{path}: not a {LOCK_FORMAT} lock file")
    raw = doc.get("packages")
    if not isinstance(raw, list) or len(raw) > MAX_PACKAGES:
        raise InputError(f"{path}: 'packages' must be a list of at most {MAX_PACKAGES}")
    pins: list[InstalledPackage] = []
    for entry in raw:
        try:
            pin = InstalledPackage(entry["name"], entry["version"], entry["architecture"])
        except (KeyError, TypeError) as e:
            raise InputError(f"{path}: malformed package entry ({e})") from None
        pin.check_pin(path)
        pins.append(pin)
    return sorted(set(pins))


def make_lock(
    definition: Definition,
    packages: list[LockedPackage],  # every installed package with its .deb's digest
    architecture: str,
    parent_lock: Lock | None,
) -> Lock:
    base = definition.base or ""
    if definition.is_debootstrap:
        base = f"debootstrap {definition.suite} {definition.variant}"
    return Lock(
        name=definition.name,
        base=base if parent_lock is None else parent_lock.base,
        parent=definition.parent,
        parent_lock_digest=None if parent_lock is None else parent_lock.digest,
        architecture=architecture,
        packages=tuple(sorted(set(packages))),
        files=tuple(LockedFile(f.target, f.sha256) for f in definition.files),
    )


def load_lock(definition: Definition) -> Lock:
    path = definition.lock_path
    if not path.is_file():
        raise UsageError(
            f"environment {definition.name!r} has no lock file {path}; "
            f"create it with: rebuild env lock {definition.name}"
        )
    lock = parse_lock(read_bounded(path, MAX_LOCK_BYTES), path)
    if lock.name != definition.name:
        raise InputError(f"{path}: lock names {lock.name!r}, expected {definition.name!r}")
    wanted = {(f.target, f.sha256) for f in definition.files}
    locked = {(f.target, f.sha256) for f in lock.files}
    if wanted != locked:
        raise InputError(
            f"{path}: the definition's files changed since the lock was made; "
            f"re-lock with: rebuild env lock {definition.name}"
        )
    return lock
