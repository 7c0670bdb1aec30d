"""``rebuild updater daemon``: the privileged side that acts on requests.

Runs as the user that owns the install directory, the gate's state and reads
the policy; the web application's user can only drop requests into the
spool (:mod:`rebuild.updater.spool`). For each round it takes the pending
requests, coalesces them to one per package (the newest request wins), runs
the same fetch → gate → install as ``rebuild update`` and writes the outcome
where the requester can read it.

Waking up: inotify (through ctypes on the C library; the standard library
has no binding) on ``SPOOL/requests``, so a request is acted on within
milliseconds, plus a full rescan every ``poll`` seconds. The rescan is what
is authoritative: events only wake the loop, so a lost or overflowed event
queue, or a spool on a file system without inotify (NFS), costs latency,
never a request. Without inotify the daemon polls.

Before it starts, the daemon checks that nothing it trusts is writable by
anyone but itself or root (the policy, the tlog-policy, the install and
state directories, the status directory) and refuses to run otherwise.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import select
import signal
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from rebuild.errors import OperationalError, UsageError
from rebuild.updater import gateway
from rebuild.updater.install import LockBusyError
from rebuild.updater.spool import (
    DAEMON_STATUS,
    LATEST,
    Refused,
    Request,
    requests_dir,
    status_dir,
    take_requests,
    write_status,
)
from rebuild.updater.update import UpdateFailedError, UpdateReport, UpdateRequest, run_update
from verify.errors import VerifyError

IN_CLOSE_WRITE: Final = 0x00000008
IN_MOVED_TO: Final = 0x00000080
IN_CREATE: Final = 0x00000100
IN_NONBLOCK: Final = 0o4000
IN_CLOEXEC: Final = 0o2000000
MAX_REFUSED_KEPT: Final = 20
DEFAULT_LOCK_WAIT: Final = 600.0


class Inotify:
    """A minimal inotify watch on one directory; only used to wake the loop."""

    def __init__(self, directory: Path) -> None:
        name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(name, use_errno=True)
        fd = int(libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC))
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        wd = libc.inotify_add_watch(
            fd, os.fsencode(directory), IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE
        )
        if wd < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"inotify_add_watch {directory} failed")
        self.fd = fd

    def wait(self, timeout: float) -> bool:
        """Block until an event or ``timeout``; drain the queue. True on an event."""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return False
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 65536):
                pass
        return True

    def close(self) -> None:
        os.close(self.fd)


@dataclass(frozen=True)
class DaemonConfig:
    spool: Path
    policy_path: Path
    template: UpdateRequest  # the package this daemon installs; the version comes per request
    poll: float = 30.0
    use_inotify: bool = True


def check_not_writable_by_others(path: Path, what: str) -> None:
    """Refuse a trusted path someone other than this user or root could change."""
    me = os.geteuid()
    for p in [path, *path.parents]:
        try:
            st = os.stat(p)
        except FileNotFoundError:
            continue
        if st.st_uid not in (0, me):
            raise UsageError(f"{what} {path}: {p} is owned by uid {st.st_uid}, not by us or root")
        sticky_dir = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not (p != path and sticky_dir):
            raise UsageError(
                f"{what} {path}: {p} is writable by others (mode {stat.S_IMODE(st.st_mode):o})"
            )


def check_spool(spool: Path) -> None:
    """The spool must be laid out as documented before the daemon trusts its own side."""
    req, st_dir = requests_dir(spool), status_dir(spool)
    for d in (req, st_dir):
        if not d.is_dir() or d.is_symlink():
            raise UsageError(f"{d}: missing; create the spool as docs/updater.md says")
    s = os.stat(req)
    if s.st_uid != os.geteuid():
        raise UsageError(f"{req}: must be owned by the daemon's user (mode 1730 root:web)")
    if s.st_mode & stat.S_IWOTH and not s.st_mode & stat.S_ISVTX:
        raise UsageError(f"{req}: writable by everyone without the sticky bit")
    check_not_writable_by_others(st_dir, "status directory")


@dataclass
class DaemonStats:
    requests: int = 0
    refused: int = 0
    updates: int = 0
    recent_refused: list[dict[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "refused": self.refused,
            "updates": self.updates,
            "recent_refused": self.recent_refused,
        }


class Daemon:
    def __init__(self, config: DaemonConfig, log: Callable[[str], None]) -> None:
        self.config = config
        self.log = log
        self.stats = DaemonStats()
        self._stop = False

    def preflight(self) -> gateway.UpdaterPolicy:
        c = self.config
        check_spool(c.spool)
        check_not_writable_by_others(c.policy_path, "policy")
        policy = gateway.load_policy(c.policy_path)
        tlog = Path(policy.policy.tlog_policy_path)
        check_not_writable_by_others(
            tlog if tlog.is_absolute() else c.policy_path.parent / tlog, "tlog-policy"
        )
        for d, what in ((c.template.install_dir, "install directory"),):
            d.mkdir(mode=0o755, parents=True, exist_ok=True)
            check_not_writable_by_others(d, what)
        c.template.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        check_not_writable_by_others(c.template.state_dir, "state directory")
        return policy

    def stop(self, *_: object) -> None:
        self._stop = True

    def run_once(self, policy: gateway.UpdaterPolicy) -> list[dict[str, Any]]:
        """Take the pending requests and act on them; returns the status documents written."""
        good, refused = take_requests(self.config.spool)
        written: list[dict[str, Any]] = []
        self.stats.requests += len(good) + len(refused)
        names = set(policy.package_names)
        latest: dict[str, Request] = {}
        for r in good:
            if r.package not in names:
                refused.append(Refused(r.id, f"package {r.package!r} is not in the policy"))
                continue
            if r.package != self.config.template.package:
                refused.append(
                    Refused(r.id, f"package {r.package!r} is not the one this daemon installs")
                )
                continue
            seen = latest.get(r.package)
            if seen is None or (r.mtime_ns, r.id) > (seen.mtime_ns, seen.id):
                latest[r.package] = r  # coalesce: one update per package, the newest request
        if refused:
            self._refused(refused)
        for _package, r in sorted(latest.items()):
            written.append(self._act(policy, r))
        if good or refused:
            write_status(self.config.spool, DAEMON_STATUS, self.stats.as_json())
        return written

    def _refused(self, refused: list[Refused]) -> None:
        self.stats.refused += len(refused)
        for r in refused:
            self.log(f"refused request {r.entry}: {r.reason}")
        self.stats.recent_refused = (
            self.stats.recent_refused + [{"entry": r.entry, "reason": r.reason} for r in refused]
        )[-MAX_REFUSED_KEPT:]
        write_status(self.config.spool, DAEMON_STATUS, self.stats.as_json())

    def _act(self, policy: gateway.UpdaterPolicy, r: Request) -> dict[str, Any]:
        t0 = time.time()
        request = replace(
            self.config.template,
            package=r.package,
            version=None if r.version == LATEST else r.version,
        )
        report: UpdateReport | None = None
        try:
            report = run_update(request, policy)
            outcome, message = report.status, _summary(report)
        except UpdateFailedError as e:
            report = e.report
            outcome, message = "failed", str(e)
        except LockBusyError as e:
            outcome, message = "busy", str(e)
        except (OperationalError, VerifyError) as e:
            outcome, message = "error", str(e)
        self.stats.updates += 1
        doc = {
            "package": r.package,
            "request": {"id": r.id, "version": r.version},
            "outcome": outcome,
            "message": message,
            "installed_version": _installed_version(report),
            "started_at": round(t0, 3),
            "finished_at": round(time.time(), 3),
            "report": report.as_json() if report is not None else None,
        }
        write_status(self.config.spool, r.package, doc)
        self.log(f"{r.package} {r.version} (request {r.id}): {outcome}: {message}")
        return doc

    def serve_forever(self, ready: Callable[[str], None] | None = None) -> None:
        policy = self.preflight()
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        with self._waker() as wait:
            mode = "inotify" if self.config.use_inotify and wait is not None else "polling"
            if ready:
                ready(mode)
            while not self._stop:
                self.run_once(policy)
                if self._stop:
                    break
                if wait is not None:
                    wait(self.config.poll)
                else:
                    _sleep_unless(lambda: self._stop, self.config.poll)

    @contextlib.contextmanager
    def _waker(self) -> Iterator[Callable[[float], bool] | None]:
        if not self.config.use_inotify:
            yield None
            return
        try:
            ino = Inotify(requests_dir(self.config.spool))
        except (OSError, AttributeError) as e:
            self.log(f"inotify unavailable ({e}); polling every {self.config.poll:g} s")
            yield None
            return
        try:
            yield ino.wait
        finally:
            ino.close()


def _sleep_unless(stop: Callable[[], bool], seconds: float) -> None:
    end = time.monotonic() + seconds
    while not stop() and time.monotonic() < end:
        time.sleep(min(0.2, end - time.monotonic()))


def _installed_version(report: UpdateReport | None) -> str | None:
    if report is None:
        return None
    if report.install is not None and report.status == "installed":
        return report.install.meta.version
    return report.installed_version


def _summary(report: UpdateReport) -> str:
    if report.status == "up-to-date":
        return f"{report.package} {report.installed_version} is the newest release listed"
    if report.status == "installed" and report.install is not None:
        return f"installed {report.package} {report.install.meta.version}"
    return report.status
