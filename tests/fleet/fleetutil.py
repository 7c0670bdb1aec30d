"""Real parts for the fleet's tests: a redis-server, fleet processes, releases in a log.

Everything is the real thing: ``redis-server`` (Debian's) started on a free
loopback port with its append-only file, ``rebuild fleet ...`` and ``rebuild
log serve`` as separate processes, fixture releases signed with real keys and
added to the real log, builds on the real Docker engine.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import redis

from rebuild.engine.build_env import lock_digest
from rebuild.engine.fixtures import materialize
from rebuild.keystore import load_signing_key, load_verifier_key
from rebuild.log.client import LogClient
from rebuild.log.monitor import CheckpointVerifier
from rebuild.log.tree import TreeReader
from rebuild.recipe import parse_recipe
from rebuild.release import release_statement, sign_release
from tests.logutil import PYTHON, cli_env, free_port
from verify.intoto import RebuildPredicate, Statement, verify_statement

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 180.0) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


class RedisServer:
    """``redis-server`` on 127.0.0.1 with its data (and append-only file) in ``directory``."""

    def __init__(self, directory: Path, *extra: str, password: str | None = None) -> None:
        self.directory = directory
        self.password = password
        self.extra = (*extra, *(("--requirepass", password) if password else ()))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        return [
            REDIS_SERVER,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
            *self.extra,
        ]  # fmt: skip

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            self.proc = subprocess.Popen(self.args(), stdout=subprocess.DEVNULL)
            try:
                wait_for("redis-server to answer", self._answers, timeout=30)
                return
            except AssertionError:
                self.proc.kill()
                self.proc.wait()
                self.port = free_port()  # the port was taken meanwhile: another one
        raise AssertionError(f"redis-server did not start: {self.log()}")

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"redis-server exited: {self.log()}")
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=10
        )

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown save; only what the append-only file holds survives."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


class FleetProcess:
    """One ``rebuild fleet ...`` process; ``ready`` is a line it prints once serving."""

    def __init__(
        self, args: Sequence[str], log: Path, ready: str | None, env: dict[str, str] | None = None
    ) -> None:
        self.log = log
        self._out = log.open("ab")
        self._offset = self._out.tell()  # a restarted process appends: read only its lines
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "rebuild", "fleet", *args],
            env={**cli_env(), **(env or {})},
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        if ready is not None:
            wait_for(f"{args[0]} to be ready", lambda: self._ready(ready), timeout=60)

    def _ready(self, marker: str) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"fleet {self.text()} exited early")
        return marker in self.text()

    def text(self) -> str:
        with self.log.open("rb") as f:
            f.seek(self._offset)
            return f.read().decode(errors="replace")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._out.close()

    def stop(self, timeout: float = 120) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._out.close()
        return int(self.proc.returncode)


def run_fleet(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "rebuild", "fleet", *args],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class Release:
    """A fixture release: its statement is in the log, its artifact in ``artifacts``."""

    package: str
    artifact: Path
    artifacts: Path
    sha256: str
    recipe_sha256: str
    statement: Path


def add_release(
    tmp: Path,
    fixture: str,
    maintainer_key: Path,
    log_url: str,
    *,
    tag: str = "",
    command: list[str] | None = None,
) -> Release:
    """Sign a release of ``fixture`` (its recipe varied by ``tag``/``command``) and log it.

    A different ``tag`` changes the recipe text (a comment), so the target
    (artifact + recipe digest) is new while the build stays the same.
    """
    work = tmp / f"release-{fixture}-{tag or 'plain'}"
    made = materialize(fixture, work / "fixture", lock_for=lock_digest)
    text = made.recipe.read_text()
    if command is not None:
        text = re.sub(r"(?m)^command = .*$", "command = " + json.dumps(command), text)
    if tag:
        text += f"# release {tag}\n"
    recipe_path = work / "recipe.toml"
    recipe_path.write_text(text)
    recipe = parse_recipe(text.encode(), str(recipe_path))
    artifacts = work / "artifacts"
    artifacts.mkdir()
    artifact = artifacts / made.artifact.name
    shutil.copyfile(made.artifact, artifact)
    key = load_signing_key(maintainer_key)
    envelope = sign_release(release_statement([artifact], recipe), key)
    (work / "release.dsse.json").write_bytes(envelope)
    with LogClient(log_url) as client:
        client.add(envelope, wait=False)
    return Release(
        package=recipe.package,
        artifact=artifact,
        artifacts=artifacts,
        sha256=hashlib.sha256(artifact.read_bytes()).hexdigest(),
        recipe_sha256=recipe.sha256,
        statement=work / "release.dsse.json",
    )


def attestations(
    log_url: str, log_key: Path, rebuilder_key: Path, artifact_sha256: str
) -> list[tuple[int, RebuildPredicate]]:
    """Rebuild attestations by ``rebuilder_key`` about the artifact, read from the log's tiles."""
    vkey = load_verifier_key(f"{rebuilder_key}.pub")
    out: list[tuple[int, RebuildPredicate]] = []
    with LogClient(log_url) as client:
        indexes = client.lookup_subject(bytes.fromhex(artifact_sha256))
        if not indexes:
            return []
        cp = CheckpointVerifier(log_key=load_verifier_key(f"{log_key}.pub")).verify(
            client.checkpoint()
        )
        reader = TreeReader(client, cp)
        for i in indexes:
            if i >= reader.size:
                continue
            entry = reader.entry(i)
            try:
                statement: Statement = verify_statement(entry, [vkey]).statement
            except Exception:
                continue
            if isinstance(statement.predicate, RebuildPredicate):
                out.append((i, statement.predicate))
    return out


def status(broker: str) -> dict[str, Any]:
    r = run_fleet("status", "--broker", broker, "--json")
    assert r.returncode == 0, r.stderr
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc
