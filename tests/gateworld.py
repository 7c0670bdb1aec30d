"""A real release world for the gate's attack suite, built once per session.

Everything comes from the real commands: ``rebuild key generate``, ``witness
serve`` (three witnesses), ``log serve`` (witnessed by them), ``release
sign``, ``log add`` and real fixture rebuilds with ``rebuild verify
STATEMENT ARTIFACT --key K --log URL`` in the pinned php-8.2 environment.
Each attack in tests/test_gate_attacks.py is then a bundle derived from
these envelopes and the log's own tiles (:meth:`RealWorld.bundle`), so the
gate sees exactly what an attacker could put together from public data.

Besides the honest release (hello-phar 1.0.0, attested by r1, r2, r3):

* r4 is a rebuilder trusted only for another package; r1 attested twice;
* r2 rebuilt with a recipe that differs only in a comment, r3 from another
  commit of the same tree (both reproduce the bytes: real runs);
* r2 made an attestation it never logged;
* r3's trusted ``mismatch`` is signed with its real key but its predicate is
  written here: an honest reproducible build cannot yield a mismatch for the
  same commit and recipe, so this is the one envelope not from a real run;
* m2, a maintainer of another package, signed a release of these bytes;
* hello-phar 1.1.0, built from changed sources and attested by r1 and r2;
* log B runs on log A's key with a different history, cosigned by witness
  processes holding the same witness keys (a split view with compromised
  keys); log D is an impostor with another key under log A's name;
  witness U is a real witness the policy does not know.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rebuild.bundle import read_entries
from rebuild.engine.build_env import lock_digest
from rebuild.engine.fixtures import _git, materialize
from rebuild.keystore import load_signing_key
from rebuild.log.client import LogClient
from tests.logutil import ROOT, Server, envelope, run_cli, start_log
from verify.bundle import Bundle, ConsistencyProof, LoggedEnvelope
from verify.checkpoint import parse as parse_checkpoint
from verify.cosignature import witness_key
from verify.intoto import (
    EnvironmentRef,
    RebuildPredicate,
    ReleasePredicate,
    Statement,
    Subject,
    make_statement,
    sign_statement,
)
from verify.note import split_note
from verify.tiles import TileHashes
from verify.tlogproof import TlogProof

PACKAGE = "hello-phar"
OTHER_PACKAGE = "other-pkg"


def _cli_json(*args: str, timeout: float = 300) -> dict[str, Any]:
    r = run_cli(*args, "--json", timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"rebuild {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc


def vkey(pub: Path) -> str:
    return pub.read_text().strip()


@dataclass
class Logged:
    """An envelope in a log: its bytes and index."""

    envelope: bytes
    index: int
    proof_at_add: str | None = None
    """The tlog-proof the log answered when the entry was added (an older tree)."""


@dataclass
class LogHandle:
    name: str
    server: Server
    url: str
    entries: dict[str, Logged] = field(default_factory=dict)

    def add(self, tag: str, data: bytes, directory: Path) -> Logged:
        path = directory / f"{self.name}-{tag}.json"
        path.write_bytes(data)
        doc = _cli_json("log", "add", "--log", self.url, "--wait", str(path))
        logged = Logged(data, int(doc["index"]), doc.get("proof"))
        self.entries[tag] = logged
        return logged

    def checkpoint(self) -> str:
        with LogClient(self.url) as client:
            return client.checkpoint().decode()

    def bundle(
        self,
        release: bytes,
        attestations: list[bytes],
        *,
        since_size: int | None = None,
    ) -> Bundle:
        """A bundle of entries of this log, proved from its tiles against its checkpoint."""
        note = self.checkpoint()
        cp = parse_checkpoint(split_note(note)[0])
        with LogClient(self.url) as client:
            entries = read_entries(client, range(cp.size), cp.size)
            tiles = TileHashes(cp.size, client.tile)

            def logged(data: bytes) -> LoggedEnvelope:
                index = next(i for i, e in entries.items() if e == data)
                proof = tuple(tiles.inclusion_proof(index))
                return LoggedEnvelope(data, TlogProof(index, proof, note))

            consistency: tuple[ConsistencyProof, ...] = ()
            if since_size is not None:
                consistency = (
                    ConsistencyProof(since_size, tuple(tiles.consistency_proof(since_size))),
                )
            return Bundle(
                note, logged(release), tuple(logged(a) for a in attestations), consistency
            )


class RealWorld:
    """Keys, servers, releases and attestations; see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.servers: list[Server] = []
        self.keys: dict[str, Path] = {}
        root.mkdir(parents=True, exist_ok=True)

    # -- set-up -----------------------------------------------------------------

    def key(self, name: str, file: str | None = None) -> Path:
        path = self.root / "keys" / (file or name)
        path.parent.mkdir(exist_ok=True)
        r = run_cli("key", "generate", name, "--out", str(path))
        if r.returncode != 0:
            raise RuntimeError(r.stderr)
        self.keys[file or name] = path
        return path

    def witness(self, key: Path, state: str, log_pubs: list[Path]) -> Server:
        args = ["witness", "serve", "--key", str(key), "--state", str(self.root / state)]
        args += ["--listen", "127.0.0.1:0"]
        for pub in log_pubs:
            args += ["--log-key", vkey(pub)]
        server = Server(args, self.root / f"{state}.out")
        self.servers.append(server)
        return server

    def log(self, name: str, key: Path, policy: Path | None) -> LogHandle:
        extra = ["--workers", "0"] + (["--witnesses", str(policy)] if policy else [])
        server = start_log(self.root / name, key, self.root / f"{name}.out", *extra)
        self.servers.append(server)
        return LogHandle(name, server, server.url)

    def tlog_policy(self, path: Path, witnesses: list[tuple[str, Path, str]]) -> Path:
        lines = [f"log {vkey(Path(str(self.keys['log']) + '.pub'))}"]
        for name, wkey, url in witnesses:
            lines.append(f"witness {name} {witness_key(load_signing_key(wkey)).encode()} {url}")
        names = " ".join(n for n, _, _ in witnesses)
        lines += [f"group all-witnesses {len(witnesses)} {names}", "quorum all-witnesses"]
        path.write_text("\n".join(lines) + "\n")
        return path

    def policy(
        self,
        path: Path,
        *,
        threshold: int = 2,
        max_age: int = 3600,
        rebuilders: tuple[str, ...] = ("r1", "r2", "r3"),
        extra: str = "",
    ) -> Path:
        def keys(names: tuple[str, ...]) -> str:
            return "[" + ", ".join(f'"{vkey(self.pub(n))}"' for n in names) + "]"

        path.write_text(
            'format = "rebuild-policy/v1"\n'
            f'tlog_policy = "{self.tlog_policy_a.name}"\n'
            f"max_checkpoint_age = {max_age}\n"
            f'[[package]]\nname = "{PACKAGE}"\nmaintainers = {keys(("maintainer",))}\n'
            f"rebuilders = {keys(rebuilders)}\nthreshold = {threshold}\n{extra}"
            f'[[package]]\nname = "{OTHER_PACKAGE}"\nmaintainers = {keys(("m2",))}\n'
            f"rebuilders = {keys(('r4',))}\nthreshold = 1\n"
        )
        return path

    def pub(self, name: str) -> Path:
        return Path(str(self.keys[name]) + ".pub")

    def rebuild(
        self, rebuilder: str, tag: str, target: list[str], log: LogHandle | None
    ) -> Logged | bytes:
        """``rebuild verify TARGET --key K [--log URL]``; the logged attestation (or bytes)."""
        report = self.root / "reports" / tag
        args = ["verify", *target, "--key", str(self.keys[rebuilder])]
        args += ["--report-dir", str(report)]
        if log is not None:
            args += ["--log", log.url]
        doc = _cli_json(*args, timeout=600)
        if doc["verdict"] != "reproduced":
            raise RuntimeError(f"{tag}: verdict {doc['verdict']}: {doc.get('message')}")
        data = Path(doc["attestation"]).read_bytes()
        if log is None:
            return data
        entry = doc["log_entry"]
        logged = Logged(data, int(entry["index"]), entry.get("proof"))
        log.entries[tag] = logged
        return logged

    def build(self) -> None:
        t0 = time.monotonic()
        for name in ("log", "maintainer", "m2", "r1", "r2", "r3", "r4", "w1", "w2", "w3", "u1"):
            self.key(f"{name}.gate.test", name)
        # An impostor log: another key under log A's name (its origin).
        self.key("log.gate.test", "impostor")
        log_pub = self.pub("log")

        ws = [self.witness(self.keys[f"w{i}"], f"w{i}-state", [log_pub]) for i in (1, 2, 3)]
        self.tlog_policy_a = self.tlog_policy(
            self.root / "tlog.policy",
            [(f"W{i}", self.keys[f"w{i}"], ws[i - 1].url) for i in (1, 2, 3)],
        )
        self.a = self.log("log-a", self.keys["log"], self.tlog_policy_a)
        self.gate_policy = self.policy(self.root / "policy.toml")

        # The maintainer signs the fixture's release and logs it.
        fixture = materialize("php-phar", self.root / "fixture", lock_for=lock_digest)
        self.recipe = fixture.recipe
        self.repo = fixture.repository
        self.artifact = self.root / "v100" / "hello.phar"
        self.artifact.parent.mkdir()
        shutil.copyfile(fixture.artifact, self.artifact)
        self.release_file = self.root / "release.json"
        self.sign("maintainer", self.artifact, self.recipe, self.release_file)
        self.release = self.a.add("release", self.release_file.read_bytes(), self.root)

        # Three trusted rebuilders reproduce it, and publish.
        target = [str(self.release_file), str(self.artifact)]
        target += ["--maintainer-key", str(self.pub("maintainer"))]
        for r in ("r1", "r2", "r3"):
            self.rebuild(r, r, target, self.a)
        # An early bundle, before the log grows (the rollback attack replays it).
        self.early = self.honest_bundle()

        # The other real attestations.
        self.rebuild("r4", "r4", target, self.a)
        self.rebuild("r1", "r1-again", target, self.a)
        recipe2 = self.root / "recipe-comment.toml"
        recipe2.write_text(self.recipe.read_text() + "# the same recipe, one comment more\n")
        self.rebuild("r2", "r2-other-recipe", [str(recipe2), str(self.artifact)], self.a)
        self.rebuild(
            "r3", "r3-other-commit", [str(self.other_commit_recipe()), str(self.artifact)], self.a
        )
        unlogged = self.rebuild("r2", "r2-unlogged", target, None)
        assert isinstance(unlogged, bytes)
        self.r2_unlogged = unlogged
        self.a.add("r3-mismatch", self.mismatch("r3"), self.root)
        m2_release = self.root / "release-m2.json"
        self.sign("m2", self.artifact, self.recipe, m2_release)
        self.a.add("release-m2", m2_release.read_bytes(), self.root)

        # hello-phar 1.1.0 from changed sources: built once by the maintainer,
        # then signed, logged and reproduced by r1 and r2.
        self.artifact_110, recipe_110 = self.build_110()
        self.release_110_file = self.root / "release-110.json"
        self.sign("maintainer", self.artifact_110, recipe_110, self.release_110_file)
        self.a.add("release-110", self.release_110_file.read_bytes(), self.root)
        target_110 = [str(self.release_110_file), str(self.artifact_110)]
        target_110 += ["--maintainer-key", str(self.pub("maintainer"))]
        for r in ("r1", "r2"):
            self.rebuild(r, f"{r}-110", target_110, self.a)

        self.start_fork_and_impostor(log_pub)
        self.elapsed = time.monotonic() - t0

    def sign(self, who: str, artifact: Path, recipe: Path, out: Path) -> None:
        _cli_json(
            "release",
            "sign",
            str(artifact),
            "--recipe",
            str(recipe),
            "--key",
            str(self.keys[who]),
            "--out",
            str(out),
        )

    def other_commit_recipe(self) -> Path:
        """A recipe for another commit of the same tree (an empty commit, same date)."""
        date = "2024-06-01T12:00:00Z"
        _git(["commit", "--quiet", "--allow-empty", "-m", "again"], self.repo, date)
        _git(["tag", "v1.0.0-again"], self.repo, date)
        commit = _git(["rev-parse", "HEAD"], self.repo, date)
        text = self.recipe.read_text()
        old_commit = next(
            line.split('"')[1] for line in text.splitlines() if line.startswith("commit")
        )
        path = self.root / "recipe-other-commit.toml"
        path.write_text(
            text.replace(old_commit, commit).replace('tag = "v1.0.0"', 'tag = "v1.0.0-again"')
        )
        return path

    def mismatch(self, rebuilder: str) -> bytes:
        """A trusted rebuilder's mismatch for the honest bytes, source and recipe."""
        honest = Statement.parse(json_payload(self.a.entries[rebuilder].envelope))
        pred = honest.predicate
        assert isinstance(pred, RebuildPredicate)
        subject = honest.subjects[0]
        claim = RebuildPredicate(
            package=pred.package,
            version=pred.version,
            verdict="mismatch",
            source=pred.source,
            recipe_sha256=pred.recipe_sha256,
            environment=EnvironmentRef(pred.environment.name, pred.environment.lock_sha256),
            tool_version=pred.tool_version,
            started_at=pred.started_at,
            finished_at=pred.finished_at,
            rebuilt_sha256=hashlib.sha256(b"different bytes").hexdigest(),
            diff_report_sha256=hashlib.sha256(b"report").hexdigest(),
            causes=("content:build-info.txt",),
        )
        key = load_signing_key(self.keys[rebuilder])
        return sign_statement(make_statement([Subject(subject.name, subject.sha256)], claim), [key])

    def build_110(self) -> tuple[Path, Path]:
        base = self.root / "fixtures-110"
        shutil.copytree(ROOT / "fixtures" / "php-phar", base / "php-phar")
        fx = base / "php-phar"
        greeter = fx / "src" / "src" / "Greeter.php"
        greeter.write_text(greeter.read_text() + "// 1.1.0: a changed source file\n")
        (fx / "fixture.toml").write_text(
            (fx / "fixture.toml").read_text().replace('"v1.0.0"', '"v1.1.0"')
        )
        tmpl = fx / "recipe.toml.in"
        tmpl.write_text(
            tmpl.read_text()
            .replace('version = "1.0.0"', 'version = "1.1.0"')
            .replace('tag = "v1.0.0"', 'tag = "v1.1.0"')
        )
        made = materialize("php-phar", self.root / "fixture-110", lock_for=lock_digest, base=base)
        # The maintainer's build: verify against a placeholder leaves the
        # real build in the report's rebuilt/ directory.
        placeholder = self.root / "placeholder" / "hello.phar"
        placeholder.parent.mkdir()
        placeholder.write_bytes(b"placeholder")
        report = self.root / "reports" / "maintainer-110"
        r = run_cli(
            "verify",
            str(made.recipe),
            str(placeholder),
            "--report-dir",
            str(report),
            "--json",
            timeout=600,
        )
        built = report / "rebuilt" / "hello.phar"
        if not built.is_file():
            raise RuntimeError(f"maintainer build of 1.1.0 failed: {r.stderr}")
        artifact = self.root / "v110" / "hello.phar"
        artifact.parent.mkdir()
        shutil.copyfile(built, artifact)
        return artifact, made.recipe

    def start_fork_and_impostor(self, log_pub: Path) -> None:
        # Log B: log A's key, another history, cosigned by witnesses with the
        # same keys and their own state (a split view).
        wb = [self.witness(self.keys[f"w{i}"], f"w{i}-b-state", [log_pub]) for i in (1, 2, 3)]
        policy_b = self.tlog_policy(
            self.root / "tlog-b.policy",
            [(f"W{i}", self.keys[f"w{i}"], wb[i - 1].url) for i in (1, 2, 3)],
        )
        self.b = self.log("log-b", self.keys["log"], policy_b)
        self.b.add("other-history", envelope("log B's own history"), self.root)
        for tag in ("release", "r1", "r2"):
            self.b.add(tag, self.env(tag), self.root)
        # Same size as the early bundle of log A (4), another root.
        self.fork_same_size = self.b.bundle(self.env("release"), [self.env("r1"), self.env("r2")])
        self.b.add("r3", self.env("r3"), self.root)
        # Larger, with log B's own consistency proof from size 4.
        self.fork_larger = self.b.bundle(
            self.env("release"), [self.env(r) for r in ("r1", "r2", "r3")], since_size=4
        )
        # Log D: an impostor signing with another key under log A's name.
        self.d = self.log("log-d", self.keys["impostor"], None)
        for tag in ("release", "r1", "r2", "r3"):
            self.d.add(tag, self.env(tag), self.root)
        self.impostor = self.d.bundle(
            self.env("release"), [self.env(r) for r in ("r1", "r2", "r3")]
        )
        # Witness U: real, and not in the policy.
        self.u = self.witness(self.keys["u1"], "u1-state", [log_pub])

    # -- derived material -------------------------------------------------------

    def env(self, tag: str) -> bytes:
        return self.a.entries[tag].envelope

    def honest_bundle(self) -> Bundle:
        return self.a.bundle(self.env("release"), [self.env(r) for r in ("r1", "r2", "r3")])

    def cosign_with_unknown_witness(self, note: str) -> str:
        """The note's log signature plus witness U's real cosignature, and nothing else."""
        text, sigs = split_note(note)
        log_sig = next(s for s in sigs if s.name == "log.gate.test" and len(s.signature) == 64)
        signed = text + "\n" + log_sig.line()
        size = parse_checkpoint(text).size
        old = 0
        for _ in range(2):
            req = urllib.request.Request(
                self.u.url + "/add-checkpoint",
                data=f"old {old}\n\n{signed}".encode(),
                method="POST",
            )
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    line: str = resp.read().decode()
                return signed + line
            except urllib.error.HTTPError as e:
                # U cosigned this tree before (an earlier test): say so and retry.
                if e.code != 409 or int(e.read().decode().strip()) != size:
                    raise
                old = size
        raise RuntimeError("witness U did not cosign")

    def stop(self) -> None:
        for s in reversed(self.servers):
            s.stop()


def json_payload(envelope_bytes: bytes) -> bytes:
    return base64.b64decode(json.loads(envelope_bytes)["payload"])


def release_version(envelope_bytes: bytes) -> str:
    pred = Statement.parse(json_payload(envelope_bytes)).predicate
    assert isinstance(pred, ReleasePredicate)
    return pred.version
