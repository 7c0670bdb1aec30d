"""The atomic install, proven on real ``rebuild update`` processes.

A real updater is SIGKILLed at every step of an install (through the
``REBUILD_UPDATER_TEST_STEP`` hook, which makes the process kill itself at
exactly that step): after each crash ``D/current`` is one complete release,
old or new, never a mix, and the next run finishes or undoes the install.
Two updaters at once: the second exits 2 (or waits with ``--wait-lock``). A
failing health check switches back by itself. Mirrors are real HTTP servers
on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rebuild.updater.install import STEPS, TEST_HOOK_ENV
from tests.logutil import cli_env
from tests.updaterutil import (
    PACKAGE,
    Release,
    Releases,
    ThreadServer,
    installed,
    publish_to,
    report,
    static_mirror,
    update_cli,
)
from verify.state import parse_state

HEALTHY = 'health_check = ["/usr/bin/test", "-s", "{artifact}"]\n'


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Path, str, Release, Release]]:
    rel = Releases(tmp_path / "releases")
    policy = rel.write_policy(package_extra=HEALTHY)
    old, new = rel.make("1.0.0"), rel.make("1.1.0")
    old_only, both = tmp_path / "m-old", tmp_path / "m-both"
    publish_to(old_only, old)
    publish_to(both, old)
    publish_to(both, new)
    s_old = ThreadServer(static_mirror(old_only), None)
    s_both = ThreadServer(static_mirror(both), None)
    try:
        install = tmp_path / "install"
        r = update_cli(policy, install, [s_old.url], "--insecure-loopback")
        assert r.returncode == 0, r.stdout + r.stderr
        yield policy, s_both.url, old, new
    finally:
        s_old.stop()
        s_both.stop()


def _state_installed(install: Path) -> str | None:
    state = parse_state((install / "state" / "state.json").read_bytes())
    r = state.installed_release(PACKAGE)
    return None if r is None else r.version


def _leftovers(install: Path) -> list[str]:
    """Anything in D that a finished install would not leave behind."""
    expected = {".lock", "current", "previous", "releases", "state"}
    extra = sorted(p.name for p in install.iterdir() if p.name not in expected)
    cur = os.readlink(install / "current").removeprefix("releases/")
    prev_link = install / "previous"
    keep = {cur} | (
        {os.readlink(prev_link).removeprefix("releases/")} if prev_link.is_symlink() else set()
    )
    for p in (install / "releases").iterdir():
        if p.name.removesuffix(".json").removesuffix(".bundle") not in keep:
            extra.append(f"releases/{p.name}")
    return extra


CRASH_STEPS = [s for s in STEPS if s != "rolling-back"]


@pytest.mark.slow
@pytest.mark.parametrize("step", CRASH_STEPS)
def test_sigkill_at_every_install_step_leaves_one_complete_release_and_the_next_run_recovers(
    setup: tuple[Path, str, Release, Release], tmp_path: Path, step: str
) -> None:
    policy, url, old, new = setup
    install = tmp_path / "install"
    r = update_cli(
        policy, install, [url], "--insecure-loopback", env={TEST_HOOK_ENV: f"kill:{step}"}
    )
    assert r.returncode == -signal.SIGKILL, (step, r.returncode, r.stdout, r.stderr)
    # Right after the crash: one complete release is live, the old or the new one.
    live = installed(install)
    assert live in (("1.0.0", old.data), ("1.1.0", new.data)), live
    switched = step in ("switched", "checked", "recorded", "done")
    assert live[0] == ("1.1.0" if switched else "1.0.0"), (step, live)
    # The gate records "installed" only once the new release is live and healthy.
    assert _state_installed(install) == ("1.1.0" if step in ("recorded", "done") else "1.0.0")

    # The next run finishes (or undoes and redoes) the install.
    r = update_cli(policy, install, [url], "--insecure-loopback")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = report(r)
    assert installed(install) == ("1.1.0", new.data)
    assert _state_installed(install) == "1.1.0"
    assert not (install / "journal.json").exists()
    assert _leftovers(install) == []
    if step in ("staging", "staged", "switching", "switched", "checked"):
        assert doc["recovered"] is not None
        assert doc["recovered"]["status"] == ("installed" if switched else "undone")
    # the previous release is kept, complete
    prev = install / "previous"
    assert prev.is_symlink()
    assert (prev / old.name).read_bytes() == old.data


def _popen_update(
    policy: Path, install: Path, url: str, *extra: str, env: dict[str, str]
) -> subprocess.Popen[str]:
    args = [
        sys.executable,
        "-m",
        "rebuild",
        "update",
        "--policy",
        str(policy),
        "--package",
        PACKAGE,
        "--install-dir",
        str(install),
        "--mirror",
        url,
        "--insecure-loopback",
        "--json",
        *extra,
    ]
    return subprocess.Popen(
        args, env={**cli_env(), **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_stopped(pid: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if fields[0] == "T":
            return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} never stopped itself")


def _wait_waiting_for_lock(proc: subprocess.Popen[str], lock: Path, timeout: float = 60) -> None:
    """Return once ``proc`` has ``lock`` open: it is in its loop trying to take it.

    The updater opens D/.lock right before it polls flock(2) on it, and keeps
    it open until it gives up or installs; an fd pointing at the lock file is
    the state that says it has reached the lock.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the waiting updater exited before reaching the lock"
        fds = Path(f"/proc/{proc.pid}/fd")
        with contextlib.suppress(FileNotFoundError):  # an fd closed while we look
            if any(os.readlink(fd) == str(lock) for fd in fds.iterdir()):
                return
        time.sleep(0.02)
    raise AssertionError(f"process {proc.pid} never opened {lock}")


@pytest.mark.slow
def test_a_second_updater_exits_2_while_one_installs_and_a_waiting_one_sees_the_result(
    setup: tuple[Path, str, Release, Release], tmp_path: Path
) -> None:
    policy, url, _, new = setup
    install = tmp_path / "install"
    first = _popen_update(policy, install, url, env={TEST_HOOK_ENV: "stop:staged"})
    try:
        _wait_stopped(first.pid)  # holds the install lock, half way through
        second = update_cli(policy, install, [url], "--insecure-loopback")
        assert second.returncode == 2, second.stdout + second.stderr
        assert "another updater" in report(second)["error"]["message"]
        waiter = _popen_update(policy, install, url, "--wait-lock", "120", env={})
        # It reaches the lock the stopped updater holds; it cannot take it, so it
        # is still there, waiting, rather than done or refused.
        _wait_waiting_for_lock(waiter, install / ".lock")
        assert waiter.poll() is None
        os.kill(first.pid, signal.SIGCONT)
        out, err = first.communicate(timeout=120)
        assert first.returncode == 0, out + err
        assert json.loads(out)["status"] == "installed"
        out, err = waiter.communicate(timeout=120)
        assert waiter.returncode == 0, out + err
        assert json.loads(out)["status"] == "up-to-date"
        assert installed(install) == ("1.1.0", new.data)
    finally:
        for p in (first,):
            if p.poll() is None:
                p.kill()
                p.wait()


def _unhealthy_release_offered(
    tmp_path: Path, servers: list[ThreadServer]
) -> tuple[Path, ThreadServer, Release, Release]:
    """1.0.0 installed; the mirror now also offers 1.1.0, which fails the health check."""
    rel = Releases(tmp_path / "releases")
    # healthy unless the artifact says "broken"
    policy = rel.write_policy(
        package_extra='health_check = ["/bin/grep", "-qv", "broken", "{artifact}"]\n'
    )
    old = rel.make("1.0.0")
    bad = rel.make("1.1.0", b"<?php broken\n")
    mirror = tmp_path / "m"
    publish_to(mirror, old)
    s = ThreadServer(static_mirror(mirror), None)
    servers.append(s)
    assert update_cli(policy, tmp_path / "install", [s.url], "--insecure-loopback").returncode == 0
    publish_to(mirror, bad)
    return policy, s, old, bad


@pytest.mark.slow
def test_a_release_failing_its_health_check_is_switched_back_automatically(
    tmp_path: Path, servers: list[ThreadServer]
) -> None:
    policy, s, old, _ = _unhealthy_release_offered(tmp_path, servers)
    install = tmp_path / "install"
    r = update_cli(policy, install, [s.url], "--insecure-loopback")
    assert r.returncode == 1, r.stdout + r.stderr
    doc = report(r)
    assert doc["status"] == "rolled-back"
    assert doc["install"]["health_check"]["ok"] is False
    assert installed(install) == ("1.0.0", old.data)
    # "checkpoint accepted" moved on, "version installed" did not
    assert _state_installed(install) == "1.0.0"
    assert not (install / "journal.json").exists()
    assert _leftovers(install) == []


@pytest.mark.slow
def test_sigkill_while_rolling_back_an_unhealthy_release_still_ends_on_the_old_one(
    tmp_path: Path, servers: list[ThreadServer]
) -> None:
    policy, s, old, bad = _unhealthy_release_offered(tmp_path, servers)
    install = tmp_path / "install"
    r = update_cli(
        policy,
        install,
        [s.url],
        "--insecure-loopback",
        env={TEST_HOOK_ENV: "kill:rolling-back"},
    )
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    # killed between "roll back" in the journal and the switch back: still one
    # complete release live (the unhealthy one, for the moment)
    assert installed(install) == ("1.1.0", bad.data)
    assert json.loads((install / "journal.json").read_text())["state"] == "rolled-back"
    r = update_cli(policy, install, [s.url], "--insecure-loopback")
    assert r.returncode == 1, r.stdout + r.stderr  # the retry fails its health check again
    doc = report(r)
    assert doc["recovered"]["status"] == "rolled-back"
    assert doc["status"] == "rolled-back"
    assert installed(install) == ("1.0.0", old.data)
    assert _state_installed(install) == "1.0.0"
    assert not (install / "journal.json").exists()
    assert _leftovers(install) == []
