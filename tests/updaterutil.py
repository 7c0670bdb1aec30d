"""Shared fixtures for the updater's tests: releases the gate accepts, mirrors, HTTPS servers.

Releases come from the gate's release world (:mod:`tests.gatesim`): real
Ed25519 keys sign a real release statement and real rebuild attestations,
which go into an RFC 6962 tree with a signed, witness-cosigned checkpoint and
tlog-proofs, all made by the project's own ``verify`` code, dated now so the
gate's freshness check passes. The gate itself, the mirrors (aiohttp on
127.0.0.1 with ``trustme`` certificates) and ``rebuild update`` are real.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
from aiohttp import web

from rebuild.demo.procs import python_for_others
from rebuild.errors import OperationalError
from rebuild.keystore import load_signing_key
from rebuild.recipe import load_recipe
from rebuild.updater.mirror import publish
from rebuild.updater.serve import make_app, resolve
from tests import clijson
from tests.gatesim import COMMIT, RECIPE, RECIPE_SHA256, World
from tests.logutil import ROOT, cli_env, free_port, run_cli
from verify.intoto import (
    GitSource,
    RebuildPredicate,
    ReleasePredicate,
    Subject,
    make_statement,
    sign_statement,
)

PACKAGE = "hello-phar"
PHAR_RECIPE = ROOT / "fixtures" / "recipes" / "hello-phar.recipe.toml"


@dataclass
class Release:
    package: str
    version: str
    name: str
    artifact: Path
    bundle: Path
    data: bytes


@dataclass
class Releases:
    """One package's releases, signed and logged, plus the policy that trusts them."""

    root: Path
    world: World = field(default_factory=World)
    made: list[Release] = field(default_factory=list)
    _sizes: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def write_policy(
        self, *, package_extra: str = "", top: str = "", name: str = "policy.toml"
    ) -> Path:
        (self.root / "tlog.policy").write_text(self.world.tlog_policy())
        text = self.world.policy_toml(package_extra=package_extra)
        path = self.root / name
        path.write_text(top + text)
        return path

    def make(self, version: str, data: bytes | None = None, *, name: str = "hello.phar") -> Release:
        """Sign, log and bundle ``data`` as ``version`` (bundle against a fresh checkpoint)."""
        w = self.world
        data = data if data is not None else f"<?php echo 'hello {version}';\n".encode()
        digest = hashlib.sha256(data).hexdigest()
        pred = ReleasePredicate(
            package=w.package,
            version=version,
            source=GitSource("https://git.example.org/hello.git", f"v{version}", COMMIT),
            recipe=RECIPE,
            recipe_sha256=RECIPE_SHA256,
        )
        release = sign_statement(make_statement([Subject(name, digest)], pred), [w.maintainer])
        atts = [w.attest(data, k) for k in w.rebuilder_keys]
        w.add(release, *atts)
        size = len(w.entries)
        note = w.checkpoint(cosign_time=int(time.time()) - 5)
        bundle = w.bundle(
            release,
            atts,
            note,
            consistency=[
                w.consistency(old, size) for old in sorted(set(self._sizes)) if old < size
            ],
        )
        self._sizes.append(size)
        d = self.root / "releases" / f"{len(self.made)}-{version}"
        d.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(data)
        (d / "bundle.json").write_bytes(bundle)
        r = Release(w.package, version, name, d / name, d / "bundle.json", data)
        self.made.append(r)
        return r


def cli_json(*args: str, timeout: float = 120) -> dict[str, Any]:
    """``rebuild ARGS --json`` as a real process; fails the test unless it exits 0 with an
    envelope the schema accepts."""
    r = run_cli(*args, "--json", timeout=timeout)
    assert r.returncode == 0, f"{args}: {r.stdout}{r.stderr}"
    doc = clijson.envelope(r.stdout, 0)
    assert isinstance(doc, dict)
    return doc


def attest(key: Path, artifact: Path, recipe: Path, out: Path) -> Path:
    """What ``rebuild verify`` signs when it reproduces ``artifact``.

    Signed with the rebuilder's real key for the bytes the maintainer signed;
    a real rebuild in the pinned environment needs the Docker engine and is
    proven by the gate's attack suite (tests/test_gate_attacks.py).
    """
    r = load_recipe(recipe)
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    now = int(time.time())
    pred = RebuildPredicate(
        package=r.package,
        version=r.version,
        verdict="reproduced",
        source=r.source,
        recipe_sha256=r.sha256,
        environment=r.environment,
        tool_version="rebuild/0.1.0",
        started_at=now - 30,
        finished_at=now,
        rebuilt_sha256=digest,
    )
    out.write_bytes(
        sign_statement(
            make_statement([Subject(artifact.name, digest)], pred), [load_signing_key(key)]
        )
    )
    return out


def logged_release(
    tmp: Path,
    version: str,
    keys: dict[str, Path],
    log: str,
    since: int | None,
    *,
    ca_bundle: Path | None = None,
    rebuilders: tuple[str, ...] = ("r1", "r2"),
) -> tuple[Path, Path]:
    """Sign (``release sign``), attest, ``log add`` and ``rebuild bundle`` ``version``.

    Returns (artifact, bundle); the bundle carries the consistency proof
    from tree size ``since`` when it is given.
    """
    d = tmp / f"v{version}"
    d.mkdir(parents=True)
    recipe = d / "recipe.toml"
    recipe.write_text(
        PHAR_RECIPE.read_text()
        .replace('version = "1.0.0"', f'version = "{version}"')
        .replace('tag = "v1.0.0"', f'tag = "v{version}"')
    )
    artifact = d / "hello.phar"  # the name the recipe's build gives its output
    artifact.write_bytes(f"<?php echo 'hello {version}\\n';\n".encode())
    release = d / "release.json"
    sign = ["release", "sign", str(artifact), "--recipe", str(recipe)]
    cli_json(*sign, "--key", str(keys["maintainer"]), "--out", str(release))
    envelopes = [release]
    for r in rebuilders:
        envelopes.append(attest(keys[r], artifact, recipe, d / f"{r}.json"))
    ca = ["--log-ca-bundle", str(ca_bundle)] if ca_bundle is not None else []
    for e in envelopes:
        cli_json("log", "add", "--log", log, *ca, str(e))
    bundle = d / "bundle.json"
    args = ["bundle", "--log", log, *ca, "--artifact", str(artifact), "--out", str(bundle)]
    if since is not None:
        args += ["--since-size", str(since)]
    cli_json(*args)
    return artifact, bundle


def publish_to(mirror: Path, release: Release) -> None:
    mirror.mkdir(parents=True, exist_ok=True)
    publish(
        mirror,
        release.artifact,
        release.bundle,
        package=release.package,
        version=release.version,
        artifact_name=release.name,
    )


@dataclass
class TLS:
    """A test CA, its bundle on disk, and server contexts for names it certifies."""

    dir: Path
    ca: trustme.CA = field(default_factory=trustme.CA)

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_bundle = self.dir / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_bundle))

    def server_context(self, *names: str) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ca.issue_cert(*(names or ("127.0.0.1", "localhost"))).configure_cert(ctx)
        return ctx

    def cert_files(self, *names: str) -> tuple[Path, Path]:
        leaf = self.ca.issue_cert(*(names or ("127.0.0.1", "localhost")))
        cert, key = self.dir / "server.pem", self.dir / "server.key"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        for extra in leaf.cert_chain_pems[1:]:
            extra.write_to_path(str(cert), append=True)
        leaf.private_key_pem.write_to_path(str(key))
        return cert, key


class ThreadServer:
    """An aiohttp application on 127.0.0.1 (any port) in its own thread and event loop."""

    def __init__(self, app: web.Application, tls: ssl.SSLContext | None) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        self._tls = tls
        self.url = ""
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("test server did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._tls)
            await site.start()
            port = self._runner.addresses[0][1]
            self.url = f"{'https' if self._tls else 'http'}://127.0.0.1:{port}"
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def static_mirror(root: Path) -> web.Application:
    """The project's own static mirror server (``rebuild mirror serve``'s application)."""
    return make_app(root)


def hostile_mirror(root: Path, *, artifact: Handler) -> web.Application:
    """Serves ``root``'s version lists and bundles honestly; artifacts go to ``artifact``."""
    root = root.resolve()
    app = web.Application()

    async def route(request: web.Request) -> web.StreamResponse:
        rel = request.match_info["path"]
        if rel.endswith(("index.json", "bundle.json")):
            path = resolve(root, rel)
            if path is None:
                raise web.HTTPNotFound()
            return web.FileResponse(path)
        return await artifact(request)

    app.router.add_get("/{path:.*}", route)
    return app


async def slow_body(request: web.Request) -> web.StreamResponse:
    """Headers at once, then a few bytes, then silence far longer than any read timeout."""
    resp = web.StreamResponse()
    await resp.prepare(request)
    await resp.write(b"<?php")
    await asyncio.sleep(3600)
    return resp


async def endless_body(request: web.Request) -> web.StreamResponse:
    """A response that never ends (no Content-Length), as fast as the client reads."""
    resp = web.StreamResponse()
    await resp.prepare(request)
    # Yield to the event loop between writes: a write that needs no drain
    # does not, and then the loop never runs connection_lost once the client
    # hangs up at its byte cap, and every later write hits the dead socket.
    chunk = b"A" * 65536
    for _ in range(1 << 20):  # bounded: 64 GiB, far past any cap; the client hangs up first
        if request.transport is None or request.transport.is_closing():
            break
        await resp.write(chunk)
        await asyncio.sleep(0)
    return resp


def dead_url() -> str:
    """A loopback HTTPS URL where nothing listens (connection refused)."""
    return f"https://127.0.0.1:{free_port()}"


def update_cli(
    policy: Path,
    install: Path,
    mirrors: list[str],
    *extra: str,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    package: str = PACKAGE,
) -> subprocess.CompletedProcess[str]:
    """``rebuild update --json`` as a real subprocess."""
    args = [
        "update",
        "--policy",
        str(policy),
        "--package",
        package,
        "--install-dir",
        str(install),
        "--json",
        *extra,
    ]
    for m in mirrors:
        args += ["--mirror", m]
    if env is None:
        return run_cli(*args, timeout=timeout)
    return subprocess.run(
        [sys.executable, "-m", "rebuild", *args],
        env={**cli_env(), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def report(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The envelope ``rebuild ... --json`` printed, checked against the schema (docs/cli.md)."""
    try:
        doc = clijson.envelope(proc.stdout, proc.returncode)
    except ValueError as e:
        raise AssertionError(
            f"not JSON (exit {proc.returncode}): {proc.stdout}\n{proc.stderr}"
        ) from e
    assert isinstance(doc, dict)
    return doc


def other_user_python() -> tuple[list[str], dict[str, str]]:
    """A command line and environment that run this project's Python as another user."""
    python, env = _other_user_python()
    return list(python), dict(env)


@functools.cache
def _other_user_python() -> tuple[tuple[str, ...], dict[str, str]]:
    """(see other_user_python)

    :func:`rebuild.demo.procs.python_for_others` decides: this interpreter or
    the system's, the source and packages where they are or (a checkout in a
    private home directory) copied once per test session into a directory
    under /tmp that other users can reach, removed at exit.
    """
    copies = Path(tempfile.mkdtemp(prefix="rebuild-other-user-", dir="/tmp"))
    copies.chmod(0o755)
    atexit.register(shutil.rmtree, copies, ignore_errors=True)
    try:
        exe, paths = python_for_others(copies)
    except OperationalError as e:
        raise AssertionError(str(e)) from None
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": os.pathsep.join(map(str, paths)),
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
        "HOME": "/nonexistent",
    }
    # Measured under coverage, unless the source was copied elsewhere (then
    # its files would not be the checkout's).
    if "COVERAGE_PROCESS_CONFIG" in os.environ and str(ROOT) in map(str, paths):
        env.update(_coverage_env([str(p) for p in paths]))
    return (str(exe),), env


# Where processes run as other users leave their coverage data (they cannot
# write next to the checkout's .coverage); scripts/coverage_summary.py combines
# it with the rest.
OTHER_USERS_COVERAGE = ROOT / ".coverage-other-users"


def _coverage_env(paths: list[str]) -> dict[str, str]:
    """Measure a process run as another user like every other one (docs/testing.md).

    tests/coverage_startup/usercustomize.py starts coverage with the suite's
    configuration (COVERAGE_PROCESS_CONFIG, which names the data file itself:
    COVERAGE_FILE does not override it); the data go to a sticky,
    world-writable directory, as in /tmp, so each user writes only its own files.
    """
    from coverage.config import CoverageConfig  # only under coverage

    OTHER_USERS_COVERAGE.mkdir(exist_ok=True)
    OTHER_USERS_COVERAGE.chmod(0o1777)
    config = CoverageConfig.deserialize(os.environ["COVERAGE_PROCESS_CONFIG"])
    config.data_file = str(OTHER_USERS_COVERAGE / ".coverage")
    return {
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "coverage_startup"), *paths]),
        "COVERAGE_PROCESS_CONFIG": config.serialize(),
    }


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (symlinks by target) and its sha256: "nothing changed" checks."""
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def installed(install: Path) -> tuple[str, bytes] | None:
    """(version, artifact bytes) of D/current, checking it is one complete release."""
    cur = install / "current"
    if not cur.is_symlink():
        return None
    rid = os.readlink(cur).removeprefix("releases/")
    meta = json.loads((install / "releases" / f"{rid}.json").read_text())
    files = sorted(p.name for p in cur.iterdir())
    assert files == [meta["artifact"]], files
    data = (cur / meta["artifact"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == meta["sha256"]
    return meta["version"], data


# -- privilege separation: real Unix users, the spool, the daemon ----------------


@dataclass
class User:
    name: str
    uid: int
    gid: int


def useradd(prefix: str) -> User:
    """A new system user with its own group (remove it with :func:`userdel`)."""
    name = f"{prefix}{secrets.token_hex(3)}"
    subprocess.run(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--user-group",
            "-s",
            "/usr/sbin/nologin",
            name,
        ],
        check=True,
        capture_output=True,
    )
    pw = pwd.getpwnam(name)
    return User(name, pw.pw_uid, pw.pw_gid)


def userdel(user: User) -> None:
    subprocess.run(["userdel", user.name], check=False, capture_output=True)


def make_spool(spool: Path, updater: User, web: User) -> None:
    """The spool layout docs/updater.md (and the tmpfiles snippet) prescribe."""
    spool.mkdir(mode=0o755)
    req, status = spool / "requests", spool / "status"
    req.mkdir()
    status.mkdir()
    os.chown(req, updater.uid, web.gid)
    os.chmod(req, 0o1730)
    os.chown(status, updater.uid, web.gid)
    os.chmod(status, 0o750)


def run_as(user: User, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """This project's Python (``args`` after the interpreter) as ``user``."""
    python, env = other_user_python()
    return subprocess.run(
        [*python, *args],
        user=user.uid,
        group=user.gid,
        extra_groups=[],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Daemon:
    """``rebuild updater daemon`` as ``user``, its output in ``log``."""

    def __init__(self, user: User, log: Path, *args: str) -> None:
        python, env = other_user_python()
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            [*python, "-m", "rebuild", "updater", "daemon", *args],
            user=user.uid,
            group=user.gid,
            extra_groups=[],
            env=env,
            cwd="/",
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        self.wait_for("watching")

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.log.read_text(errors="replace")
            if text in out:
                return out
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}: {out}")
            time.sleep(0.05)
        raise AssertionError(f"daemon never said {text!r}: {self.log.read_text()}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            self._out.close()
