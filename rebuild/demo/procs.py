"""The demo's processes: real ``rebuild`` commands, each in its own process.

Everything that is a separate process in a real deployment (the log, the
witnesses, the mirrors, the updater daemon, the rebuilders, the web side's
request) runs here as the ``rebuild`` command line in a child process, its
output in a file of the demo's ``logs/`` directory. A server is ready when
it prints the URL it listens on (or, for the daemon, that it is watching).

:func:`web_user` finds how to run the web side's ``rebuild updater request``
as an unprivileged user when the demo runs as root: ``nobody``, with an
interpreter and a source tree that user can reach.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import site
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import rebuild
from rebuild.errors import OperationalError

LISTENING: Final = re.compile(r"listening on (https?://[^\s()]+)")
STOP_TIMEOUT: Final = 20.0
SOURCE_ROOT: Final = Path(rebuild.__file__).resolve().parents[1]


def rebuild_argv() -> list[str]:
    """How to run this very ``rebuild`` (same interpreter, same source)."""
    return [sys.executable, "-m", "rebuild"]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(SOURCE_ROOT), env.get("PYTHONPATH", "")) if p
    )
    env.pop("REBUILD_PASSPHRASE", None)  # the demo's keys have none; never pass one on
    return {**env, **(extra or {})}


@dataclass(frozen=True)
class RunAs:
    """Who runs a command: this process's user, or another one (``user`` is not None)."""

    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    uid: int | None = None
    gid: int | None = None
    why: str = ""

    def kwargs(self) -> dict[str, Any]:
        if self.uid is None:
            return {"env": self.env or child_env()}
        return {
            "env": self.env,
            "user": self.uid,
            "group": self.gid,
            "extra_groups": [],
            "cwd": "/",
        }


def _reachable_by_others(path: Path, *, directory: bool) -> bool:
    """Can a user who owns nothing here read ``path`` (and traverse its parents)?"""
    try:
        for parent in path.parents:
            if not os.stat(parent).st_mode & 0o001:
                return False
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return bool(mode & 0o004) and (not directory or bool(mode & 0o001))


def _executable_by_others(path: Path) -> bool:
    try:
        return (
            path.is_file()
            and _reachable_by_others(path, directory=False)
            and bool(os.stat(path).st_mode & 0o001)
        )
    except OSError:
        return False


PACKAGES: Final = ("rebuild", "verify")  # what another user imports from the source tree


def python_for_others(copies: Path) -> tuple[Path, list[Path]]:
    """An interpreter and PYTHONPATH entries that run this ``rebuild`` as another user.

    The interpreter is this one, or the system's of the same version (same
    ABI) when this one lives where others cannot run it (a Python built into
    a private home directory). The source tree's packages and the installed
    packages are used where they are when others can read them; otherwise
    (a checkout under /root, whose mode is 700) they are copied into
    ``copies``, which others must be able to reach: files hard-linked where
    they are readable by others already, so a large site-packages costs
    little. Raises OperationalError when no interpreter will do.
    """
    exe = Path(sys.executable).resolve()
    if not _executable_by_others(exe):
        exe = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
        if not _executable_by_others(exe):
            raise OperationalError(f"no Python interpreter other users can run (tried {exe})")
    paths: list[Path] = []
    trees: list[tuple[Path, Sequence[str] | None]] = [(SOURCE_ROOT, PACKAGES)]
    trees += [(Path(p), None) for p in site.getsitepackages() if Path(p).is_dir()]
    for i, (tree, names) in enumerate(trees):
        if _reachable_by_others(tree, directory=True):
            paths.append(tree)
            continue
        dest = copies / f"{i}-{tree.name}"
        if not dest.is_dir():
            _copy_readable(tree, dest, names)
        paths.append(dest)
    return exe, paths


def _copy_readable(src: Path, dest: Path, names: Sequence[str] | None) -> None:
    """``src`` (or its entries ``names``) at ``dest``, readable by everyone; complete or absent."""

    def link_or_copy(s: str, d: str) -> str:
        if os.stat(s).st_mode & 0o004:
            with contextlib.suppress(OSError):
                os.link(s, d)
                return d
        shutil.copyfile(s, d)
        os.chmod(d, 0o755 if os.stat(s).st_mode & 0o100 else 0o644)
        return d

    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(mode=0o755, parents=True)
    ignore = shutil.ignore_patterns("__pycache__")
    for name in names if names is not None else sorted(os.listdir(src)):
        entry = src / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(
                entry, partial / name, symlinks=True, ignore=ignore, copy_function=link_or_copy
            )
        elif entry.is_file() and not entry.is_symlink():
            link_or_copy(str(entry), str(partial / name))
    for directory, _, _ in os.walk(partial):
        os.chmod(directory, 0o755)  # noqa: S103 - another user must read it: the point
    partial.rename(dest)


def web_user(spool_parent: Path) -> RunAs:
    """How to run the web side's request: as ``nobody`` when we are root, else as ourselves.

    ``nobody`` needs an interpreter it may execute, the source tree and the
    installed packages (:func:`python_for_others`, copied into
    ``spool_parent`` when they are private) and a way into ``spool_parent``;
    when it has not, the request runs as this user and ``why`` says so.
    """
    me = RunAs(tuple(rebuild_argv()), child_env(), why="")
    if os.geteuid() != 0:
        return RunAs(
            me.argv,
            me.env,
            why="not running as root: the web side and the daemon run as the same user "
            "(with root, the web side runs as nobody)",
        )
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        return RunAs(
            me.argv, me.env, why="no user 'nobody' on this machine; the request ran as root"
        )
    if not _reachable_by_others(spool_parent, directory=True):
        return RunAs(
            me.argv,
            me.env,
            why=f"the request ran as root: user nobody cannot reach {spool_parent}",
        )
    try:
        exe, paths = python_for_others(spool_parent / "web-python")
    except OperationalError as e:
        return RunAs(me.argv, me.env, why=f"the request ran as root: {e}")
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": os.pathsep.join(str(p) for p in paths),
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
        "HOME": "/nonexistent",
    }
    return RunAs(
        (str(exe), "-m", "rebuild"), env, user="nobody", uid=nobody.pw_uid, gid=nobody.pw_gid
    )


def run_json(
    args: Sequence[str], *, who: RunAs | None = None, timeout: float = 300.0
) -> tuple[int, dict[str, Any], str]:
    """Run ``rebuild ARGS --json``; (exit status, its JSON document, its stderr).

    A process that prints no JSON document is an OperationalError naming the
    command and the end of its stderr.
    """
    who = who or RunAs(tuple(rebuild_argv()), child_env())
    argv = [*who.argv, *args, "--json"]
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **who.kwargs(),
        )
    except subprocess.TimeoutExpired:
        raise OperationalError(
            f"rebuild {' '.join(args[:2])}: no answer in {timeout:.0f} s"
        ) from None
    except OSError as e:
        raise OperationalError(f"rebuild {' '.join(args[:2])}: cannot start: {e}") from None
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        tail = proc.stderr.strip().splitlines()[-3:]
        raise OperationalError(
            f"rebuild {' '.join(args[:2])} (exit {proc.returncode}) printed no JSON: "
            + " / ".join(tail)
        )
    return proc.returncode, doc, proc.stderr


class Service:
    """A long-running ``rebuild`` command (a server or the daemon), output to a file."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        log: Path,
        *,
        ready: re.Pattern[str] = LISTENING,
        who: RunAs | None = None,
    ) -> None:
        self.name = name
        self.log = log
        self.url = ""
        self._ready = ready
        who = who or RunAs(tuple(rebuild_argv()), child_env())
        log.parent.mkdir(parents=True, exist_ok=True)
        self._out: IO[bytes] = log.open("wb")
        try:
            self.proc = subprocess.Popen(
                [*who.argv, *args],
                stdout=self._out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                **who.kwargs(),
            )
        except OSError as e:
            self._out.close()
            raise OperationalError(f"{name}: cannot start: {e}") from None

    def wait_ready(self, timeout: float = 60.0) -> str:
        """Wait for the ready line; the URL it names (or the line itself)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log.read_text(errors="replace")
            m = self._ready.search(text)
            if m:
                self.url = m.group(1) if m.groups() else m.group(0)
                return self.url
            if self.proc.poll() is not None:
                raise OperationalError(
                    f"{self.name} exited with status {self.proc.returncode} before it was "
                    f"ready: {_tail(text)} (see {self.log})"
                )
            if time.monotonic() > deadline:
                raise OperationalError(
                    f"{self.name} not ready after {timeout:.0f} s: {_tail(text)} (see {self.log})"
                )
            time.sleep(0.02)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        self._out.close()


def _tail(text: str, lines: int = 3) -> str:
    return " / ".join(text.strip().splitlines()[-lines:]) or "no output"


@contextlib.contextmanager
def services() -> Iterator[list[Service]]:
    """Every service started into the list is stopped at the end, newest first."""
    running: list[Service] = []
    try:
        yield running
    finally:
        for s in reversed(running):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                s.stop()
