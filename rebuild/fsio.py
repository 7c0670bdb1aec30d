"""Safe file I/O: bounded reads and atomic, durable writes.

Every file the project writes goes through :func:`atomic_write`: a temporary
file in the same directory, fsync, rename over the target, fsync the
directory. A crash leaves either the old file or the new one, never half of
one. Reads are bounded so an oversized input is an error, not an OOM.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from rebuild.errors import InputError, StorageError

DEFAULT_READ_LIMIT = 64 * 1024 * 1024


def read_bounded(
    path: str | os.PathLike[str], limit: int = DEFAULT_READ_LIMIT, *, follow_symlinks: bool = True
) -> bytes:
    """Read a whole file, refusing one larger than ``limit`` bytes.

    With ``follow_symlinks=False`` a symlink is refused (for files in a
    directory someone else could plant one in), and so is anything that
    would block on open (a FIFO).
    """
    p = Path(path)
    flags = os.O_RDONLY if follow_symlinks else os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        with os.fdopen(os.open(p, flags), "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{p}: is a directory, expected a file") from None
    except OSError as e:
        if e.errno == errno.ELOOP and not follow_symlinks:
            raise InputError(f"{p}: is a symlink; refusing to follow it") from None
        raise InputError(f"{p}: cannot read: {e.strerror}") from None
    if len(data) > limit:
        raise InputError(f"{p}: larger than the {limit}-byte limit")
    return data


def read_text_bounded(path: str | os.PathLike[str], limit: int = DEFAULT_READ_LIMIT) -> str:
    """Read a UTF-8 text file, bounded; non-UTF-8 content is an InputError."""
    data = read_bounded(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start})") from None


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so a rename inside it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    mode: int = 0o644,
    overwrite: bool = True,
) -> None:
    """Write ``data`` to ``path`` atomically and durably.

    With ``overwrite=False`` an existing file is never replaced (the final
    step is a hard link, which fails if the target exists, so two racing
    writers cannot both win).
    """
    p = Path(path)
    directory = p.parent if str(p.parent) else Path(".")
    if not overwrite and p.exists():
        raise StorageError(f"{p}: already exists; refusing to overwrite")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=directory)
    except FileNotFoundError:
        raise StorageError(f"{p}: directory {directory} does not exist") from None
    except OSError as e:
        raise StorageError(f"{p}: cannot create a file in {directory}: {e.strerror}") from None
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, p)
        else:
            try:
                os.link(tmp, p)
            except FileExistsError:
                raise StorageError(f"{p}: already exists; refusing to overwrite") from None
            finally:
                os.unlink(tmp)
        fsync_dir(directory)
    except OSError as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise StorageError(f"{p}: cannot write: {e.strerror}") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
