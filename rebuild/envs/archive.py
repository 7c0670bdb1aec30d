"""Export and import an environment as one file: its locks and ``.deb`` files.

An export lets rebuilders share an exact environment without a container
registry or a mirror that still has the pinned versions. It is a plain
ustar archive of regular files, in this order::

    rebuild-env-export.json     manifest: environment, its lock chain, optional image
    locks/<NAME>.json           the lock of the environment and of each parent
    debs/<sha256>.deb           every .deb those locks pin, once, sorted
    image/<sha256>.tar          optional (--with-image): `docker save` of its image

Members carry fixed metadata (mtime 0, owner 0, mode 0644), so exporting the
same environment twice gives the same bytes (without an image).

Import decides whether an archive is exactly the environment this machine
has locked, and only then adds its packages to the store. The trust anchor
is the local lock (``containers/NAME/lock.json``), never the archive: every
lock in the archive must be byte-identical to the local one, every ``.deb``
must be one those locks pin (sha256 and size), and all of them must be
there. The reader accepts only what the exporter writes: ustar headers with
valid checksums, regular files with exact names, in order, each within its
bound; a link, a directory, a device, an extended header, a path outside
those names, a duplicate, a member out of order or over its bound is refused
before its data is read. Nothing reaches the store until the whole archive
has been read and checked, so a refused import adds nothing.

An imported image (``--with-image`` on both sides) is as trustworthy as
whoever exported it: its id and package set are checked, not every file in
it. Building from the imported packages (``rebuild env build NAME``) needs
no mirror and is checked against the lock end to end.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rebuild.envs.definition import (
    LABEL_LOCK_DIGEST,
    MAX_LOCK_BYTES,
    Lock,
    LockedPackage,
    build_order,
    load_definition,
    load_lock,
    parse_lock,
    validate_name,
)
from rebuild.envs.fetch import ensure_in_store
from rebuild.envs.mirror import Mirrors
from rebuild.envs.store import PackageStore, file_chunks, hash_stream
from rebuild.errors import InputError, NegativeVerdict, StorageError, ToolError
from rebuild.fsio import fsync_dir
from rebuild.hashing import sha256_file

Progress = Callable[[str], None]

EXPORT_FORMAT = "rebuild-env-export/v1"
MANIFEST = "rebuild-env-export.json"
MAX_MANIFEST_BYTES = 64 * 1024
# ustar's size field holds at most 8 GiB - 1; an image is refused above it.
MAX_IMAGE_BYTES = 8 * 1024**3 - 1
MAX_LOCKS = 16
_BLOCK = 512
_CHUNK = 1024 * 1024

_LOCK_RE = re.compile(r"^locks/([a-z0-9][a-z0-9.-]{0,62})\.json$")
_DEB_RE = re.compile(r"^debs/([0-9a-f]{64})\.deb$")
_IMAGE_RE = re.compile(r"^image/([0-9a-f]{64})\.tar$")
_IMAGE_ID_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class ArchiveRejectedError(NegativeVerdict):
    """The archive is not the environment this machine's lock names."""


@dataclass(frozen=True)
class ExportReport:
    path: Path
    sha256: str
    size: int
    name: str
    lock_digest: str
    locks: tuple[str, ...]
    packages: int
    package_bytes: int
    image_id: str | None
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "sha256": self.sha256,
            "size": self.size,
            "name": self.name,
            "lock_digest": self.lock_digest,
            "locks": list(self.locks),
            "packages": self.packages,
            "package_bytes": self.package_bytes,
            "image_id": self.image_id,
            "seconds": round(self.seconds, 2),
        }


@dataclass(frozen=True)
class ImportReport:
    path: Path
    name: str
    lock_digest: str
    packages: int
    added: int  # packages the store did not have before
    image_id: str | None  # loaded and tagged (only with --with-image)
    image_in_archive: bool
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "name": self.name,
            "lock_digest": self.lock_digest,
            "packages": self.packages,
            "added_to_store": self.added,
            "image_in_archive": self.image_in_archive,
            "image_id": self.image_id,
            "seconds": round(self.seconds, 2),
        }


# ----------------------------------------------------------------- export


def _lock_chain(name: str, containers_dir: Path | None) -> list[Lock]:
    """The locks of ``name`` and its parents (parents first), checked to chain."""
    locks = [load_lock(d) for d in build_order([name], containers_dir)]
    for parent, child in itertools.pairwise(locks):
        if child.parent_lock_digest != parent.digest:
            raise InputError(
                f"{child.name}'s lock was made on {parent.name} lock {child.parent_lock_digest}, "
                f"not the current {parent.digest}; re-lock with: rebuild env lock {child.name}"
            )
    return locks


def _chain_packages(locks: list[Lock]) -> list[LockedPackage]:
    """Every package of the chain, one per ``.deb`` (sha256), sorted by sha256."""
    by_digest = {p.sha256: p for lock in locks for p in lock.packages}
    return [by_digest[d] for d in sorted(by_digest)]


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class _Hashing:
    """A read-only file wrapper that hashes what is read through it."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.sha256 = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.sha256.update(data)
        return data


def export_environment(
    name: str,
    out: Path,
    store: PackageStore,
    mirrors_for: Callable[[], Mirrors] | None,
    progress: Progress = lambda _: None,
    *,
    with_image: bool = False,
    containers_dir: Path | None = None,
) -> ExportReport:
    """Write ``out``: the environment's lock chain, every pinned ``.deb``, maybe its image.

    Packages missing from the store are fetched first; each is hashed again
    as it is written. ``out`` appears whole or not at all.
    """
    started = time.monotonic()
    validate_name(name)
    locks = _lock_chain(name, containers_dir)
    lock = locks[-1]
    packages = _chain_packages(locks)
    ensure_in_store(packages, store, mirrors_for, progress)
    directory = out.parent if str(out.parent) else Path(".")
    with contextlib.ExitStack() as stack:
        image_id: str | None = None
        image_file: tuple[Path, dict[str, Any]] | None = None
        if with_image:
            image_id, image_file = _save_image(name, containers_dir, stack, directory, progress)
        manifest = {
            "format": EXPORT_FORMAT,
            "environment": name,
            "lock_digest": lock.digest,
            "locks": [{"name": x.name, "digest": x.digest} for x in locks],
            "packages": len(packages),
            "image": None if image_file is None else {"id": image_id, **image_file[1]},
        }
        manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=directory)
        except OSError as e:
            raise StorageError(f"{out}: cannot create a file in {directory}: {e}") from None
        tmp = Path(tmp_name)
        stack.callback(tmp.unlink, missing_ok=True)
        progress(f"writing {len(packages)} packages to {out}")
        with os.fdopen(fd, "wb") as raw:
            _write_archive(raw, manifest_bytes, locks, packages, store=store, image_file=image_file)
            raw.flush()
            os.fsync(raw.fileno())
        digest = sha256_file(tmp)
        size = tmp.stat().st_size
        os.replace(tmp, out)
        fsync_dir(directory)
    return ExportReport(
        out,
        digest,
        size,
        name,
        lock.digest,
        tuple(x.name for x in locks),
        len(packages),
        sum(p.size for p in packages),
        image_id,
        time.monotonic() - started,
    )


def _write_archive(
    raw: IO[bytes],
    manifest_bytes: bytes,
    locks: list[Lock],
    packages: list[LockedPackage],
    *,
    store: PackageStore,
    image_file: tuple[Path, dict[str, Any]] | None,
) -> None:
    """The ustar stream: manifest, locks, each ``.deb`` (hashed again as it is read), the image.

    Raises StorageError when a store file changed while it was written.
    """
    with tarfile.open(fileobj=raw, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(_tarinfo(MANIFEST, len(manifest_bytes)), io.BytesIO(manifest_bytes))
        for x in locks:
            data = x.canonical_bytes()
            tar.addfile(_tarinfo(f"locks/{x.name}.json", len(data)), io.BytesIO(data))
        for p in packages:
            with store.path(p).open("rb") as f:
                reader = _Hashing(f)
                tar.addfile(_tarinfo(f"debs/{p.sha256}.deb", p.size), reader)
            if reader.sha256.hexdigest() != p.sha256:
                raise StorageError(f"package store file {store.path(p)} changed while exporting it")
        if image_file is not None:
            path, meta = image_file
            with path.open("rb") as f:
                tar.addfile(_tarinfo(f"image/{meta['sha256']}.tar", meta["size"]), f)


def _save_image(
    name: str,
    containers_dir: Path | None,
    stack: contextlib.ExitStack,
    directory: Path,
    progress: Progress,
) -> tuple[str, tuple[Path, dict[str, Any]]]:
    """`docker save` the environment's verified image to a temporary file."""
    # Docker only for --with-image: the CLI must start without the SDK.
    from rebuild.envs import _docker  # noqa: PLC0415
    from rebuild.envs.images import verified_image  # noqa: PLC0415

    _, image = verified_image(name, containers_dir)
    progress(f"saving image {image.id[:19]}")
    fd, tmp_name = tempfile.mkstemp(prefix=".image-", suffix=".tar", dir=directory)
    path = Path(tmp_name)
    stack.callback(path.unlink, missing_ok=True)
    digest = hashlib.sha256()
    size = 0
    with _docker.engine_errors(f"docker save of {image.id[:19]}"), os.fdopen(fd, "wb") as f:
        for chunk in _docker.client().images.get(image.id).save(chunk_size=_CHUNK):
            size += len(chunk)
            if size > MAX_IMAGE_BYTES:
                raise ToolError(f"image {image.id[:19]} is larger than {MAX_IMAGE_BYTES} bytes")
            digest.update(chunk)
            f.write(chunk)
    return image.id, (path, {"sha256": digest.hexdigest(), "size": size})


# ----------------------------------------------------------------- import


def _octal(field: bytes, what: str, where: str) -> int:
    text = field.rstrip(b"\0 ").lstrip(b" ")
    if not text or not re.fullmatch(rb"[0-7]+", text):
        raise InputError(f"{where}: bad {what} field in a tar header")
    return int(text, 8)


class _Bounded:
    """Reads exactly the ``size`` bytes of one member; the archive ending first is an error."""

    def __init__(self, f: IO[bytes], size: int, what: str) -> None:
        self._f = f
        self.left = size
        self._what = what

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        want = self.left if n < 0 else min(n, self.left)
        data = self._f.read(want)
        if want and not data:
            raise InputError(f"{self._what}: truncated")
        self.left -= len(data)
        return data


@dataclass(frozen=True)
class _Member:
    name: str
    size: int
    stream: _Bounded


def _members(f: IO[bytes], where: str, bound: Callable[[str], int]) -> Iterator[_Member]:
    """Walk a ustar archive, refusing anything but bounded regular files.

    ``bound(name)`` returns the largest size allowed for a member of that
    name (or raises for a name that has no place in an export). The caller
    must read each member's stream before asking for the next one.
    """
    while True:
        header = f.read(_BLOCK)
        if len(header) != _BLOCK:
            raise InputError(f"{where}: truncated (no end-of-archive marker)")
        if header == b"\0" * _BLOCK:
            return
        stored = _octal(header[148:156], "checksum", where)
        if stored != sum(header[:148]) + 8 * 32 + sum(header[156:]):
            raise InputError(f"{where}: a tar header's checksum is wrong")
        if header[257:263] != b"ustar\0":
            raise InputError(f"{where}: not a ustar archive (as rebuild env export writes)")
        kind = header[156:157]
        try:
            name = header[0:100].split(b"\0", 1)[0].decode("ascii")
            prefix = header[345:500].split(b"\0", 1)[0].decode("ascii")
        except UnicodeDecodeError:
            raise InputError(f"{where}: a member name is not ASCII") from None
        if prefix:
            name = f"{prefix}/{name}"
        if kind not in (b"0", b"\0"):
            what = {b"1": "hard link", b"2": "symbolic link", b"5": "directory"}.get(
                kind, f"type {kind!r} entry"
            )
            raise InputError(f"{where}: {name!r} is a {what}; only regular files are accepted")
        size = _octal(header[124:136], "size", where)
        limit = bound(name)
        if size > limit:
            raise InputError(f"{where}: {name} is {size} bytes, over its {limit}-byte bound")
        stream = _Bounded(f, size, f"{where}: {name}")
        yield _Member(name, size, stream)
        if stream.left:
            raise InputError(f"{where}: {name} was not read to its end")
        padding = -size % _BLOCK
        if padding and len(f.read(padding)) != padding:
            raise InputError(f"{where}: truncated after {name}")


def _read_small(member: _Member) -> bytes:
    return b"".join(iter(lambda: member.stream.read(_CHUNK), b""))


class _Plan:
    """What an archive must hold, learnt from its manifest and checked against local locks."""

    def __init__(self, where: str, containers_dir: Path | None) -> None:
        self.where = where
        self.containers_dir = containers_dir
        self.manifest: dict[str, Any] | None = None
        self.expected_locks: dict[str, str] = {}  # name -> digest, in chain order
        self.locks: dict[str, Lock] = {}
        self.packages: dict[str, LockedPackage] = {}  # sha256 -> package
        self.seen_debs: set[str] = set()
        self.image: dict[str, Any] | None = None
        self.image_seen = False

    # Step 1: the manifest names the environment and its lock chain.
    def take_manifest(self, data: bytes) -> None:
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{self.where}: manifest is not JSON: {e}") from None
        if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
            raise InputError(f"{self.where}: not a {EXPORT_FORMAT} archive")
        name = doc.get("environment")
        chain = doc.get("locks")
        if not isinstance(name, str) or not isinstance(chain, list) or not chain:
            raise InputError(f"{self.where}: manifest lacks the environment or its locks")
        if len(chain) > MAX_LOCKS:
            raise InputError(f"{self.where}: more than {MAX_LOCKS} locks")
        validate_name(name)
        for entry in chain:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise InputError(f"{self.where}: bad lock entry in the manifest")
            self.expected_locks[validate_name(entry["name"])] = str(entry.get("digest"))
        if list(self.expected_locks)[-1] != name or doc.get("lock_digest") != chain[-1].get(
            "digest"
        ):
            raise InputError(f"{self.where}: manifest's lock chain does not end at {name}")
        # The local chain is the trust anchor: same environments, same locks.
        local = _lock_chain(name, self.containers_dir)
        local_digests = {x.name: x.digest for x in local}
        if list(local_digests) != list(self.expected_locks):
            raise ArchiveRejectedError(
                f"{self.where}: holds the lock chain {' -> '.join(self.expected_locks)}, "
                f"but here {name} is {' -> '.join(local_digests)}"
            )
        for lock_name, digest in self.expected_locks.items():
            if local_digests[lock_name] != digest:
                raise ArchiveRejectedError(
                    f"{self.where}: holds {lock_name} lock {digest}, but this machine's "
                    f"{lock_name} lock is {local_digests[lock_name]}; refusing it"
                )
        image = doc.get("image")
        if image is not None:
            if not (
                isinstance(image, dict)
                and isinstance(image.get("id"), str)
                and _IMAGE_ID_RE.match(image["id"])
                and isinstance(image.get("sha256"), str)
                and re.fullmatch(r"[0-9a-f]{64}", image["sha256"])
                and isinstance(image.get("size"), int)
            ):
                raise InputError(f"{self.where}: bad image entry in the manifest")
            self.image = image
        self.manifest = doc

    # Step 2: each lock is byte-identical to the local one.
    def take_lock(self, lock_name: str, data: bytes) -> None:
        lock = parse_lock(data, f"{self.where}: locks/{lock_name}.json")
        if lock.name != lock_name or lock_name in self.locks:
            raise InputError(f"{self.where}: locks/{lock_name}.json is misnamed or repeated")
        if lock.digest != self.expected_locks.get(lock_name):
            raise ArchiveRejectedError(
                f"{self.where}: locks/{lock_name}.json is {lock.digest}, not the lock "
                f"{self.expected_locks.get(lock_name)} its manifest and this machine name"
            )
        self.locks[lock_name] = lock
        if len(self.locks) == len(self.expected_locks):
            chain = [self.locks[n] for n in self.expected_locks]
            self.packages = {p.sha256: p for p in _chain_packages(chain)}

    # Step 3: each .deb is a pinned one, hashed in full.
    def stage_deb(self, member: _Member, sha256: str, staging: Path) -> Path:
        """Copy the pinned ``.deb`` into ``staging``, hashing it; where it was written.

        Raises what :func:`hash_stream` raises for a file that is not the pinned one.
        """
        package = self.packages[sha256]
        dest = staging / f"{package.sha256}.deb"
        with dest.open("wb") as out:
            hash_stream(
                file_chunks(member.stream, member.size),
                package,
                f"{self.where}: {member.name}",
                out,
            )
        self.seen_debs.add(package.sha256)
        return dest

    def stage_image(self, member: _Member, staging: Path) -> Path:
        """Copy the image the manifest names into ``staging``, hashing it; where it was written.

        Raises ArchiveRejectedError when its digest or size is not the manifest's.
        """
        assert self.image is not None
        image_path = staging / "image.tar"
        digest = hashlib.sha256()
        with image_path.open("wb") as out:
            for chunk in file_chunks(member.stream, member.size):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != self.image["sha256"] or member.size != int(self.image["size"]):
            raise ArchiveRejectedError(
                f"{self.where}: {member.name} has sha256 {digest.hexdigest()}, not "
                f"{self.image['sha256']} as its name and manifest say"
            )
        self.image_seen = True
        return image_path

    # Step 4: complete: every lock, every pinned .deb, the image if named.
    def check_complete(self) -> None:
        """Raises InputError or ArchiveRejectedError for anything the archive lacks."""
        if self.manifest is None or len(self.locks) != len(self.expected_locks):
            raise InputError(f"{self.where}: incomplete (manifest or locks missing)")
        absent = sorted(set(self.packages) - self.seen_debs)
        if absent:
            shown = ", ".join(str(self.packages[d]) for d in absent[:10])
            raise ArchiveRejectedError(
                f"{self.where}: lacks {len(absent)} pinned package(s): {shown}; "
                "refusing a partial import"
            )
        if self.image is not None and not self.image_seen:
            raise InputError(f"{self.where}: the manifest names an image the archive lacks")

    def bound(self, name: str) -> int:
        """The size a member of this name may have at this point of the archive."""
        if name == MANIFEST:
            if self.manifest is not None:
                raise InputError(f"{self.where}: a second manifest")
            return MAX_MANIFEST_BYTES
        if self.manifest is None:
            raise InputError(f"{self.where}: {name!r} comes before the manifest")
        m = _LOCK_RE.match(name)
        if m:
            if m.group(1) not in self.expected_locks or self.packages:
                raise InputError(f"{self.where}: {name} is not expected here")
            return MAX_LOCK_BYTES
        if len(self.locks) != len(self.expected_locks):
            raise InputError(f"{self.where}: {name!r} comes before all the locks")
        m = _DEB_RE.match(name)
        if m:
            package = self.packages.get(m.group(1))
            if package is None:
                raise ArchiveRejectedError(
                    f"{self.where}: {name} is not a package any of the locks pins"
                )
            if m.group(1) in self.seen_debs or self.image_seen:
                raise InputError(f"{self.where}: {name} is repeated or out of order")
            return package.size
        m = _IMAGE_RE.match(name)
        if m:
            if self.image is None or m.group(1) != self.image["sha256"] or self.image_seen:
                raise InputError(f"{self.where}: {name} is not the image the manifest names")
            return min(int(self.image["size"]), MAX_IMAGE_BYTES)
        raise InputError(f"{self.where}: {name!r} has no place in an environment export")


def import_environment(
    path: Path,
    store: PackageStore,
    progress: Progress = lambda _: None,
    *,
    with_image: bool = False,
    containers_dir: Path | None = None,
) -> ImportReport:
    """Check the archive against this machine's locks, then add its packages to the store."""
    started = time.monotonic()
    where = str(path)
    plan = _Plan(where, containers_dir)
    staged: dict[str, Path] = {}
    image_path: Path | None = None
    incoming = store.root / "incoming"
    try:
        incoming.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="import-", dir=incoming))
    except OSError as e:
        raise StorageError(f"package store {store.root}: cannot stage an import: {e}") from None
    try:
        try:
            f = path.open("rb")
        except OSError as e:
            raise InputError(f"{path}: cannot read: {e.strerror}") from None
        with f:
            progress(f"reading {path}")
            for member in _members(f, where, plan.bound):
                if member.name == MANIFEST:
                    plan.take_manifest(_read_small(member))
                elif m := _LOCK_RE.match(member.name):
                    plan.take_lock(m.group(1), _read_small(member))
                elif m := _DEB_RE.match(member.name):
                    staged[m.group(1)] = plan.stage_deb(member, m.group(1), staging)
                else:
                    image_path = plan.stage_image(member, staging)
        plan.check_complete()
        # Step 5: commit. Every package was proven above; adopt re-hashes as it moves.
        assert plan.manifest is not None
        name = str(plan.manifest["environment"])
        lock = plan.locks[name]
        added = 0
        for digest_hex, staged_path in sorted(staged.items()):
            package = plan.packages[digest_hex]
            if not store.has(package):
                store.adopt(package, staged_path, where)
                added += 1
        loaded = None
        if with_image and image_path is not None and plan.image is not None:
            loaded = _load_image(image_path, str(plan.image["id"]), name, lock, containers_dir)
        return ImportReport(
            path,
            name,
            lock.digest,
            len(plan.packages),
            added,
            loaded,
            plan.image is not None,
            time.monotonic() - started,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _load_image(
    tar_path: Path, image_id: str, name: str, lock: Lock, containers_dir: Path | None
) -> str:
    """`docker load` the image; tag it only when it is the one named and matches the lock."""
    from rebuild.envs import _docker  # noqa: PLC0415
    from rebuild.envs.images import _untag, check_environment  # noqa: PLC0415

    c = _docker.client()
    with _docker.engine_errors("docker load of the exported image"), tar_path.open("rb") as f:
        images = c.images.load(f)
    ids = {i.id for i in images}
    if ids != {image_id}:
        raise ArchiveRejectedError(
            f"the archive's image loaded as {', '.join(sorted(ids)) or 'nothing'}, "
            f"not {image_id} as its manifest says"
        )
    image = images[0]
    if (image.labels or {}).get(LABEL_LOCK_DIGEST) != lock.digest:
        raise ArchiveRejectedError(
            f"the archive's image is not labelled with lock {lock.digest}; not tagging it"
        )
    repo, _, tag = lock.image_tag.rpartition(":")
    with _docker.engine_errors(f"tagging {lock.image_tag}"):
        image.tag(repo, tag)
    report = check_environment(load_definition(name, containers_dir))
    if not report.ok:
        _untag(lock.image_tag)
        lines = report.drift.lines() if report.drift else ["no image"]
        raise ArchiveRejectedError(
            f"the archive's image does not match the lock {lock.digest}: " + "; ".join(lines[:10])
        )
    return image_id
