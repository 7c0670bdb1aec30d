"""The mirror layout (``rebuild-mirror/v1``): static files any web server can serve.

A mirror is untrusted: it only stores bytes. The layout lets an updater find
the newest version and download an artifact and its bundle; the gate decides
whether those bytes are trustworthy. Layout under the mirror's root::

    <package>/index.json                 the version list (format below)
    <package>/<version>/<artifact>       the released artifact, under its released name
    <package>/<version>/bundle.json      the rebuild-bundle/v1 for that artifact

``index.json``::

    {"format": "rebuild-mirror/v1", "package": "hello-phar",
     "releases": [{"version": "1.0.0", "artifact": "hello-1.0.0.phar",
                   "size": 1234, "sha256": "<hex>"}]}

:func:`parse_index` reads that strictly and with bounds (the updater reads it
from an untrusted peer); :func:`publish` adds one release to a mirror directory
with atomic writes under a lock, so a web server never serves half a file and
two publishers never lose each other's entry. Published releases are
immutable: publishing a version again with other bytes is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from rebuild.errors import InputError, StorageError, TransportError
from rebuild.fsio import atomic_write, read_bounded
from rebuild.hashing import sha256_file
from verify.dsse import load_json
from verify.errors import FormatError

FORMAT: Final = "rebuild-mirror/v1"
INDEX_NAME: Final = "index.json"
BUNDLE_NAME: Final = "bundle.json"
MAX_INDEX_BYTES: Final = 1 << 20
MAX_RELEASES: Final = 4096
MAX_PUBLISH_ARTIFACT: Final = 4 << 30

# Names that become URL path segments and directory names: no "/", no "..",
# no leading dot, nothing a web server or a file system treats specially.
PACKAGE_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
VERSION_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+!-]{0,127}")
ARTIFACT_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,254}")
_SHA256_RE: Final = re.compile(r"[0-9a-f]{64}")


def valid_package(name: str) -> bool:
    return bool(PACKAGE_RE.fullmatch(name)) and ".." not in name


def valid_version(version: str) -> bool:
    return bool(VERSION_RE.fullmatch(version)) and ".." not in version


def valid_artifact_name(name: str) -> bool:
    return bool(ARTIFACT_RE.fullmatch(name)) and ".." not in name and name != BUNDLE_NAME


@dataclass(frozen=True)
class MirrorRelease:
    """One entry of a mirror's version list (untrusted until the gate accepts it)."""

    version: str
    artifact: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "artifact": self.artifact,
            "size": self.size,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class MirrorIndex:
    package: str
    releases: tuple[MirrorRelease, ...]

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "package": self.package,
            "releases": [r.to_dict() for r in self.releases],
        }
        return json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"

    def get(self, version: str) -> MirrorRelease | None:
        return next((r for r in self.releases if r.version == version), None)


def index_path(package: str) -> str:
    return f"{package}/{INDEX_NAME}"


def artifact_path(package: str, release: MirrorRelease) -> str:
    return f"{package}/{release.version}/{release.artifact}"


def bundle_path(package: str, version: str) -> str:
    return f"{package}/{version}/{BUNDLE_NAME}"


def parse_index(data: bytes, package: str, *, what: str = INDEX_NAME) -> MirrorIndex:
    """Parse an index strictly; TransportError (a misbehaving mirror) on anything off."""

    def bad(problem: str) -> TransportError:
        return TransportError(f"{what}: {problem}")

    try:
        doc = load_json(data, "the version list", MAX_INDEX_BYTES)
    except FormatError as e:
        raise bad(str(e)) from None
    if not isinstance(doc, dict) or set(doc) != {"format", "package", "releases"}:
        raise bad("expected exactly the fields format, package, releases")
    if doc["format"] != FORMAT:
        raise bad(f"format is not {FORMAT!r}")
    if doc["package"] != package:
        raise bad(f"lists package {doc['package']!r}, not {package!r}")
    items = doc["releases"]
    if not isinstance(items, list) or len(items) > MAX_RELEASES:
        raise bad(f"releases must be a list of at most {MAX_RELEASES}")
    releases: list[MirrorRelease] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) != {"version", "artifact", "size", "sha256"}:
            raise bad(f"releases[{i}]: expected exactly version, artifact, size, sha256")
        v, a, n, h = item["version"], item["artifact"], item["size"], item["sha256"]
        if not isinstance(v, str) or not valid_version(v):
            raise bad(f"releases[{i}]: invalid version")
        if not isinstance(a, str) or not valid_artifact_name(a):
            raise bad(f"releases[{i}]: invalid artifact file name")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise bad(f"releases[{i}]: invalid size")
        if not isinstance(h, str) or not _SHA256_RE.fullmatch(h):
            raise bad(f"releases[{i}]: invalid sha256")
        if v in seen:
            raise bad(f"version {v} is listed twice")
        seen.add(v)
        releases.append(MirrorRelease(v, a, n, h))
    return MirrorIndex(package, tuple(releases))


@contextlib.contextmanager
def _publish_lock(root: Path) -> Iterator[None]:
    try:
        fd = os.open(root / ".publish.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        raise StorageError(f"{root}: cannot open the publish lock: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Published:
    package: str
    release: MirrorRelease
    added: bool  # False when the identical release was already there

    def as_json(self) -> dict[str, Any]:
        return {"package": self.package, **self.release.to_dict(), "added": self.added}


def publish(
    root: Path, artifact: Path, bundle: Path, *, package: str, version: str, artifact_name: str
) -> Published:
    """Add one release to the mirror at ``root``; idempotent for identical bytes."""
    if not valid_package(package):
        raise InputError(f"{bundle}: package name {package!r} cannot be a mirror path")
    if not valid_version(version):
        raise InputError(f"{bundle}: version {version!r} cannot be a mirror path")
    if not valid_artifact_name(artifact_name):
        raise InputError(f"{bundle}: artifact name {artifact_name!r} cannot be a mirror path")
    data = read_bounded(artifact, MAX_PUBLISH_ARTIFACT)
    bundle_bytes = read_bounded(bundle, MAX_INDEX_BYTES * 64)
    release = MirrorRelease(version, artifact_name, len(data), sha256_file(artifact))
    if not root.is_dir():
        raise StorageError(f"{root}: no such directory")
    with _publish_lock(root):
        pkg_dir = root / package
        index_file = pkg_dir / INDEX_NAME
        if index_file.exists():
            index = parse_index(read_bounded(index_file, MAX_INDEX_BYTES), package)
        else:
            index = MirrorIndex(package, ())
        existing = index.get(version)
        if existing is not None:
            same_bundle = (pkg_dir / version / BUNDLE_NAME).is_file() and read_bounded(
                pkg_dir / version / BUNDLE_NAME, MAX_INDEX_BYTES * 64
            ) == bundle_bytes
            if existing == release and same_bundle:
                return Published(package, release, added=False)
            raise StorageError(
                f"{root}: {package} {version} is already published with other bytes; "
                "releases on a mirror are immutable"
            )
        if len(index.releases) >= MAX_RELEASES:
            raise StorageError(f"{index_file}: already lists {MAX_RELEASES} releases")
        version_dir = pkg_dir / version
        version_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        # Files first, the index last: a reader who sees the version listed finds its files.
        atomic_write(version_dir / artifact_name, data)
        atomic_write(version_dir / BUNDLE_NAME, bundle_bytes)
        atomic_write(index_file, MirrorIndex(package, (*index.releases, release)).to_json())
    return Published(package, release, added=True)
