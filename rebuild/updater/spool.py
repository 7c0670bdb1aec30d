"""The spool between the web application (which may only ask) and the updater daemon.

Layout (made by the administrator, e.g. systemd-tmpfiles; see docs/updater.md)::

    SPOOL/requests/   owner updater, group web, mode 1730: the web group may
                      create files here, but not list or read the directory,
                      and (sticky) not touch files it did not create
    SPOOL/status/     owner updater, group web, mode 0750: outcomes the web
                      group may read and never write

The requester (:func:`write_request`) writes one small JSON file under a fresh
random name (a temporary name, then a rename, so the daemon never sees half a
file). The daemon (:func:`take_requests`) treats every entry as hostile: it
opens without following symlinks and without blocking, accepts only a
regular file with one link and at most :data:`MAX_REQUEST_BYTES` bytes,
removes every entry it has looked at, and keeps only a validated package name
and version string from a request (never a path, a URL or an option).
Outcomes go to ``status/<package>.json`` (:func:`write_status`), written
atomically by the daemon; a request for a package the policy does not name
never creates a file named after it, it is counted in ``status/_daemon.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from rebuild.errors import InputError, StorageError, UsageError
from rebuild.fsio import atomic_write, read_bounded
from rebuild.updater.mirror import valid_package, valid_version

REQUEST_FORMAT: Final = "rebuild-update-request/v1"
STATUS_FORMAT: Final = "rebuild-updater-status/v1"
MAX_REQUEST_BYTES: Final = 512
MAX_STATUS_BYTES: Final = 1 << 20
MAX_ENTRIES_PER_SCAN: Final = 256
MAX_STATUS_FILES: Final = 1024
TMP_GRACE_SECONDS: Final = 60.0
LATEST: Final = "latest"
DAEMON_STATUS: Final = "_daemon"
_REQUEST_NAME: Final = re.compile(r"[0-9a-f]{32}\.req")
_TMP_NAME: Final = re.compile(r"\.tmp-[0-9a-f]{32}")


def requests_dir(spool: Path) -> Path:
    return spool / "requests"


def status_dir(spool: Path) -> Path:
    return spool / "status"


def check_request_fields(package: str, version: str) -> None:
    """The only validation a request's content gets; both are used as plain strings."""
    if not valid_package(package):
        raise UsageError(f"invalid package name {package!r}")
    if version != LATEST and not valid_version(version):
        raise UsageError(f"invalid version {version!r} (a release version, or {LATEST!r})")


def write_request(spool: Path, package: str, version: str) -> str:
    """Drop one request into ``SPOOL/requests``; returns its id. The requester's side."""
    check_request_fields(package, version)
    rid = secrets.token_hex(16)
    data = (
        json.dumps(
            {"format": REQUEST_FORMAT, "package": package, "version": version}, sort_keys=True
        ).encode()
        + b"\n"
    )
    directory = requests_dir(spool)
    tmp = directory / f".tmp-{rid}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except FileNotFoundError:
        raise StorageError(f"{directory}: no such spool directory") from None
    except OSError as e:
        raise StorageError(f"{directory}: cannot write a request: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, directory / f"{rid}.req")
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StorageError(f"{directory}: cannot write a request: {e.strerror}") from None
    return rid


@dataclass(frozen=True)
class Request:
    id: str
    package: str
    version: str  # a validated version, or "latest"
    mtime_ns: int = 0  # when the requester wrote it (orders requests for one package)


@dataclass(frozen=True)
class Refused:
    entry: str  # the directory entry's name, printable-escaped
    reason: str


def _printable(name: str) -> str:
    return name.encode("unicode_escape", "backslashreplace").decode("ascii")[:80]


def _parse_request(data: bytes) -> tuple[str, str]:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InputError("not a JSON request") from None
    if not isinstance(doc, dict) or set(doc) != {"format", "package", "version"}:
        raise InputError("expected exactly format, package, version")
    if doc["format"] != REQUEST_FORMAT:
        raise InputError(f"format is not {REQUEST_FORMAT}")
    package, version = doc["package"], doc["version"]
    if not isinstance(package, str) or not isinstance(version, str):
        raise InputError("package and version must be strings")
    try:
        check_request_fields(package, version)
    except UsageError as e:
        raise InputError(str(e)) from None
    return package, version


def take_requests(
    spool: Path, limit: int = MAX_ENTRIES_PER_SCAN
) -> tuple[list[Request], list[Refused]]:
    """Read and remove up to ``limit`` entries; the daemon's side.

    Every entry looked at is removed (a request is acted on once), except a
    requester's temporary file younger than a minute and an entry the daemon
    cannot remove (a directory the requester made: ignored, never entered).
    """
    directory = requests_dir(spool)
    good: list[Request] = []
    refused: list[Refused] = []
    now = time.time()
    try:
        it = os.scandir(directory)
    except OSError as e:
        raise StorageError(f"{directory}: cannot scan: {e.strerror}") from None
    with it:
        for n, entry in enumerate(it):
            if n >= limit:
                break
            name = entry.name
            path = directory / name
            if _TMP_NAME.fullmatch(name):
                with contextlib.suppress(OSError):
                    if now - entry.stat(follow_symlinks=False).st_mtime < TMP_GRACE_SECONDS:
                        continue
                _remove(path)
                refused.append(Refused(_printable(name), "stale temporary file"))
                continue
            if not _REQUEST_NAME.fullmatch(name):
                refused.append(Refused(_printable(name), "not a request file name"))
                _remove(path)
                continue
            try:
                data, mtime_ns = _read_entry(path)
                package, version = _parse_request(data)
                good.append(Request(name.removesuffix(".req"), package, version, mtime_ns))
            except InputError as e:
                refused.append(Refused(_printable(name), str(e)))
            finally:
                _remove(path)
    return good, refused


def _read_entry(path: Path) -> tuple[bytes, int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as e:
        if e.errno == 40:  # ELOOP: a symlink
            raise InputError("a symlink, not a file") from None
        raise InputError(f"cannot open: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError("not a regular file")
        if st.st_nlink != 1:
            raise InputError("a file with other hard links")
        if st.st_size > MAX_REQUEST_BYTES:
            raise InputError(f"larger than {MAX_REQUEST_BYTES} bytes")
        data = os.read(fd, MAX_REQUEST_BYTES + 1)
        if len(data) > MAX_REQUEST_BYTES:
            raise InputError(f"larger than {MAX_REQUEST_BYTES} bytes")
        return data, st.st_mtime_ns
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except IsADirectoryError:
        with contextlib.suppress(OSError):
            os.rmdir(path)  # only if empty; a requester's directory is otherwise left alone
    except OSError:
        pass


def write_status(spool: Path, name: str, doc: dict[str, Any]) -> None:
    """Write ``status/<name>.json`` atomically (the daemon's side)."""
    if name != DAEMON_STATUS and not valid_package(name):
        raise UsageError(f"invalid status name {name!r}")
    body = {"format": STATUS_FORMAT, **doc}
    data = json.dumps(body, indent=1, sort_keys=True).encode() + b"\n"
    if len(data) > MAX_STATUS_BYTES:
        report = body.get("report")
        if isinstance(report, dict):
            body["report"] = {"truncated": True, "status": report.get("status")}
        data = json.dumps(body, indent=1, sort_keys=True).encode() + b"\n"
    atomic_write(status_dir(spool) / f"{name}.json", data, mode=0o644)


def read_status(spool: Path, name: str | None = None) -> dict[str, Any]:
    """Status documents by name: one (``name``) or all; the requester's side."""
    directory = status_dir(spool)
    if name is not None:
        if not valid_package(name) and name != DAEMON_STATUS:
            raise UsageError(f"invalid package name {name!r}")
        names = [name]
    else:
        try:
            names = sorted(
                e.name.removesuffix(".json")
                for e in os.scandir(directory)
                if e.name.endswith(".json") and not e.name.startswith(".")
            )[:MAX_STATUS_FILES]
        except OSError as e:
            raise StorageError(f"{directory}: cannot list: {e.strerror}") from None
    out: dict[str, Any] = {}
    for n in names:
        path = directory / f"{n}.json"
        if not os.path.lexists(path):
            if name is not None:
                raise InputError(f"{path}: no status yet for {name}")
            continue
        try:
            doc = json.loads(read_bounded(path, MAX_STATUS_BYTES, follow_symlinks=False))
        except ValueError:
            raise StorageError(f"{path}: not valid JSON") from None
        if not isinstance(doc, dict) or doc.get("format") != STATUS_FORMAT:
            raise StorageError(f"{path}: not a {STATUS_FORMAT} document")
        out[n] = doc
    return out
