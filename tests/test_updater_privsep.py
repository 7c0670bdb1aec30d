"""Privilege separation with two real Unix users: the web user can only ask.

The test (root) creates a web user and an updater user with ``useradd``,
lays out the spool as docs/updater.md says, and runs ``rebuild updater
daemon`` as the updater user and ``rebuild updater request``/``status`` as
the web user (real processes, real uids, a real mirror on 127.0.0.1). It
proves the web user can change neither the installed code, nor the gate's
state, nor the policy, and that hostile requests (path traversal, a huge
file, a symlink, a FIFO, a directory, a flood) change nothing. The users and
their files are removed afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.updaterutil import (
    Daemon,
    Release,
    Releases,
    ThreadServer,
    User,
    installed,
    make_spool,
    publish_to,
    run_as,
    static_mirror,
    tree,
    useradd,
    userdel,
)


@dataclass
class World:
    base: Path
    web: User
    updater: User
    spool: Path
    install: Path
    policy: Path
    mirror: Path
    url: str
    releases: list[Release]

    def run_as(
        self, user: User, *args: str, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return run_as(user, *args, timeout=timeout)

    def rebuild_as(self, user: User, *args: str) -> subprocess.CompletedProcess[str]:
        return run_as(user, "-m", "rebuild", *args)

    def daemon(self) -> Daemon:
        return Daemon(
            self.updater,
            self.base / "daemon.log",
            "--spool",
            str(self.spool),
            "--policy",
            str(self.policy),
            "--install-dir",
            str(self.install),
            "--mirror",
            self.url,
            "--insecure-loopback",
            "--poll",
            "5",
        )


@pytest.fixture
def world() -> Iterator[World]:
    web = useradd("rbweb")
    updater = useradd("rbupd")
    base = Path(tempfile.mkdtemp(prefix="rebuild-privsep-", dir="/tmp"))
    server = None
    try:
        base.chmod(0o755)
        rel = Releases(base / "releases")
        policy = rel.write_policy()
        for p in (base / "releases").rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)
        (base / "releases").chmod(0o755)
        v1, v2 = rel.make("1.0.0"), rel.make("1.1.0")
        mirror = base / "mirror"
        publish_to(mirror, v1)
        server = ThreadServer(static_mirror(mirror), None)
        spool = base / "spool"
        make_spool(spool, updater, web)
        install = base / "install"
        install.mkdir(mode=0o755)
        os.chown(install, updater.uid, updater.gid)
        yield World(base, web, updater, spool, install, policy, mirror, server.url, [v1, v2])
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)
        userdel(web)
        userdel(updater)


def _status(w: World, name: str = "hello-phar") -> dict[str, object] | None:
    r = w.rebuild_as(w.web, "updater", "status", name, "--spool", str(w.spool), "--json")
    if r.returncode != 0:
        return None
    doc = json.loads(r.stdout)["status"]
    assert isinstance(doc, dict)
    return doc


def _request(w: World, version: str) -> str:
    r = w.rebuild_as(
        w.web, "updater", "request", "hello-phar", version, "--spool", str(w.spool), "--json"
    )
    assert r.returncode == 0, r.stdout + r.stderr
    rid = json.loads(r.stdout)["id"]
    assert isinstance(rid, str)
    return rid


def _wait_outcome(w: World, rid: str, timeout: float = 120) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = _status(w)
        if doc is not None and doc["request"] == {"id": rid, "version": doc["request"]["version"]}:  # type: ignore[index]
            return doc
        time.sleep(0.1)
    raise AssertionError(f"no outcome for request {rid}")


ATTACKS = r"""
import errno, json, os, sys
base, install, policy = sys.argv[1], sys.argv[2], sys.argv[3]
results = {}
def attempt(name, fn):
    try:
        fn()
        results[name] = "succeeded"
    except OSError as e:
        results[name] = errno.errorcode.get(e.errno, str(e.errno))
cur = os.path.join(install, "current")
art = os.path.join(cur, os.listdir(cur)[0])
attempt("write installed artifact", lambda: open(art, "ab").write(b"system($_GET[c]);"))
evil = "/tmp/rebuild-evil-link-%d" % os.getpid()
os.symlink("/", evil)
attempt("replace current symlink", lambda: os.replace(evil, cur))
os.unlink(evil)
attempt("unlink current", lambda: os.unlink(cur))
attempt("create in install dir", lambda: open(os.path.join(install, "evil"), "wb"))
attempt("create in release dir", lambda: open(os.path.join(cur, "evil.php"), "wb"))
attempt("read state", lambda: open(os.path.join(install, "state", "state.json"), "rb").read())
attempt("write state", lambda: open(os.path.join(install, "state", "state.json"), "ab"))
attempt("write policy", lambda: open(policy, "ab"))
attempt("chmod policy", lambda: os.chmod(policy, 0o666))
attempt("write journal", lambda: open(os.path.join(install, "journal.json"), "wb"))
attempt("list requests", lambda: os.listdir(os.path.join(base, "spool", "requests")))
status = os.path.join(base, "spool", "status", "hello-phar.json")
attempt("write status", lambda: open(status, "ab"))
print(json.dumps(results))
"""


def test_the_web_user_can_only_ask_and_the_daemon_installs(world: World) -> None:
    w = world
    daemon = w.daemon()
    try:
        rid = _request(w, "latest")
        doc = _wait_outcome(w, rid)
        assert doc["outcome"] == "installed", doc
        assert installed(w.install) == ("1.0.0", w.releases[0].data)
        # a new release appears on the mirror; the web user asks for exactly it
        publish_to(w.mirror, w.releases[1])
        rid = _request(w, "1.1.0")
        doc = _wait_outcome(w, rid)
        assert doc["outcome"] == "installed", doc
        assert doc["installed_version"] == "1.1.0"
        assert installed(w.install) == ("1.1.0", w.releases[1].data)
        # everything installed belongs to the updater, and the web user can change none of it
        for p in [w.install, *w.install.rglob("*")]:
            assert p.lstat().st_uid == w.updater.uid, p
        r = w.run_as(w.web, "-c", ATTACKS, str(w.base), str(w.install), str(w.policy))
        results = json.loads(r.stdout)
        assert results == {name: "EACCES" for name in results} | {
            # EPERM, not EACCES, for a chmod of someone else's file
            "chmod policy": "EPERM",
        }, results
        assert installed(w.install) == ("1.1.0", w.releases[1].data)
    finally:
        assert daemon.stop() == 0


def _hostile_requests(w: World) -> list[str]:
    """Written by the web user straight into the drop box (no CLI to validate for it)."""
    script = r"""
import json, os, secrets, sys
req, target = sys.argv[1], sys.argv[2]
def name():
    return os.path.join(req, secrets.token_hex(16) + ".req")
def write(path, data):
    # complete before it appears (as the real requester does), so what the
    # daemon judges is the whole file
    tmp = os.path.join(req, ".tmp-" + secrets.token_hex(16))
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)
def doc(p, v):
    return json.dumps({"format": "rebuild-update-request/v1", "package": p, "version": v}).encode()
write(name(), doc("../../../etc/passwd", "1.0"))        # traversal in the name
write(name(), doc("hello-phar", "../../../../tmp/x"))   # traversal in the version
write(name(), doc("not-in-policy", "1.0.0"))            # a package the policy does not name
write(name(), doc("hello-phar", "1.0.0 --insecure"))    # option smuggling
write(name(), b"A" * (10 << 20))                        # huge
write(name(), doc("hello-phar", "1.1.0")[:-1] + b', "extra": 1}')  # an unknown field
os.symlink(target, name())                              # symlink to the installed code
os.symlink("/etc/shadow", name())                       # symlink to a secret
os.mkfifo(name())                                       # a FIFO: the daemon must not block
os.mkdir(os.path.join(req, secrets.token_hex(16) + ".req"))  # a directory
os.mkdir(os.path.join(req, "..."))
write(os.path.join(req, "x" * 200), b"{}")              # not a request name
for _ in range(2000):                                   # a flood of valid-looking requests
    write(name(), doc("hello-phar", "latest"))
print("ok")
"""
    cur = w.install / "current"
    target = str(cur / os.listdir(cur)[0])
    r = w.run_as(w.web, "-c", script, str(w.spool / "requests"), target, timeout=120)
    assert r.returncode == 0, r.stderr
    return [target]


def test_the_daemon_refuses_to_start_when_others_could_change_what_it_trusts(
    tmp_path: Path,
) -> None:
    """A policy or install directory someone else may write would hand them the updater."""
    from rebuild.errors import UsageError
    from rebuild.updater.daemon import check_not_writable_by_others, check_spool

    policy = tmp_path / "policy.toml"
    policy.write_text("")
    policy.chmod(0o644)
    check_not_writable_by_others(policy, "policy")
    policy.chmod(0o664)
    with pytest.raises(UsageError, match="writable by others"):
        check_not_writable_by_others(policy, "policy")
    policy.chmod(0o644)
    tmp_path.chmod(0o777)  # a parent anyone may write: the file could be swapped
    with pytest.raises(UsageError, match="writable by others"):
        check_not_writable_by_others(policy, "policy")
    tmp_path.chmod(0o755)
    spool = tmp_path / "spool"
    (spool / "requests").mkdir(parents=True)
    (spool / "status").mkdir()
    os.chmod(spool / "requests", 0o777)  # world-writable without the sticky bit
    with pytest.raises(UsageError, match="sticky"):
        check_spool(spool)
    os.chmod(spool / "requests", 0o1733)
    check_spool(spool)
    os.chmod(spool / "status", 0o775)
    with pytest.raises(UsageError, match="writable by others"):
        check_spool(spool)


def test_hostile_requests_change_nothing(world: World) -> None:
    w = world
    daemon = w.daemon()
    try:
        rid = _request(w, "latest")
        assert _wait_outcome(w, rid)["outcome"] == "installed"
        r = w.rebuild_as(w.web, "updater", "request", "../etc", "1.0", "--spool", str(w.spool))
        assert r.returncode == 2  # the CLI refuses before writing anything
        before_install = tree(w.install)
        before_policy = w.policy.read_bytes()
        _hostile_requests(w)
        # the daemon drains the drop box (all but the directories it cannot remove)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            left = [p.name for p in (w.spool / "requests").iterdir()]
            if all((w.spool / "requests" / n).is_dir() for n in left):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"requests left: {len(left)}")
        expected = {
            "a symlink, not a file",  # both symlinks: never followed
            "not a regular file",  # the FIFO (opened without blocking) and the directory
            "larger than 512 bytes",
            "invalid package name '../../../etc/passwd'",
            "invalid version '../../../../tmp/x' (a release version, or 'latest')",
            "invalid version '1.0.0 --insecure' (a release version, or 'latest')",
            "package 'not-in-policy' is not in the policy",
            "expected exactly format, package, version",
            "not a request file name",
        }
        # the daemon removes what it took before it writes its counts: wait for them
        reasons: set[str] = set()
        while time.monotonic() < deadline and not expected <= reasons:
            status_file = w.spool / "status" / "_daemon.json"
            if status_file.exists():
                doc = json.loads(status_file.read_text())
                reasons = {r["reason"] for r in doc["recent_refused"]}
            time.sleep(0.1)
        assert expected <= reasons, reasons
        # nothing installed, recorded or configured changed; no status file for strangers
        assert tree(w.install) == before_install
        assert w.policy.read_bytes() == before_policy
        assert sorted(p.name for p in (w.spool / "status").iterdir()) == [
            "_daemon.json",
            "hello-phar.json",
        ]
        assert installed(w.install) == ("1.0.0", w.releases[0].data)
        assert Path("/etc/shadow").stat().st_size > 0
        # the daemon is still alive and still serves honest requests
        publish_to(w.mirror, w.releases[1])
        rid = _request(w, "latest")
        assert _wait_outcome(w, rid)["outcome"] == "installed"
        assert installed(w.install) == ("1.1.0", w.releases[1].data)
        out = daemon.log.read_text()
        assert "Traceback" not in out
    finally:
        assert daemon.stop() == 0
