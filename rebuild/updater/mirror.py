"""The mirror layout (``rebuild-mirror/v1``): static files any web server can serve.

A mirror is untrusted: it only stores bytes. The layout lets an updater find
the newest version and download an artifact and its bundle; the gate decides
whether those bytes are trustworthy. Layout under the mirror's root::

    <package>/index.json                 the version list (format below)
    <package>/<version>/<artifact>       the released artifact, under its released name
    <package>/<version>/bundle.json      the rebuild-bundle/v1 for that artifact
    log/tile/<L>/<N>[.p/<W>]             optional: the log's hash tiles (C2SP tlog-tiles)

``index.json``::

    {"format": "rebuild-mirror/v1", "package": "hello-phar",
     "releases": [{"version": "1.0.0", "artifact": "hello-1.0.0.phar",
                   "size": 1234, "sha256": "<hex>"}]}

:func:`parse_index` reads that strictly and with bounds (the updater reads it
from an untrusted peer); :func:`publish` adds one release to a mirror directory
with atomic writes under a lock, so a web server never serves half a file and
two publishers never lose each other's entry. Published releases are
immutable: publishing a version again with other bytes is refused.

With the log's tiles (:class:`LogTiles`, ``rebuild mirror publish --log``),
:func:`publish` first copies every hash tile of the bundle's checkpoint's
tree that the mirror lacks into ``log/``, so that an updater that skipped
releases can compute the consistency proof it needs from its mirrors alone
(:mod:`rebuild.updater.logtiles`). The name ``log`` is therefore reserved:
no package of that name can be published.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from rebuild.errors import InputError, StorageError, TransportError
from rebuild.fsio import atomic_write, read_bounded
from rebuild.hashing import sha256_file
from verify.dsse import load_json
from verify.errors import FormatError, TileFormatError
from verify.merkle import HASH_SIZE
from verify.tiles import FULL_TILE_BYTES, TILE_WIDTH, Tile, audit_tiles, tiles_between

FORMAT: Final = "rebuild-mirror/v1"
INDEX_NAME: Final = "index.json"
BUNDLE_NAME: Final = "bundle.json"
MAX_INDEX_BYTES: Final = 1 << 20
MAX_RELEASES: Final = 4096
MAX_PUBLISH_ARTIFACT: Final = 4 << 30
LOG_DIR: Final = "log"
"""The mirror's copy of the log's tiles (a tlog-tiles prefix); not a package name."""

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
class LogTiles:
    """The log's tiles to copy with a release: a reader and the tree (the bundle's checkpoint).

    The tree is what the bundle's checkpoint says (not verified here: the
    updater checks every proof against signed roots); the copy must
    reproduce its root, which catches a ``--log`` of another log.
    """

    read: Callable[[Tile], bytes]
    size: int
    root_hash: bytes
    where: str


@dataclass(frozen=True)
class TilesCopied:
    size: int
    copied: int
    present: int
    bytes: int

    def as_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "copied": self.copied,
            "present": self.present,
            "bytes": self.bytes,
        }


@dataclass(frozen=True)
class Published:
    package: str
    release: MirrorRelease
    added: bool  # False when the identical release was already there
    log_tiles: TilesCopied | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "package": self.package,
            **self.release.to_dict(),
            "added": self.added,
            "log_tiles": None if self.log_tiles is None else self.log_tiles.as_json(),
        }


def copy_log_tiles(root: Path, tiles: LogTiles) -> TilesCopied:
    """Copy the hash tiles of ``tiles.size`` that ``root/log`` lacks, then audit the copy.

    Full tiles, and a partial tile at a given width, never change in a log
    that does not fork, so a tile already present is kept. The audit
    (:func:`verify.tiles.audit_tiles`, reading the mirror's files) checks
    that every full tile copied now hashes to its entry one level up and
    that the copy reproduces the checkpoint's root; tiles copied by earlier
    publishes were audited then. Raises TransportError (the log failed or
    served a tile of the wrong length) and StorageError (the copy is not the
    checkpoint's tree: ``--log`` is another log, or ``log/`` holds tiles of
    another log or a fork).
    """
    base = root / LOG_DIR
    copied: list[Tile] = []
    present = total = 0
    for tile in tiles_between(0, tiles.size):
        path = base / tile.path()
        if path.is_file():
            present += 1
            continue
        try:
            data = tiles.read(tile)
        except TransportError as e:
            raise TransportError(
                f"{e} (a tile of the bundle's checkpoint, size {tiles.size}: is {tiles.where} "
                "the log that signed it?)"
            ) from None
        if len(data) != tile.width * HASH_SIZE:
            raise TransportError(
                f"{tiles.where}/{tile.path()}: {len(data)} bytes, not {tile.width} hashes"
            )
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        atomic_write(path, data)
        copied.append(tile)
        total += len(data)

    def local(tile: Tile) -> bytes:
        try:
            return read_bounded(base / tile.path(), FULL_TILE_BYTES)
        except InputError as e:
            raise TileFormatError(str(e)) from None

    # The first leaf a copied tile covers: auditing from there covers every copied tile.
    start = min((t.n * TILE_WIDTH ** (t.level + 1) for t in copied), default=tiles.size)
    problems = audit_tiles(tiles.size, tiles.root_hash, local, start=min(start, tiles.size))
    if problems:
        shown = "; ".join(str(p) for p in problems[:3])
        raise StorageError(
            f"{base}: the tiles do not reproduce the bundle's checkpoint (size {tiles.size}): "
            f"{tiles.where} is another log, or {base} holds tiles of another log or a fork "
            f"({shown})"
        )
    return TilesCopied(tiles.size, len(copied), present, total)


def publish(
    root: Path,
    artifact: Path,
    bundle: Path,
    *,
    package: str,
    version: str,
    artifact_name: str,
    log_tiles: LogTiles | None = None,
) -> Published:
    """Add one release to the mirror at ``root``; idempotent for identical bytes.

    With ``log_tiles`` the log's tiles for the bundle's checkpoint are
    copied first (also when the release was published before).
    """
    if not valid_package(package) or package == LOG_DIR:
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
        # Tiles first: an updater that sees the release listed finds them.
        copied = None if log_tiles is None else copy_log_tiles(root, log_tiles)
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
                return Published(package, release, added=False, log_tiles=copied)
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
    return Published(package, release, added=True, log_tiles=copied)
