"""An updater that skipped releases catches up through the log's tiles, and cannot be fooled.

Real processes throughout: ``key generate``, two ``witness serve``, ``log
serve`` over HTTPS publishing only cosigned checkpoints, ``release sign``,
``log add``, ``rebuild bundle`` (1.1.0 from 1.0.0's size, 1.2.0 from
1.1.0's), ``mirror publish`` (with and without ``--log``), ``mirror
serve`` over HTTPS, and ``rebuild update`` / ``rebuild gate`` / ``rebuild
updater daemon``. The updater installed 1.0.0 (tree size 3) and skips 1.1.0:
1.2.0's bundle proves consistency from size 6 only, so the proof from 3
must come from a tile source.

The fork is log B: log A's key, another history, cosigned by witness
processes holding the same witness keys with their own state (a split view
made with compromised keys). Rebuild attestations are signed with the
rebuilders' real keys for the bytes the maintainer signed (see
:func:`tests.updaterutil.attest`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rebuild.keystore import load_signing_key
from rebuild.updater.spool import write_request
from tests.logutil import Server, envelope, make_key, run_cli, start_log
from tests.updaterutil import (
    TLS,
    cli_json,
    dead_url,
    installed,
    logged_release,
    report,
    tree,
    update_cli,
)
from verify.bundle import parse_bundle
from verify.cosignature import witness_key
from verify.tiles import tiles_between


@dataclass
class CatchUpWorld:
    root: Path
    servers: list[Server] = field(default_factory=list)
    keys: dict[str, Path] = field(default_factory=dict)
    releases: dict[str, tuple[Path, Path]] = field(default_factory=dict)
    mirrors: dict[str, str] = field(default_factory=dict)

    def serve(self, args: list[str], name: str) -> Server:
        s = Server(args, self.root / f"{name}.out")
        self.servers.append(s)
        return s

    def serve_mirror(self, name: str, directory: Path) -> str:
        cert, key = self.cert
        s = self.serve(
            [
                *("mirror", "serve", "--dir", str(directory), "--listen", "127.0.0.1:0"),
                *("--tls-cert", str(cert), "--tls-key", str(key)),
            ],
            f"mirror-{name}",
        )
        self.mirrors[name] = s.url
        return s.url

    def witnessed_log(self, name: str) -> Server:
        """``log serve`` on log A's key, cosigned by two witness processes of its own."""
        wurls = []
        for w in ("w1", "w2"):
            s = self.serve(
                [
                    *("witness", "serve", "--key", str(self.keys[w])),
                    *("--state", str(self.root / f"{w}-{name}-state"), "--listen", "127.0.0.1:0"),
                    *("--log-key", f"{self.keys['log']}.pub"),
                ],
                f"{w}-{name}",
            )
            wurls.append(s.url)
        tlog = self.root / f"tlog-{name}.policy"
        tlog.write_text(
            f"log {self.log_vkey}\nwitness W1 {self.wvk[0]} {wurls[0]}\n"
            f"witness W2 {self.wvk[1]} {wurls[1]}\ngroup both 2 W1 W2\nquorum both\n"
        )
        cert, key = self.cert
        log = start_log(
            self.root / f"log-{name}",
            self.keys["log"],
            self.root / f"log-{name}.out",
            *("--witnesses", str(tlog), "--tls-cert", str(cert), "--tls-key", str(key)),
        )
        self.servers.append(log)
        return log

    def build(self) -> None:
        root = self.root
        for n in ("log", "w1", "w2", "maintainer", "r1", "r2"):
            self.keys[n] = make_key(root, f"{n}.catchup.test")
        self.tls = TLS(root / "tls")
        self.ca = self.tls.ca_bundle
        self.cert = self.tls.cert_files()
        self.log_vkey = Path(f"{self.keys['log']}.pub").read_text().strip()
        self.wvk = [witness_key(load_signing_key(self.keys[w])).encode() for w in ("w1", "w2")]
        # The updater's policy names the keys only (the witnesses' URLs are the log's business).
        (root / "tlog.policy").write_text(
            f"log {self.log_vkey}\nwitness W1 {self.wvk[0]}\nwitness W2 {self.wvk[1]}\n"
            "group both 2 W1 W2\nquorum both\n"
        )

        def vkeys(*names: str) -> str:
            return ", ".join(f'"{Path(f"{self.keys[n]}.pub").read_text().strip()}"' for n in names)

        self.policy_text = (
            'tlog_policy = "tlog.policy"\nmax_checkpoint_age = 3600\n'
            "[[package]]\n"
            'name = "hello-phar"\n'
            f"maintainers = [{vkeys('maintainer')}]\n"
            f"rebuilders = [{vkeys('r1', 'r2')}]\n"
            "threshold = 2\n"
        )
        self.policy = self.write_policy("policy.toml")

        self.a = self.witnessed_log("a")
        since = None
        for version in ("1.0.0", "1.1.0", "1.2.0"):
            art, bundle = logged_release(
                root / "a", version, self.keys, self.a.url, since, ca_bundle=self.ca
            )
            self.releases[version] = (art, bundle)
            since = parse_bundle(bundle.read_bytes()).checkpoint_body().size
        self.sizes = {
            v: parse_bundle(b.read_bytes()).checkpoint_body().size
            for v, (_, b) in self.releases.items()
        }

        # Mirrors: "plain" has 1.0.0 and 1.2.0 (it never got 1.1.0, so an updater at
        # 1.0.0 cannot go release by release); "tiled" has all three and the log's tiles.
        for name, versions, log_args in (
            ("plain", ("1.0.0", "1.2.0"), []),
            ("tiled", ("1.0.0", "1.1.0", "1.2.0"), ["--log", self.a.url]),
        ):
            d = root / f"mirror-{name}"
            d.mkdir()
            for v in versions:
                self.publish(d, *self.releases[v], *log_args)
            self.serve_mirror(name, d)
        # A copy of the tiled mirror's log/ with one bit flipped in every hash tile.
        tampered = root / "tampered"
        shutil.copytree(root / "mirror-tiled" / "log", tampered / "log")
        for p in (tampered / "log").rglob("*"):
            if p.is_file():
                data = bytearray(p.read_bytes())
                data[5] ^= 0x10
                p.write_bytes(bytes(data))
        self.tampered = self.serve_mirror("tampered", tampered) + "/log"

        # Log B: the split view. Its own history, then 1.2.0's envelopes again.
        self.b = self.witnessed_log("b")
        other = root / "b-other.json"
        other.write_bytes(envelope("log B's own history"))
        cli_json("log", "add", "--log", self.b.url, "--log-ca-bundle", str(self.ca), str(other))
        v120 = root / "a" / "v1.2.0"
        for e in ("release.json", "r1.json", "r2.json"):
            cli_json(
                "log", "add", "--log", self.b.url, "--log-ca-bundle", str(self.ca), str(v120 / e)
            )
        art120 = self.releases["1.2.0"][0]
        self.fork_bundle = root / "fork-bundle.json"
        cli_json(
            *("bundle", "--log", self.b.url, "--log-ca-bundle", str(self.ca)),
            *("--artifact", str(art120), "--out", str(self.fork_bundle)),
        )
        d = root / "mirror-fork"
        d.mkdir()
        self.publish(d, *self.releases["1.0.0"])
        self.publish(d, art120, self.fork_bundle)
        self.serve_mirror("fork", d)

    def write_policy(self, name: str, top: str = "") -> Path:
        path = self.root / name
        path.write_text('format = "rebuild-policy/v1"\n' + top + self.policy_text)
        return path

    def publish(self, mirror: Path, artifact: Path, bundle: Path, *extra: str) -> dict[str, Any]:
        args = ["mirror", "publish", "--dir", str(mirror), "--artifact", str(artifact)]
        return cli_json(*args, "--bundle", str(bundle), *extra, "--log-ca-bundle", str(self.ca))

    def update(
        self, install: Path, *mirrors: str, extra: tuple[str, ...] = (), policy: Path | None = None
    ) -> Any:
        urls = [self.mirrors[m] for m in mirrors]
        return update_cli(
            policy or self.policy, install, urls, "--mirror-ca-bundle", str(self.ca), *extra
        )

    def at_100(self, install: Path) -> None:
        """An updater that installed 1.0.0 (it accepted tree size 3)."""
        r = self.update(install, "plain", extra=("--version", "1.0.0"))
        assert r.returncode == 0, r.stdout + r.stderr
        assert installed(install) == ("1.0.0", self.releases["1.0.0"][0].read_bytes())

    def stop(self) -> None:
        for s in reversed(self.servers):
            s.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CatchUpWorld]:
    w = CatchUpWorld(tmp_path_factory.mktemp("catchup"))
    try:
        w.build()
        yield w
    finally:
        w.stop()


def _only_attempt(doc: dict[str, Any]) -> dict[str, Any]:
    [attempt] = doc["attempts"]
    assert isinstance(attempt, dict)
    return attempt


def _codes(attempt: dict[str, Any]) -> list[tuple[int, str]]:
    return [(f["step"], f["code"]) for f in attempt["gate"]["failures"]]


def _state(install: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((install / "state" / "state.json").read_text())
    return doc


def test_the_world_is_the_skipped_release_case(world: CatchUpWorld) -> None:
    assert world.sizes == {"1.0.0": 3, "1.1.0": 6, "1.2.0": 9}
    b120 = parse_bundle(world.releases["1.2.0"][1].read_bytes())
    assert b120.consistency_from(6) is not None and b120.consistency_from(3) is None


@pytest.mark.parametrize("how", ["--log", "policy logs"])
def test_an_updater_that_skipped_a_release_installs_the_next_through_the_logs_tiles(
    world: CatchUpWorld, tmp_path: Path, how: str
) -> None:
    install = tmp_path / "install"
    world.at_100(install)
    if how == "--log":
        r = world.update(install, "plain", extra=("--log", world.a.url))
    else:
        policy = world.write_policy("policy-logs.toml", f'logs = ["{world.a.url}"]\n')
        r = world.update(install, "plain", policy=policy)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = report(r)
    attempt = _only_attempt(doc)
    assert (attempt["version"], attempt["outcome"]) == ("1.2.0", "installed")
    c = attempt["consistency"]
    assert c["proof"] is True and c["source"] == world.a.url
    assert (c["needed"]["old_size"], c["needed"]["new_size"]) == (3, 9)
    assert [s["status"] for s in c["sources"]] == ["ok"]
    step6 = attempt["gate"]["steps"][5]
    assert step6["status"] == "passed" and "from the log's tiles" in " ".join(step6["notes"])
    assert installed(install) == ("1.2.0", world.releases["1.2.0"][0].read_bytes())
    assert "\n9\n" in _state(install)["checkpoints"][world.log_vkey.split("+")[0]]


def test_mirrors_alone_serve_the_tiles_an_updater_needs(
    world: CatchUpWorld, tmp_path: Path
) -> None:
    install = tmp_path / "install"
    world.at_100(install)
    r = world.update(install, "tiled")  # no --log, no logs in the policy
    assert r.returncode == 0, r.stdout + r.stderr
    c = _only_attempt(report(r))["consistency"]
    assert c["source"] == world.mirrors["tiled"] + "/log"
    assert installed(install) == ("1.2.0", world.releases["1.2.0"][0].read_bytes())


def test_mirror_publish_copies_each_tile_once_and_refuses_another_logs_tiles(
    world: CatchUpWorld, tmp_path: Path
) -> None:
    log_dir = world.root / "mirror-tiled" / "log"
    want = {t.path() for v in world.sizes.values() for t in tiles_between(0, v)}
    got = {str(p.relative_to(log_dir)) for p in log_dir.rglob("*") if p.is_file()}
    assert got == want  # tile/0/000.p/3, .p/6, .p/9: exactly the trees the bundles sign
    again = world.publish(
        world.root / "mirror-tiled", *world.releases["1.2.0"], "--log", world.a.url
    )
    assert again["added"] is False
    assert again["log_tiles"] == {"size": 9, "copied": 0, "present": 1, "bytes": 0}
    # log A's tiles for log B's (fork) bundle: A has a tree of size 4, with another root
    d = tmp_path / "m"
    d.mkdir()
    r = run_cli(
        *("mirror", "publish", "--dir", str(d), "--log", world.a.url),
        *("--artifact", str(world.releases["1.2.0"][0]), "--bundle", str(world.fork_bundle)),
        *("--log-ca-bundle", str(world.ca), "--json"),
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert "do not reproduce the bundle's checkpoint (size 4)" in r.stderr
    assert not (d / "hello-phar").exists()
    # log B lacks the tiles of log A's tree of size 9 altogether
    r = run_cli(
        *("mirror", "publish", "--dir", str(d), "--log", world.b.url),
        *("--artifact", str(world.releases["1.2.0"][0])),
        *("--bundle", str(world.releases["1.2.0"][1])),
        *("--log-ca-bundle", str(world.ca)),
    )
    assert r.returncode == 2
    assert f"is {world.b.url} the log that signed it?" in r.stderr
    assert not (d / "hello-phar").exists()


def test_tampered_tiles_cannot_make_the_gate_accept_and_the_next_source_is_used(
    world: CatchUpWorld, tmp_path: Path
) -> None:
    install = tmp_path / "install"
    world.at_100(install)
    before = tree(install)
    r = world.update(install, "plain", extra=("--log", world.tampered))
    assert r.returncode == 1, r.stdout + r.stderr
    attempt = _only_attempt(report(r))
    assert attempt["outcome"] == "rejected"
    assert _codes(attempt) == [(6, "consistency-proof-missing")]
    sources = attempt["consistency"]["sources"]
    assert [(s["url"], s["status"]) for s in sources] == [
        (world.tampered, "invalid"),
        (world.mirrors["plain"] + "/log", "http"),
    ]
    assert tree(install) == before  # nothing installed, nothing recorded
    assert not list((install / "state").glob("fork-evidence-*"))  # bad tiles are no fork

    r = world.update(install, "plain", extra=("--log", world.tampered, "--log", world.a.url))
    assert r.returncode == 0, r.stdout + r.stderr
    c = _only_attempt(report(r))["consistency"]
    assert [s["status"] for s in c["sources"]] == ["invalid", "ok"]
    assert installed(install) == ("1.2.0", world.releases["1.2.0"][0].read_bytes())


def test_a_dead_tile_source_fails_over(world: CatchUpWorld, tmp_path: Path) -> None:
    install = tmp_path / "install"
    world.at_100(install)
    dead = dead_url()
    r = world.update(install, "plain", extra=("--log", dead, "--log", world.a.url))
    assert r.returncode == 0, r.stdout + r.stderr
    c = _only_attempt(report(r))["consistency"]
    assert [(s["url"], s["status"]) for s in c["sources"]] == [
        (dead, "connection"),
        (world.a.url, "ok"),
    ]


def test_a_forked_logs_tiles_cannot_make_the_gate_accept_and_the_fork_is_kept(
    world: CatchUpWorld, tmp_path: Path
) -> None:
    install = tmp_path / "install"
    world.at_100(install)
    state_before = (install / "state" / "state.json").read_bytes()
    r = world.update(install, "fork", extra=("--log", world.b.url))
    assert r.returncode == 1, r.stdout + r.stderr
    attempt = _only_attempt(report(r))
    assert attempt["consistency"]["source"] == world.b.url  # B's tiles prove B's tree ...
    assert _codes(attempt) == [(6, "fork")]  # ... which does not extend what A showed
    [evidence] = (install / "state").glob("fork-evidence-*")
    text = evidence.read_text()
    assert parse_bundle(world.fork_bundle.read_bytes()).checkpoint in text
    assert (install / "state" / "state.json").read_bytes() == state_before
    assert installed(install) == ("1.0.0", world.releases["1.0.0"][0].read_bytes())
    # log A's tiles cannot prove B's checkpoint either: no proof, no acceptance
    r = world.update(install, "fork", extra=("--log", world.a.url))
    assert r.returncode == 1
    attempt = _only_attempt(report(r))
    assert _codes(attempt) == [(6, "consistency-proof-missing")]
    assert attempt["consistency"]["sources"][0]["status"] in ("invalid", "http")


def test_with_no_tile_source_the_error_names_the_option_to_add(
    world: CatchUpWorld, tmp_path: Path
) -> None:
    install = tmp_path / "install"
    world.at_100(install)
    r = world.update(install, "plain")
    assert r.returncode == 1
    attempt = _only_attempt(report(r))
    assert _codes(attempt) == [(6, "consistency-proof-missing")]
    assert attempt["consistency"]["sources"] == [
        {
            "url": world.mirrors["plain"] + "/log",
            "status": "http",
            "error": f"{world.mirrors['plain']}/log/tile/0/000.p/9: HTTP 404 "
            "(and its full tile: HTTP 404)",
            "tiles": 0,
            "seconds": attempt["consistency"]["sources"][0]["seconds"],
        }
    ]
    assert "--log URL" in attempt["error"] and "logs = [...] in the policy" in attempt["error"]
    r = run_cli(
        "update",
        *("--policy", str(world.policy), "--package", "hello-phar"),
        *("--install-dir", str(install), "--mirror", world.mirrors["plain"]),
        *("--mirror-ca-bundle", str(world.ca)),
    )
    assert r.returncode == 1 and "--log URL" in r.stdout + r.stderr


def test_rebuild_gate_catches_up_with_log_and_stays_offline_without(
    world: CatchUpWorld, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    art, bundle = world.releases["1.0.0"]
    base = ["gate", "--policy", str(world.policy), "--state", str(state), "--json"]
    r = run_cli(*base, str(art), "--bundle", str(bundle))
    assert r.returncode == 0, r.stdout + r.stderr
    art, bundle = world.releases["1.2.0"]
    r = run_cli(*base, str(art), "--bundle", str(bundle))
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["consistency"] is None
    assert (doc["needs_consistency"]["old_size"], doc["needs_consistency"]["new_size"]) == (3, 9)
    assert "--log URL" in doc["failures"][0]["reason"]
    r = run_cli(
        *base, str(art), "--bundle", str(bundle), "--log", world.a.url,
        "--log-ca-bundle", str(world.ca),
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["accepted"] and doc["consistency"]["source"] == world.a.url
    assert doc["state"]["committed"] == "installed"


def test_the_updater_daemon_catches_up_too(world: CatchUpWorld, tmp_path: Path) -> None:
    install = tmp_path / "install"
    world.at_100(install)
    spool = tmp_path / "spool"
    (spool / "requests").mkdir(parents=True)
    (spool / "status").mkdir()
    os.chmod(spool / "requests", 0o1733)
    write_request(spool, "hello-phar", "latest")
    r = run_cli(
        "updater", "daemon", "--once", "--spool", str(spool), "--policy", str(world.policy),
        "--install-dir", str(install), "--mirror", world.mirrors["plain"],
        "--mirror-ca-bundle", str(world.ca), "--log", world.a.url, "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    [handled] = report(r)["handled"]
    assert handled["outcome"] == "installed", handled
    assert handled["report"]["attempts"][0]["consistency"]["source"] == world.a.url
    assert installed(install) == ("1.2.0", world.releases["1.2.0"][0].read_bytes())
