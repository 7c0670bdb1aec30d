"""Safe unpacking of untrusted archives (sdists, wheels).

Decides whether every member of a tar or zip archive may be written below a
destination directory, and writes it. A hostile archive must never be able to
write outside the destination (absolute names, ``..``, links pointing out,
hard links, devices, FIFOs), exhaust the disk (total size cap, member count
cap, compression-ratio cap for zip bombs) or smuggle privileged modes
(setuid/setgid bits are dropped). The whole archive is checked before
anything is written, so a refused archive leaves nothing behind.

Member modification times are preserved: backends such as flit_core and
setuptools' ``bdist_wheel`` copy them into the wheel when no
SOURCE_DATE_EPOCH clamps them, so they are part of the build input.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rebuild.errors import InputError

DEFAULT_MAX_TOTAL = 512 * 1024 * 1024
DEFAULT_MAX_MEMBERS = 50_000
# A zip member may expand at most this many times its compressed size. Real
# source files compress 3-10x; a bomb reaches 1000x and more.
DEFAULT_MAX_RATIO = 200
_COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class UnpackLimits:
    """Caps applied to one archive."""

    max_total_bytes: int = DEFAULT_MAX_TOTAL
    max_members: int = DEFAULT_MAX_MEMBERS
    max_ratio: int = DEFAULT_MAX_RATIO


@dataclass(frozen=True)
class UnpackResult:
    """What was written: the destination, member count, bytes and the newest mtime."""

    root: Path
    members: int
    total_bytes: int
    max_mtime: int
    min_mtime: int


def _checked_name(archive: Path, name: str) -> PurePosixPath:
    """Return a safe relative path for ``name`` or refuse the archive."""
    if "\x00" in name or "\\" in name:
        raise InputError(f"{archive}: member {name!r} has a NUL or backslash in its name")
    if name.startswith("/") or PurePosixPath(name).is_absolute():
        raise InputError(f"{archive}: member {name!r} has an absolute path")
    norm = posixpath.normpath(name)
    parts = PurePosixPath(norm).parts
    if norm in (".", "") or ".." in parts or ".." in PurePosixPath(name).parts:
        raise InputError(f"{archive}: member {name!r} escapes the destination (..)")
    return PurePosixPath(norm)


def _link_target_inside(archive: Path, name: PurePosixPath, target: str) -> None:
    if target.startswith("/") or "\x00" in target:
        raise InputError(f"{archive}: link {str(name)!r} points to an absolute path {target!r}")
    resolved = posixpath.normpath(posixpath.join(str(name.parent), target))
    if resolved == ".." or resolved.startswith("../") or resolved.startswith("/"):
        raise InputError(f"{archive}: link {str(name)!r} points outside the archive ({target!r})")


def unpack_tar(archive: Path, dest: Path, limits: UnpackLimits = UnpackLimits()) -> UnpackResult:
    """Unpack a (compressed) tar archive into the empty or new directory ``dest``.

    Regular files, directories and symbolic links whose target stays inside
    the archive are accepted; hard links, devices and FIFOs are refused. The
    whole member list is checked before anything is written (:func:`_plan_tar`);
    a failure while writing removes what was written. Raises InputError.
    """
    try:
        tf = tarfile.open(archive, mode="r:*")  # noqa: SIM115 - closed by the with below
    except (tarfile.TarError, OSError, EOFError) as e:
        raise InputError(f"{archive}: not a readable tar archive: {e}") from None
    with tf:
        plan = _plan_tar(archive, tf, limits)
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        try:
            written = _extract_tar(archive, tf, plan, root, limits)
        except (tarfile.TarError, OSError, EOFError) as e:
            _discard(root)
            raise InputError(f"{archive}: cannot unpack: {e}") from None
        except InputError:
            _discard(root)
            raise
    mtimes = [int(member.mtime) for member, _ in plan]
    return UnpackResult(
        root=root,
        members=len(plan),
        total_bytes=written,
        max_mtime=max(mtimes, default=0),
        min_mtime=min(mtimes, default=0),
    )


def _plan_tar(
    archive: Path, tf: tarfile.TarFile, limits: UnpackLimits
) -> list[tuple[tarfile.TarInfo, PurePosixPath]]:
    """Every member and its checked relative path, before anything is written."""
    plan: list[tuple[tarfile.TarInfo, PurePosixPath]] = []
    total = 0
    try:
        for member in tf:
            if len(plan) >= limits.max_members:
                raise InputError(f"{archive}: more than {limits.max_members} members")
            rel = _checked_name(archive, member.name)
            if member.isfile():
                total += member.size
                if total > limits.max_total_bytes:
                    raise InputError(
                        f"{archive}: unpacks to more than {limits.max_total_bytes} bytes"
                    )
            elif member.issym():
                _link_target_inside(archive, rel, member.linkname)
            elif member.islnk():
                raise InputError(f"{archive}: member {member.name!r} is a hard link")
            elif not member.isdir():
                raise InputError(
                    f"{archive}: member {member.name!r} is a device, FIFO or other special file"
                )
            plan.append((member, rel))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise InputError(f"{archive}: corrupt tar archive: {e}") from None
    return plan


def _extract_tar(
    archive: Path,
    tf: tarfile.TarFile,
    plan: list[tuple[tarfile.TarInfo, PurePosixPath]],
    root: Path,
    limits: UnpackLimits,
) -> int:
    """Write the planned members under ``root``; the number of file bytes written."""
    written = 0
    # Directories get their modes and mtimes last, after their contents are written.
    dirs: list[tuple[Path, int, int]] = []
    for member, rel in plan:
        target = root.joinpath(*rel.parts)
        _ensure_inside(archive, root, target.parent)
        mtime = int(member.mtime)
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
            dirs.append((target, member.mode & 0o777 | 0o700, mtime))
        elif member.issym():
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or target.exists():
                raise InputError(f"{archive}: member {member.name!r} appears twice")
            os.symlink(member.linkname, target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            _ensure_inside(archive, root, target.parent)
            src = tf.extractfile(member)
            if src is None:
                raise InputError(f"{archive}: member {member.name!r} has no data")
            written += _copy_capped(archive, src, target, limits.max_total_bytes - written)
            # Keep the permission bits the maintainer shipped (wheels built
            # by bdist_wheel record them) minus setuid/setgid/sticky.
            os.chmod(target, (member.mode & 0o777) | 0o600)
            os.utime(target, (mtime, mtime), follow_symlinks=False)
    _check_links_resolve_inside(
        archive, root, [root.joinpath(*r.parts) for m, r in plan if m.issym()]
    )
    for path, mode, mtime in reversed(dirs):
        os.chmod(path, mode)
        os.utime(path, (mtime, mtime))
    return written


def _check_links_resolve_inside(archive: Path, root: Path, links: list[Path]) -> None:
    """Refuse a chain of in-archive links that, followed for real, leads out.

    Each link target is checked lexically when planned, but a link reached
    through another link (``d -> .``, ``d/x -> ../y``) can still escape, so
    every link is resolved once the tree exists.
    """
    for link in links:
        real = Path(os.path.realpath(link))
        if real != root and root not in real.parents:
            raise InputError(
                f"{archive}: link {link.relative_to(root)} resolves outside the archive"
            )


def _discard(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)


def _ensure_inside(archive: Path, root: Path, directory: Path) -> None:
    """Refuse when an existing path component (e.g. a symlink) leads out of ``root``."""
    real = directory.resolve()
    if real != root and root not in real.parents:
        raise InputError(f"{archive}: a member would be written outside the destination via a link")


def _copy_capped(archive: Path, src: object, target: Path, budget: int) -> int:
    read = getattr(src, "read")  # noqa: B009 - tar and zip file objects share read()
    n = 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        while True:
            chunk = read(_COPY_CHUNK)
            if not chunk:
                break
            n += len(chunk)
            if n > budget:
                raise InputError(f"{archive}: unpacks to more bytes than its cap allows")
            out.write(chunk)
    return n


def unpack_zip(archive: Path, dest: Path, limits: UnpackLimits = UnpackLimits()) -> UnpackResult:
    """Unpack a zip archive (a wheel) into ``dest``; symlinks and specials are refused."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise InputError(f"{archive}: not a readable zip archive: {e}") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_members:
            raise InputError(f"{archive}: more than {limits.max_members} members")
        total = 0
        plan: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
        for info in infos:
            rel = _checked_name(archive, info.filename)
            kind = stat.S_IFMT(info.external_attr >> 16)
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise InputError(f"{archive}: member {info.filename!r} is a link or special file")
            total += info.file_size
            if total > limits.max_total_bytes:
                raise InputError(f"{archive}: unpacks to more than {limits.max_total_bytes} bytes")
            if info.file_size > limits.max_ratio * max(info.compress_size, 1024):
                raise InputError(
                    f"{archive}: member {info.filename!r} expands more than "
                    f"{limits.max_ratio}x (a zip bomb)"
                )
            plan.append((info, rel))
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        written = 0
        try:
            for info, rel in plan:
                target = root.joinpath(*rel.parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                _ensure_inside(archive, root, target.parent)
                with zf.open(info) as src:
                    written += _copy_capped(archive, src, target, limits.max_total_bytes - written)
                mode = (info.external_attr >> 16) & 0o777
                os.chmod(target, (mode or 0o644) | 0o600)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            _discard(root)
            raise InputError(f"{archive}: cannot unpack: {e}") from None
        except InputError:
            _discard(root)
            raise
    return UnpackResult(root=root, members=len(plan), total_bytes=written, max_mtime=0, min_mtime=0)
