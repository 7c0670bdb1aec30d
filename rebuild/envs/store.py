"""The package store: every ``.deb`` an environment used, kept by its sha256.

A lock pins each package to the sha256 and size of its ``.deb``. The store
keeps such files under ``STORE/sha256/<hex>`` so an environment still builds
after the Debian mirror has dropped the versions its lock pins (the mirror
keeps only the newest version of a package in updates and security, and
point releases replace versions in the release itself).

What it decides: whether bytes are the ``.deb`` a lock entry pins. A file
enters the store only after its sha256 and size were checked while it was
written, and every read for a build hashes it again (a name is never
trusted). It never fetches; :mod:`rebuild.envs.fetch` does.

Location: ``--store DIR``, else ``$REBUILD_PACKAGE_STORE``, else
``$XDG_DATA_HOME/rebuild/packages`` (default ``~/.local/share/rebuild/packages``):
data, not cache, since it may hold the last copy of a package.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Protocol

from rebuild.envs.definition import LockedPackage
from rebuild.errors import NegativeVerdict, StorageError
from rebuild.fsio import fsync_dir

STORE_ENV = "REBUILD_PACKAGE_STORE"
_CHUNK = 1024 * 1024


def default_store_dir() -> Path:
    env = os.environ.get(STORE_ENV)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "rebuild" / "packages"


class DigestMismatchError(NegativeVerdict):
    """A ``.deb`` is not the one its lock pins (another sha256 or size)."""

    def __init__(self, package: LockedPackage, got_sha256: str, got_size: int, source: str):
        self.package = package
        self.got_sha256 = got_sha256
        super().__init__(
            f"{package.name}={package.version} ({package.architecture}): {source} has sha256 "
            f"{got_sha256} ({got_size} bytes) but the lock pins sha256 {package.sha256} "
            f"({package.size} bytes); refusing it"
        )


def hash_stream(
    chunks: Iterable[bytes], package: LockedPackage, source: str, sink: IO[bytes] | None = None
) -> None:
    """Hash ``chunks`` (writing them to ``sink``), refusing other bytes than ``package``'s.

    Reading stops one byte past the pinned size, so an endless or oversized
    source costs at most the pinned size.
    """
    h = hashlib.sha256()
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > package.size:
            raise DigestMismatchError(package, "(more bytes than pinned)", size, source)
        h.update(chunk)
        if sink is not None:
            sink.write(chunk)
    got = h.hexdigest()
    if got != package.sha256 or size != package.size:
        raise DigestMismatchError(package, got, size, source)


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


def file_chunks(f: Readable, limit: int) -> Iterator[bytes]:
    """Read a binary file object in chunks, at most ``limit + 1`` bytes in all."""
    left = limit + 1
    while left > 0:
        chunk = f.read(min(_CHUNK, left))
        if not chunk:
            return
        left -= len(chunk)
        yield chunk


class PackageStore:
    """A directory of ``.deb`` files named by their sha256."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_store_dir()

    @property
    def objects(self) -> Path:
        return self.root / "sha256"

    def path(self, package: LockedPackage) -> Path:
        return self.objects / package.sha256

    def has(self, package: LockedPackage) -> bool:
        """Is a file of the pinned size stored under the pinned sha256? (No hashing.)"""
        try:
            return self.path(package).stat().st_size == package.size
        except OSError:
            return False

    def missing(self, packages: Iterable[LockedPackage]) -> list[LockedPackage]:
        return [p for p in packages if not self.has(p)]

    def _ensure_dirs(self) -> Path:
        incoming = self.root / "incoming"
        try:
            self.objects.mkdir(parents=True, exist_ok=True)
            incoming.mkdir(exist_ok=True)
        except OSError as e:
            raise StorageError(f"package store {self.root}: cannot create it: {e}") from None
        return incoming

    @contextlib.contextmanager
    def _incoming(self) -> Iterator[tuple[Path, IO[bytes]]]:
        """A temporary file inside the store; removed unless moved in."""
        incoming = self._ensure_dirs()
        try:
            fd, tmp = tempfile.mkstemp(prefix=".deb-", dir=incoming)
        except OSError as e:
            raise StorageError(f"package store {self.root}: cannot write: {e}") from None
        path = Path(tmp)
        try:
            with os.fdopen(fd, "wb") as f:
                yield path, f
        finally:
            path.unlink(missing_ok=True)

    def add(self, package: LockedPackage, chunks: Iterable[bytes], source: str) -> Path:
        """Store ``chunks`` as ``package`` if, and only if, they are its pinned bytes."""
        with self._incoming() as (tmp, f):
            hash_stream(chunks, package, source, f)
            f.flush()
            os.fsync(f.fileno())
            return self._move_in(package, tmp)

    def adopt(self, package: LockedPackage, path: Path, source: str) -> Path:
        """Move ``path`` (on the store's file system) into the store, hashing it first."""
        with path.open("rb") as f:
            hash_stream(file_chunks(f, package.size), package, source)
        self._ensure_dirs()
        return self._move_in(package, path)

    def _move_in(self, package: LockedPackage, path: Path) -> Path:
        """Rename a proven file to its name in the store, durably."""
        target = self.path(package)
        try:
            os.chmod(path, 0o644)
            os.replace(path, target)
        except OSError as e:
            raise StorageError(f"package store {self.root}: cannot store: {e}") from None
        fsync_dir(self.objects)
        return target

    def add_file(self, package: LockedPackage, path: Path, source: str) -> Path:
        with path.open("rb") as f:
            return self.add(package, file_chunks(f, package.size), source)

    def copy_out(self, package: LockedPackage, dest: Path) -> None:
        """Copy the stored file to ``dest``, proving on the way it is ``package``'s bytes.

        The copy, not the store file, is what a build uses: what was hashed
        is what gets installed, whatever happens to the store meanwhile.
        """
        src = self.path(package)
        try:
            with src.open("rb") as f, dest.open("wb") as out:
                hash_stream(
                    file_chunks(f, package.size), package, f"the package store's {src}", out
                )
        except OSError as e:
            raise StorageError(f"package store: cannot read {src}: {e}") from None
        except DigestMismatchError:
            dest.unlink(missing_ok=True)
            raise

    def usage(self) -> tuple[int, int]:
        """(files, bytes) held."""
        files = size = 0
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.objects):
                if entry.is_file(follow_symlinks=False):
                    files += 1
                    size += entry.stat(follow_symlinks=False).st_size
        return files, size

    def __repr__(self) -> str:
        return f"PackageStore({str(self.root)!r})"
