"""Every command, run for real with ``--json``, prints what docs/cli-output.schema.json says.

The commands are discovered from the parser (tests/test_cli_json.py checks the
ones with no scenario here fail loudly): each has at least one real run in
``SCENARIOS``, with the exit status it must give, against a real world built
once for the module: keys, a signed release, ``witness serve``, ``log serve``
with that witness, a Redis broker, the Docker environments. Long-running
commands are started, read until their first JSON line, stopped with SIGTERM,
and their whole output (JSON lines) is checked.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rebuild.cli import build_parser, commands
from rebuild.engine.build_env import environment_image
from rebuild.keystore import load_signing_key
from tests import clijson
from tests.fleet.fleetutil import RedisServer
from tests.gatesim import write_gate_inputs
from tests.logutil import PYTHON, RECIPE, Server, cli_env, make_key, run_cli, start_log
from tests.statements import attestation as signed_attestation
from tests.updaterutil import Releases, ThreadServer, publish_to, static_mirror
from verify.cosignature import witness_key

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Run:
    """One invocation (``--json`` is added) and the exit status it must give."""

    args: tuple[str, ...]
    code: int
    daemon: bool = False  # runs until stopped: read its first line, then SIGTERM


@dataclass
class World:
    d: Path
    maint: Path
    rebuilder: Path
    log_key: Path
    witness_key: Path
    artifact: Path
    statement: Path
    attestation: Path
    proof: Path
    policy: Path
    log_url: str
    broker: str
    updates: Releases
    update_policy: Path
    mirror_url: str

    def fresh(self, name: str) -> Path:
        """A path in a new directory of its own (commands that refuse to overwrite)."""
        n = 0
        while (self.d / f"{name}-{n}").exists():
            n += 1
        (self.d / f"{name}-{n}").mkdir()
        return self.d / f"{name}-{n}" / name


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    for env in ("python-3.11", "php-8.2"):
        environment_image(env)  # built by scripts/setup; idempotent
    d = tmp_path_factory.mktemp("world")
    maint = make_key(d, "maint.world.test")
    rebuilder = make_key(d, "rebuilder.world.test")
    log_key = make_key(d, "log.world.test")
    wkey = make_key(d, "w1.world.test")
    artifact = d / "hello.phar"
    artifact.write_bytes(b"<?php echo 'world';\n")
    assert (
        run_cli(
            "release", "sign", str(artifact), "--recipe", str(RECIPE), "--key", str(maint)
        ).returncode
        == 0
    )
    statement = d / "hello.phar.release.json"
    servers: list[Server] = []
    redis = RedisServer(d / "redis")
    updates = Releases(d / "releases")
    update_policy = updates.write_policy()
    mirror = d / "mirror"
    publish_to(mirror, updates.make("1.0.0"))
    mirror_server = ThreadServer(static_mirror(mirror), None)
    try:
        witness = Server(
            ["witness", "serve", "--key", str(wkey), "--state", str(d / "ws"),
             "--listen", "127.0.0.1:0", "--log-key", f"{log_key}.pub"],
            d / "witness.out",
        )  # fmt: skip
        servers.append(witness)
        wvkey = witness_key(load_signing_key(wkey)).encode()
        policy = d / "tlog.policy"
        policy.write_text(
            f"log {(d / 'log.world.test.pub').read_text().strip()}\n"
            f"witness w1 {wvkey} {witness.url}\nquorum w1\n"
        )
        log = start_log(
            d / "logdir", log_key, d / "log.out", "--workers", "0", "--witnesses", str(policy)
        )
        servers.append(log)
        proof = d / "release.proof"
        r = run_cli("log", "add", "--log", log.url, "--out", str(proof), str(statement))
        assert r.returncode == 0, r.stderr
        attestation = d / "attestation.json"
        attestation.write_bytes(signed_attestation(rebuilder, artifact))
        r = run_cli("log", "add", "--log", log.url, "--wait", str(attestation))
        assert r.returncode == 0, r.stderr
        yield World(
            d, maint, rebuilder, log_key, wkey, artifact, statement, attestation, proof,
            policy, log.url, redis.url, updates, update_policy, mirror_server.url,
        )  # fmt: skip
    finally:
        for s in reversed(servers):
            s.stop()
        mirror_server.stop()
        redis.stop()


# -- the scenarios, one entry per command ----------------------------------------------------


def _key_generate(w: World) -> list[Run]:
    out = w.fresh("k")
    return [Run(("key", "generate", "k.world.test", "--out", str(out)), 0),
            Run(("key", "generate", "k.world.test", "--out", str(out)), 2)]  # fmt: skip


def _release_sign(w: World) -> list[Run]:
    copy = w.fresh("hello.phar")
    shutil.copy(w.artifact, copy)
    wrong = copy.with_name("hello-1.0.0.phar")
    shutil.copy(w.artifact, wrong)
    sign = ("release", "sign", "--recipe", str(RECIPE), "--key", str(w.maint))
    return [Run((*sign, str(copy)), 0), Run((*sign, str(wrong)), 2)]


def _release_verify(w: World) -> list[Run]:
    tampered = w.fresh("hello.phar")
    tampered.write_bytes(w.artifact.read_bytes() + b"system($_GET['c']);\n")
    args = ("--statement", str(w.statement), "--maintainer-key", f"{w.maint}.pub")
    return [
        Run(("release", "verify", str(w.artifact), *args), 0),
        Run(("release", "verify", str(tampered), *args), 1),
        Run(("release", "verify", str(w.d / "missing.phar"), *args), 2),
    ]


def _diff(w: World) -> list[Run]:
    other = w.fresh("other.phar")
    other.write_bytes(b"<?php echo 'other';\n")
    return [
        Run(("diff", str(w.artifact), str(w.artifact)), 0),
        Run(("diff", str(w.artifact), str(other), "--no-diffoscope"), 1),
        Run(("diff", str(w.artifact), str(w.d / "missing")), 2),
    ]


def _fetch(w: World) -> list[Run]:
    there = w.fresh("hello.phar")
    shutil.copy(w.artifact, there)
    return [
        Run(("fetch", str(w.statement), "--out", str(there.parent)), 0),
        Run(("fetch", str(w.statement), "--out", str(w.fresh("empty").parent)), 2),
    ]


def _log_follow(w: World) -> list[Run]:
    trust = ("--log", w.log_url, "--policy", str(w.policy))
    return [
        Run(("log", "follow", *trust, "--state", str(w.fresh("mon")), "--once"), 0),
        Run(("log", "follow", *trust, "--state", str(w.fresh("mon")), "--interval", "0.1"), 0,
            daemon=True),
    ]  # fmt: skip


def _log_add(w: World) -> list[Run]:
    entry = w.fresh("entry.json")
    entry.write_bytes(signed_attestation(w.maint, w.artifact))  # another signer: another entry
    return [Run(("log", "add", "--log", w.log_url, "--wait", str(entry)), 0)]


def _bundle(w: World) -> list[Run]:
    out = w.fresh("b.json")
    return [
        Run(("bundle", "--artifact", str(w.artifact), "--log", w.log_url, "--out", str(out)), 0)
    ]


def _gate(w: World) -> list[Run]:
    d = w.fresh("gate").parent
    write_gate_inputs(d, b"<?php echo 'gate';\n")
    (d / "evil.phar").write_bytes(b"evil")
    args = ("--bundle", str(d / "b.json"), "--policy", str(d / "policy.toml"))
    return [
        Run(("gate", str(d / "hello.phar"), *args, "--state", str(d / "s1")), 0),
        Run(("gate", str(d / "evil.phar"), *args, "--state", str(d / "s2")), 1),
        # --log: a tile source for a missing consistency proof (unused here: none is missing)
        Run(("gate", str(d / "hello.phar"), *args, "--state", str(d / "s3"), "--log", w.log_url),
            0),
    ]  # fmt: skip


def _update(w: World) -> list[Run]:
    args = ("update", "--policy", str(w.update_policy), "--package", "hello-phar")
    install = w.fresh("install")
    return [
        Run((*args, "--install-dir", str(install), "--mirror", w.mirror_url,
             "--insecure-loopback"), 0),
        Run((*args, "--install-dir", str(w.fresh("install")), "--mirror", w.mirror_url,
             "--insecure-loopback", "--log", w.log_url), 0),
        Run((*args, "--install-dir", str(install), "--mirror", "http://127.0.0.1:1",
             "--insecure-loopback", "--version", "9.9.9"), 1),
    ]  # fmt: skip


def _spool(w: World, *requests: str) -> Path:
    from rebuild.updater.spool import write_request

    spool = w.fresh("spool")
    (spool / "requests").mkdir(parents=True)
    (spool / "status").mkdir()
    os.chmod(spool / "requests", 0o1733)
    for version in requests:
        write_request(spool, "hello-phar", version)
    return spool


def _daemon_args(w: World, spool: Path) -> tuple[str, ...]:
    return (
        "updater", "daemon", "--spool", str(spool), "--policy", str(w.update_policy),
        "--install-dir", str(w.fresh("install")), "--mirror", w.mirror_url, "--insecure-loopback",
    )  # fmt: skip


def _updater_status(w: World) -> list[Run]:
    spool = _spool(w, "1.0.0")
    r = run_cli(*_daemon_args(w, spool), "--once")
    assert r.returncode == 0, r.stderr
    return [
        Run(("updater", "status", "--spool", str(spool)), 0),
        Run(("updater", "status", "hello-phar", "--spool", str(spool)), 0),
    ]


def _mirror_publish(w: World) -> list[Run]:
    release = w.updates.made[0]
    args = ("--artifact", str(release.artifact), "--bundle", str(release.bundle))
    return [Run(("mirror", "publish", "--dir", str(w.fresh("mirror").parent), *args), 0)]


def _log_fsck(w: World) -> list[Run]:
    damaged = w.fresh("log")
    shutil.copytree(w.d / "logdir", damaged)
    # The newest (largest) entry bundle: older partial bundles are no longer read.
    bundle = max(
        (p for p in (damaged / "tile" / "entries").rglob("*") if p.is_file()),
        key=lambda p: p.stat().st_size,
    )
    bundle.write_bytes(bundle.read_bytes()[:-1] + b"X")  # an entry's last byte
    return [
        Run(("log", "fsck", "--dir", str(w.d / "logdir")), 0),
        Run(("log", "fsck", "--dir", str(damaged)), 1),
        Run(("log", "fsck", "--dir", str(w.d / "missing")), 2),
    ]


def _demo(w: World) -> list[Run]:
    """The whole demo runs (and is checked against the schema) in tests/test_demo.py; here
    its refusal of a directory that is not empty."""
    busy = w.fresh("demo")
    busy.mkdir()
    (busy / "precious.txt").write_text("mine\n")
    return [Run(("demo", "--keep", str(busy)), 2)]


def _env_import(w: World) -> list[Run]:
    exported = w.fresh("env.tar")
    r = run_cli("env", "export", "debian-bookworm", "-o", str(exported), timeout=600)
    assert r.returncode == 0, r.stderr
    store = w.fresh("store")
    return [
        Run(("env", "import", str(exported), "--store", str(store)), 0),
        Run(("env", "import", str(w.d / "missing.tar"), "--store", str(store)), 2),
    ]


SCENARIOS: dict[str, Callable[[World], list[Run]]] = {
    "key generate": _key_generate,
    "key show": lambda w: [Run(("key", "show", str(w.maint)), 0)],
    "release sign": _release_sign,
    "release verify": _release_verify,
    "witness serve": lambda w: [
        Run(
            (
                "witness",
                "serve",
                "--key",
                str(w.witness_key),
                "--state",
                str(w.fresh("ws")),
                "--listen",
                "127.0.0.1:0",
                "--log-key",
                f"{w.log_key}.pub",
            ),
            0,
            daemon=True,
        )
    ],
    "witness vkey": lambda w: [Run(("witness", "vkey", "--key", str(w.witness_key)), 0)],
    "diff": _diff,
    "env list": lambda w: [Run(("env", "list"), 0)],
    "env build": lambda w: [Run(("env", "build", "php-8.2"), 0)],
    "env check": lambda w: [Run(("env", "check", "php-8.2"), 0)],
    # Locking rebuilds an environment from the mirror (minutes): its refusal is what runs here.
    "env lock": lambda w: [Run(("env", "lock", "no-such-environment"), 2)],
    # The package store is filled by scripts/setup: fetching the base's packages is a check.
    "env fetch": lambda w: [Run(("env", "fetch", "debian-bookworm"), 0)],
    "env export": lambda w: [
        Run(("env", "export", "debian-bookworm", "-o", str(w.fresh("env.tar"))), 0),
        Run(("env", "export", "no-such-environment", "-o", str(w.fresh("env.tar"))), 2),
    ],
    "env import": _env_import,
    "log serve": lambda w: [
        Run(
            (
                "log",
                "serve",
                "--dir",
                str(w.fresh("log")),
                "--key",
                str(w.log_key),
                "--listen",
                "127.0.0.1:0",
                "--workers",
                "0",
            ),
            0,
            daemon=True,
        )
    ],
    "log add": _log_add,
    "log prove": lambda w: [Run(("log", "prove", "--log", w.log_url, str(w.statement)), 0)],
    "log verify-proof": lambda w: [
        Run(("log", "verify-proof", "--policy", str(w.policy), str(w.statement), str(w.proof)), 0),
        Run(
            ("log", "verify-proof", "--policy", str(w.policy), str(w.attestation), str(w.proof)), 1
        ),
    ],
    "log follow": _log_follow,
    "log get": lambda w: [
        Run(("log", "get", "--log", w.log_url, "0", "--policy", str(w.policy)), 0),
        Run(("log", "get", "--log", w.log_url, "99"), 2),
    ],
    "log find": lambda w: [
        Run(
            (
                "log",
                "find",
                "--log",
                w.log_url,
                "--package",
                "hello-phar",
                "--trusted-key",
                f"{w.rebuilder}.pub",
            ),
            0,
        ),
    ],
    "log status": lambda w: [Run(("log", "status", "--log", w.log_url), 0)],
    "log fsck": _log_fsck,
    "demo": _demo,
    "verify": lambda w: [
        Run(("verify", "--fixture", "php-phar", "--report-dir", str(w.fresh("report"))), 0),
        Run(("verify", "pypi:no-version"), 2),
    ],
    "fetch": _fetch,
    "completion": lambda w: [Run(("completion", "bash"), 0)],
    "fleet watch": lambda w: [
        Run(
            (
                "fleet",
                "watch",
                "--broker",
                w.broker,
                "--once",
                "--log",
                w.log_url,
                "--policy",
                str(w.policy),
                "--artifacts",
                str(w.d),
                "--state",
                str(w.fresh("watch")),
            ),
            0,
        ),
    ],
    "fleet worker": lambda w: [
        Run(
            ("fleet", "worker", "--broker", w.broker, "--reports", str(w.fresh("reports"))),
            0,
            daemon=True,
        ),
    ],
    "fleet publish": lambda w: [
        Run(
            (
                "fleet",
                "publish",
                "--broker",
                w.broker,
                "--key",
                str(w.rebuilder),
                "--log",
                w.log_url,
                "--state",
                str(w.fresh("publish")),
            ),
            0,
            daemon=True,
        ),
    ],
    "fleet status": lambda w: [Run(("fleet", "status", "--broker", w.broker), 0)],
    "bundle": _bundle,
    "gate": _gate,
    "mirror publish": _mirror_publish,
    "mirror serve": lambda w: [
        Run(
            ("mirror", "serve", "--dir", str(w.fresh("m").parent), "--listen", "127.0.0.1:0"),
            0,
            daemon=True,
        ),
    ],
    "update": _update,
    "updater request": lambda w: [
        Run(("updater", "request", "hello-phar", "latest", "--spool", str(_spool(w))), 0)
    ],
    "updater daemon": lambda w: [
        Run((*_daemon_args(w, _spool(w, "1.0.0")), "--once"), 0),
        Run(_daemon_args(w, _spool(w)), 0, daemon=True),
    ],
    "updater status": _updater_status,
}


def _leaves() -> list[str]:
    found = commands(build_parser())
    return sorted(
        " ".join(path)
        for path, p in found.items()
        if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)
    )


def test_every_command_has_a_scenario() -> None:
    missing = sorted(set(_leaves()) - set(SCENARIOS))
    assert not missing, f"add a real run of each to SCENARIOS in {__file__}: {missing}"
    assert not set(SCENARIOS) - set(_leaves()), "a scenario names a command that is gone"


def _run_daemon(args: tuple[str, ...]) -> tuple[int, str]:
    proc = subprocess.Popen(
        [PYTHON, "-m", "rebuild", *args, "--json"],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        first = proc.stdout.readline()  # its first event: it is up (or it died: "")
        assert first, proc.communicate(timeout=60)[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=180)
    assert "Traceback" not in err, err
    return proc.returncode, first + rest


@pytest.mark.docker
@pytest.mark.parametrize("command", _leaves())
def test_the_json_output_of_every_command_validates(world: World, command: str) -> None:
    runs = SCENARIOS[command](world)
    assert runs
    for run in runs:
        if run.daemon:
            code, stdout = _run_daemon(run.args)
            assert code == run.code, (run.args, stdout)
            docs = clijson.stream(stdout, run.code, command)
            assert "event" in docs[0]
            continue
        r = run_cli(*run.args, "--json", timeout=600)
        assert r.returncode == run.code, (run.args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr
        doc = clijson.envelope(r.stdout, run.code, command)
        assert json.loads(r.stdout) == doc
