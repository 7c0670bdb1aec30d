"""Fixtures for the fleet's tests: a real Redis, a real log, real keys, the build images."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rebuild.engine.build_env import environment_image
from rebuild.keystore import generate_key_files
from tests.fleet.fleetutil import FleetProcess, RedisServer, run_fleet
from tests.logutil import Server, start_log

HEARTBEAT = "5"  # seconds: a killed worker's jobs come back within a few seconds of this


@pytest.fixture(scope="session")
def build_images() -> None:
    """The python-3.11 and php-8.2 images, built if missing (as scripts/setup does)."""
    for name in ("python-3.11", "php-8.2"):
        environment_image(name)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Keys:
    log: Path
    rebuilder: Path
    maintainer: Path


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    d = tmp_path / "keys"
    d.mkdir()
    for name in ("log", "rebuilder", "maintainer"):
        generate_key_files(f"{name}.fleet.test", d / f"{name}.key", None)
    return Keys(d / "log.key", d / "rebuilder.key", d / "maintainer.key")


@pytest.fixture
def log_server(tmp_path: Path, keys: Keys) -> Iterator[Server]:
    server = start_log(tmp_path / "log", keys.log, tmp_path / "log.out", "--workers", "0")
    try:
        yield server
    finally:
        server.stop()


@dataclass
class FleetRig:
    """Starts fleet processes against one broker and one log; stops them all at the end."""

    tmp: Path
    broker: str
    log_url: str
    keys: Keys
    processes: list[FleetProcess] = field(default_factory=list)

    def common(self) -> list[str]:
        return ["--broker", self.broker, "--heartbeat-timeout", HEARTBEAT]

    def worker(self, name: str, *extra: str) -> FleetProcess:
        args = ["worker", *self.common(), "--reports", str(self.tmp / f"reports-{name}")]
        args += ["--retry-backoff", "1", "--timeout", "300", *extra]
        p = FleetProcess(args, self.tmp / f"worker-{name}.out", "ready")
        self.processes.append(p)
        return p

    def publisher(self, *extra: str) -> FleetProcess:
        args = ["publish", *self.common(), "--key", str(self.keys.rebuilder)]
        args += ["--log", self.log_url, "--state", str(self.tmp / "publish-state"), *extra]
        p = FleetProcess(args, self.tmp / "publish.out", "publisher ready")
        self.processes.append(p)
        return p

    def watch_once(self, artifacts: list[Path], state: str = "watch") -> dict[str, Any]:
        """One ``fleet watch --once --json`` round over the log; its report."""
        args = ["watch", *self.common(), "--once", "--json", "--log", self.log_url]
        args += ["--log-key", f"{self.keys.log}.pub", "--state", str(self.tmp / state)]
        args += ["--maintainer-key", f"{self.keys.maintainer}.pub"]
        for a in artifacts:
            args += ["--artifacts", str(a)]
        r = run_fleet(*args)
        assert r.returncode == 0, r.stdout + r.stderr
        doc: dict[str, Any] = json.loads(r.stdout)
        return doc

    def stop_all(self) -> None:
        for p in self.processes:
            if p.proc.poll() is None:
                p.stop()


@pytest.fixture
def rig(
    tmp_path: Path, redis_server: RedisServer, log_server: Server, keys: Keys
) -> Iterator[FleetRig]:
    r = FleetRig(tmp_path, redis_server.url, log_server.url, keys)
    try:
        yield r
    finally:
        r.stop_all()
