"""The atomic installer: one install directory, one lock, a journal, a symlink switch.

Decides nothing about trust: it is handed an artifact the gate already
accepted. What it guarantees is that a crash at any instant leaves
``D/current`` pointing at one complete release (the old one or the new one,
never a mix) and that the next run finishes or undoes the interrupted install.

Layout of an install directory ``D`` (owned by the updater's user)::

    D/.lock                  flock(2): one updater at a time
    D/journal.json           present only while an install is under way
    D/current -> releases/ID the installed release (a relative symlink)
    D/previous -> releases/ID the release before it, kept for a quick roll back
    D/releases/ID/ARTIFACT   one directory per release, the artifact under its released name
    D/releases/ID.json       what that release is (package, version, artifact, sha256)
    D/releases/ID.bundle     the bundle the gate accepted it with (to re-gate after a crash)
    D/incoming/              downloads in progress (wiped when a run starts)

Install steps (each is a journal state or a durable rename):

1. Stage ``releases/ID/`` with the exact bytes the gate judged, write
   ``releases/ID.json`` and ``releases/ID.bundle``; fsync the files, the
   directory and ``releases/``.
2. Journal ``switching`` (old and new IDs).
3. Point a fresh symlink at ``releases/ID`` and rename it over ``current``;
   fsync ``D``. This rename is the instant the new release is live.
4. Journal ``switched``; run the policy's health check. On failure rename a
   symlink to the old release back over ``current`` (fsync), remove the new
   release and report the roll back.
5. On success, record the installed version (the gate's state, through a
   callback), point ``previous`` at the old release, remove older releases and
   the journal.

Recovery when ``journal.json`` exists: before the switch, remove the staged
release; after it (``current`` names the new release), run the health check,
ask the gate again (with the stored bundle) and do step 5, or roll back.
Every step is idempotent, so a crash during recovery is recovered by the run
after.

A test hook (``REBUILD_UPDATER_TEST_STEP`` = ``kill:STEP`` or ``stop:STEP``)
makes the process SIGKILL or SIGSTOP itself when it reaches a named step; the
crash tests use it to interrupt a real ``rebuild update`` at every step.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from rebuild.errors import OperationalError, StorageError
from rebuild.fsio import atomic_write, fsync_dir, read_bounded

TEST_HOOK_ENV: Final = "REBUILD_UPDATER_TEST_STEP"
STEPS: Final = (
    "locked",
    "fetched",
    "gated",
    "staging",
    "staged",
    "switching",
    "switched",
    "checked",
    "rolling-back",
    "recorded",
    "done",
)
MAX_META: Final = 64 * 1024
MAX_BUNDLE: Final = 16 << 20
HEALTH_TIMEOUT: Final = 120.0
HEALTH_OUTPUT: Final = 4096
_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,200}")


class LockBusyError(OperationalError):
    """Another updater holds the install directory's lock."""


def test_step(step: str) -> None:
    """The crash-test hook: stop or kill this process at ``step`` when asked to.

    ``REBUILD_UPDATER_TEST_STEP=kill:staged`` SIGKILLs the process there (a
    crash); ``stop:staged`` SIGSTOPs it (the test resumes it with SIGCONT).
    Unset, this is one dictionary lookup.
    """
    spec = os.environ.get(TEST_HOOK_ENV)
    if not spec:
        return
    action, _, where = spec.partition(":")
    if where != step:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)


@dataclass(frozen=True)
class ReleaseMeta:
    """What a release directory holds; written beside it as ``releases/ID.json``."""

    package: str
    version: str
    artifact: str
    sha256: str

    def to_dict(self) -> dict[str, str]:
        return {
            "package": self.package,
            "version": self.version,
            "artifact": self.artifact,
            "sha256": self.sha256,
        }

    @classmethod
    def from_dict(cls, doc: object) -> ReleaseMeta:
        if not isinstance(doc, dict) or set(doc) != {"package", "version", "artifact", "sha256"}:
            raise StorageError("release metadata has unexpected fields")
        if not all(isinstance(v, str) for v in doc.values()):
            raise StorageError("release metadata fields must be strings")
        return cls(doc["package"], doc["version"], doc["artifact"], doc["sha256"])


@dataclass(frozen=True)
class Installed:
    """The release ``current`` points at."""

    release_id: str
    path: Path
    meta: ReleaseMeta


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    command: tuple[str, ...]
    exit_code: int | None
    output: str

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "command": list(self.command),
            "exit_code": self.exit_code,
            "output": self.output,
        }


@dataclass(frozen=True)
class InstallOutcome:
    """What an install (or a recovery) did."""

    status: str  # "installed" | "rolled-back" | "undone"
    release_id: str
    meta: ReleaseMeta
    previous: str | None
    health: HealthResult | None
    reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "release_id": self.release_id,
            **self.meta.to_dict(),
            "previous": self.previous,
            "health_check": self.health.as_json() if self.health else None,
            "reason": self.reason,
        }


# Called once a new release is live and passed its health check, before the
# journal is removed, with the installed artifact's path and its bundle: records
# "version installed" in the gate's state. False means "the gate no longer
# accepts this release" (possible only when recovering after a crash): the
# installer then rolls back. Must be idempotent.
RecordInstalled = Callable[[Path, bytes], bool]


def run_health_check(
    argv: Sequence[str], release_dir: Path, artifact: Path, timeout: float = HEALTH_TIMEOUT
) -> HealthResult:
    """Run the policy's health check (argv, no shell) with its placeholders filled in."""
    command = tuple(
        a.replace("{release_dir}", str(release_dir)).replace("{artifact}", str(artifact))
        for a in argv
    )
    try:
        proc = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
            cwd=release_dir,
        )
    except subprocess.TimeoutExpired:
        return HealthResult(False, command, None, f"timed out after {timeout:g} s")
    except OSError as e:
        return HealthResult(False, command, None, f"cannot run: {e.strerror}")
    output = (proc.stdout + proc.stderr)[-HEALTH_OUTPUT:].decode("utf-8", "replace")
    return HealthResult(proc.returncode == 0, command, proc.returncode, output)


class InstallDir:
    """An install directory. Use :meth:`locked` for everything that changes it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @contextlib.contextmanager
    def locked(self, wait: float = 0.0) -> Iterator[LockedInstallDir]:
        """Hold ``D/.lock``; wait up to ``wait`` seconds, then raise LockBusyError."""
        try:
            self.root.mkdir(mode=0o755, parents=True, exist_ok=True)
            fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            raise StorageError(f"{self.root}: cannot open the install lock: {e.strerror}") from None
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise StorageError(f"{self.root}/.lock: {e.strerror}") from None
                    if time.monotonic() >= deadline:
                        raise LockBusyError(
                            f"{self.root}: another updater is installing (holds {self.root}/.lock)"
                        ) from None
                    time.sleep(0.05)
            yield LockedInstallDir(self.root)
        finally:
            os.close(fd)  # releases the flock

    def installed(self) -> Installed | None:
        """The release ``current`` points at (no lock needed: the symlink is atomic)."""
        return _read_installed(self.root)


def _read_installed(root: Path) -> Installed | None:
    try:
        target = os.readlink(root / "current")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StorageError(f"{root}/current: {e.strerror}") from None
    release_id = _release_id_from_link(target)
    if release_id is None:
        raise StorageError(f"{root}/current points outside releases/: {target!r}")
    meta_path = root / "releases" / f"{release_id}.json"
    try:
        meta = ReleaseMeta.from_dict(json.loads(read_bounded(meta_path, MAX_META)))
    except ValueError:
        raise StorageError(f"{meta_path}: not valid JSON") from None
    return Installed(release_id, root / "releases" / release_id, meta)


def _release_id_from_link(target: str) -> str | None:
    prefix = "releases/"
    if not target.startswith(prefix):
        return None
    rid = target[len(prefix) :]
    return rid if _ID_RE.fullmatch(rid) else None


class LockedInstallDir:
    """An install directory whose lock this process holds."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.releases = root / "releases"
        self.incoming = root / "incoming"
        self.journal = root / "journal.json"

    # --- small durable primitives ---------------------------------------------

    def _write_journal(self, doc: dict[str, Any]) -> None:
        atomic_write(self.journal, json.dumps(doc, sort_keys=True).encode() + b"\n", mode=0o644)

    def _read_journal(self) -> dict[str, Any] | None:
        if not os.path.lexists(self.journal):
            return None
        try:
            doc = json.loads(read_bounded(self.journal, MAX_META, follow_symlinks=False))
        except (OperationalError, ValueError):
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("state"), str):
            # atomic_write never leaves a torn journal; anything else was put here
            raise StorageError(f"{self.journal}: not a journal this updater wrote")
        return doc

    def _remove_journal(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.journal.unlink()
        fsync_dir(self.root)

    def _point(self, name: str, release_id: str | None) -> None:
        """Atomically make ``D/name`` a symlink to ``releases/release_id`` (or remove it)."""
        link = self.root / name
        if release_id is None:
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
        else:
            tmp = self.root / f".{name}.{secrets.token_hex(4)}"
            os.symlink(f"releases/{release_id}", tmp)
            os.replace(tmp, link)
        fsync_dir(self.root)

    def _target(self, name: str) -> str | None:
        try:
            return _release_id_from_link(os.readlink(self.root / name))
        except FileNotFoundError:
            return None

    def _remove_release(self, release_id: str) -> None:
        shutil.rmtree(self.releases / release_id, ignore_errors=True)
        for suffix in (".json", ".bundle"):
            with contextlib.suppress(FileNotFoundError):
                (self.releases / f"{release_id}{suffix}").unlink()
        with contextlib.suppress(FileNotFoundError):
            fsync_dir(self.releases)

    def _meta(self, release_id: str) -> ReleaseMeta:
        path = self.releases / f"{release_id}.json"
        try:
            return ReleaseMeta.from_dict(json.loads(read_bounded(path, MAX_META)))
        except ValueError:
            raise StorageError(f"{path}: not valid JSON") from None

    # --- public operations ----------------------------------------------------

    def installed(self) -> Installed | None:
        return _read_installed(self.root)

    def new_incoming(self) -> Path:
        """A fresh private directory for downloads, on the install directory's file system."""
        self.incoming.mkdir(mode=0o700, exist_ok=True)
        path = self.incoming / secrets.token_hex(8)
        path.mkdir(mode=0o700)
        return path

    def clean(self) -> None:
        """Remove leftovers no journal accounts for: downloads, temporary symlinks, releases.

        Only called with no journal present (after :meth:`recover`): then
        every release other than ``current`` and ``previous`` is debris.
        """
        shutil.rmtree(self.incoming, ignore_errors=True)
        for entry in self.root.iterdir():
            if entry.name.startswith((".current.", ".previous.", ".journal.json.")):
                entry.unlink()
        keep = {self._target("current"), self._target("previous")} - {None}
        if self.releases.is_dir():
            for entry in self.releases.iterdir():
                rid = entry.name.removesuffix(".json").removesuffix(".bundle")
                if rid not in keep:
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink()
            fsync_dir(self.releases)

    def recover(
        self, health_check: Sequence[str] | None, record: RecordInstalled
    ) -> InstallOutcome | None:
        """Finish or undo an install a crash interrupted; None when there was none."""
        journal = self._read_journal()
        if journal is None:
            return None
        new = journal.get("new")
        old = journal.get("old")
        if not isinstance(new, str) or not _ID_RE.fullmatch(new):
            raise StorageError(f"{self.journal}: no valid new release id")
        if old is not None and (not isinstance(old, str) or not _ID_RE.fullmatch(old)):
            raise StorageError(f"{self.journal}: invalid old release id")
        meta = ReleaseMeta.from_dict(journal.get("meta"))
        if journal["state"] in ("staging", "switching") and self._target("current") != new:
            # The switch never happened: the old release is live and complete.
            self._remove_release(new)
            self._remove_journal()
            return InstallOutcome("undone", new, meta, old, None, "interrupted before the switch")
        if journal["state"] in ("switching", "switched") and self._target("current") == new:
            return self._after_switch(new, old, meta, health_check, record)
        if journal["state"] == "rolled-back":
            if self._target("current") == new:
                self._point("current", old)
            self._remove_release(new)
            self._remove_journal()
            return InstallOutcome("rolled-back", new, meta, old, None, "interrupted roll back")
        raise StorageError(f"{self.journal}: state {journal['state']!r} does not match current")

    def install(
        self,
        data: bytes,
        meta: ReleaseMeta,
        bundle: bytes,
        health_check: Sequence[str] | None,
        record: RecordInstalled,
    ) -> InstallOutcome:
        """Install ``data`` (the bytes the gate accepted) as ``meta.artifact``."""
        if self.journal.exists():
            raise StorageError(f"{self.journal}: an interrupted install must be recovered first")
        old = self._target("current")
        new = f"{meta.package}-{meta.version}-{secrets.token_hex(4)}"
        if not _ID_RE.fullmatch(new):
            raise StorageError(f"release id {new!r} is not a safe directory name")
        self.releases.mkdir(mode=0o755, exist_ok=True)
        # 1. stage
        self._write_journal({"state": "staging", "new": new, "old": old, "meta": meta.to_dict()})
        test_step("staging")
        release_dir = self.releases / new
        release_dir.mkdir(mode=0o755)
        _write_new(release_dir / meta.artifact, data)
        fsync_dir(release_dir)
        atomic_write(self.releases / f"{new}.bundle", bundle, mode=0o644)
        atomic_write(
            self.releases / f"{new}.json",
            json.dumps(meta.to_dict(), sort_keys=True).encode() + b"\n",
            mode=0o644,
        )
        fsync_dir(self.releases)
        test_step("staged")
        # 2. journal the switch, 3. switch
        self._write_journal({"state": "switching", "new": new, "old": old, "meta": meta.to_dict()})
        test_step("switching")
        self._point("current", new)
        self._write_journal({"state": "switched", "new": new, "old": old, "meta": meta.to_dict()})
        test_step("switched")
        # 4. health check, 5. commit
        return self._after_switch(new, old, meta, health_check, record)

    def _roll_back(
        self,
        new: str,
        old: str | None,
        meta: ReleaseMeta,
        health: HealthResult | None,
        reason: str,
    ) -> InstallOutcome:
        self._write_journal(
            {"state": "rolled-back", "new": new, "old": old, "meta": meta.to_dict()}
        )
        test_step("rolling-back")
        self._point("current", old)
        self._remove_release(new)
        self._remove_journal()
        return InstallOutcome("rolled-back", new, meta, old, health, reason)

    def _after_switch(
        self,
        new: str,
        old: str | None,
        meta: ReleaseMeta,
        health_check: Sequence[str] | None,
        record: RecordInstalled,
    ) -> InstallOutcome:
        health = None
        release_dir = self.releases / new
        if health_check:
            health = run_health_check(health_check, release_dir, release_dir / meta.artifact)
            test_step("checked")
            if not health.ok:
                return self._roll_back(new, old, meta, health, "health check failed")
        bundle = read_bounded(self.releases / f"{new}.bundle", MAX_BUNDLE)
        if not record(release_dir / meta.artifact, bundle):
            return self._roll_back(new, old, meta, health, "the gate no longer accepts it")
        test_step("recorded")
        if old is not None and old != new:
            self._point("previous", old)
        self._remove_journal()
        self.clean()
        test_step("done")
        return InstallOutcome("installed", new, meta, old, health)


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` (never replacing anything), write ``data``, fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
