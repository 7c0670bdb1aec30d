"""An in-memory release world for the gate's pure tests and its benchmark.

Keys, a maintainer's release, rebuilders' attestations, an RFC 6962 log of
envelopes with signed, witness-cosigned checkpoints, tlog-proofs and
consistency proofs, a policy: all made with the project's own ``verify``
functions, in memory (after python-tuf's repository simulator). The attack
suite against real ``log serve`` / ``witness serve`` / ``verify`` processes
is tests/test_gate_attacks.py; this is for table-driven cases that need
many variations quickly.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from verify.bundle import Bundle, ConsistencyProof, LoggedEnvelope
from verify.checkpoint import Checkpoint, sign_checkpoint
from verify.cosignature import cosign, witness_key
from verify.intoto import (
    EnvironmentRef,
    GitSource,
    RebuildPredicate,
    ReleasePredicate,
    Subject,
    make_statement,
    sign_statement,
)
from verify.keys import SigningKey
from verify.merkle import (
    consistency_proof_in_memory,
    inclusion_proof_in_memory,
    leaf_hash,
    root,
)
from verify.policy import UpdatePolicy, parse_policy
from verify.tlogproof import TlogProof

NOW = 1_780_000_000
COMMIT = "3f786850e387550fdab836ed7e6dc881de23001b"
RECIPE = 'format = "rebuild-recipe/v1"\n# simulated\n'
RECIPE_SHA256 = hashlib.sha256(RECIPE.encode()).hexdigest()
LOCK = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def _key(name: str) -> SigningKey:
    # Deterministic keys keep failures reproducible.
    return SigningKey(name, hashlib.sha256(b"gatesim " + name.encode()).digest())


@dataclass
class World:
    """One package, its maintainer, rebuilders, a log and its witnesses."""

    rebuilders: int = 3
    threshold: int = 2
    witnesses: int = 3
    package: str = "hello-phar"
    log_key: SigningKey = field(default_factory=lambda: _key("log.example/sim"))
    maintainer: SigningKey = field(default_factory=lambda: _key("maintainer.example"))
    entries: list[bytes] = field(default_factory=list)
    recipe: str = RECIPE

    def __post_init__(self) -> None:
        self.rebuilder_keys = [_key(f"r{i}.example") for i in range(1, self.rebuilders + 1)]
        self.witness_keys = [_key(f"w{i}.example") for i in range(1, self.witnesses + 1)]

    # -- statements -----------------------------------------------------------

    def release(
        self,
        artifact: bytes,
        *,
        version: str = "1.0.0",
        signer: SigningKey | None = None,
        package: str | None = None,
    ) -> bytes:
        pred = ReleasePredicate(
            package=package or self.package,
            version=version,
            source=GitSource("https://git.example.org/hello.git", f"v{version}", COMMIT),
            recipe=self.recipe,
            recipe_sha256=hashlib.sha256(self.recipe.encode()).hexdigest(),
        )
        subject = Subject("hello.phar", hashlib.sha256(artifact).hexdigest())
        return sign_statement(make_statement([subject], pred), [signer or self.maintainer])

    def attest(
        self,
        artifact: bytes,
        signer: SigningKey | Sequence[SigningKey],
        *,
        verdict: str = "reproduced",
        commit: str = COMMIT,
        recipe_sha256: str | None = None,
        started: int = NOW - 600,
    ) -> bytes:
        digest = hashlib.sha256(artifact).hexdigest()
        rebuilt = None
        diff = None
        if verdict == "reproduced":
            rebuilt = digest
        elif verdict == "mismatch":
            rebuilt = hashlib.sha256(b"other" + artifact).hexdigest()
            diff = hashlib.sha256(b"diff").hexdigest()
        pred = RebuildPredicate(
            package=self.package,
            version="1.0.0",
            verdict=verdict,  # type: ignore[arg-type]
            source=GitSource("https://git.example.org/hello.git", "v1.0.0", commit),
            recipe_sha256=recipe_sha256 or hashlib.sha256(self.recipe.encode()).hexdigest(),
            environment=EnvironmentRef("php-8.2", LOCK),
            tool_version="rebuild/0.1.0",
            started_at=started,
            finished_at=started + 5,
            rebuilt_sha256=rebuilt,
            diff_report_sha256=diff,
        )
        signers = [signer] if isinstance(signer, SigningKey) else list(signer)
        return sign_statement(make_statement([Subject("hello.phar", digest)], pred), signers)

    # -- the log --------------------------------------------------------------

    def add(self, *envelopes: bytes) -> list[int]:
        first = len(self.entries)
        self.entries.extend(envelopes)
        return list(range(first, len(self.entries)))

    def checkpoint(
        self,
        *,
        size: int | None = None,
        cosign_time: int = NOW - 60,
        witnesses: Sequence[SigningKey] | None = None,
        log_key: SigningKey | None = None,
    ) -> str:
        n = len(self.entries) if size is None else size
        key = log_key or self.log_key
        cp = Checkpoint(key.name, n, root([leaf_hash(e) for e in self.entries[:n]]))
        note = sign_checkpoint(cp, key)
        for w in self.witness_keys if witnesses is None else witnesses:
            note += cosign(cp.body(), w, cosign_time)
        return note

    def logged(self, envelope: bytes, note: str, *, index: int | None = None) -> LoggedEnvelope:
        i = self.entries.index(envelope) if index is None else index
        size = int(note.split("\n")[1])
        hashes = [leaf_hash(e) for e in self.entries[:size]]
        proof = inclusion_proof_in_memory(i, hashes) if i < size else []
        return LoggedEnvelope(envelope, TlogProof(i, tuple(proof), note))

    def consistency(self, old_size: int, new_size: int) -> ConsistencyProof:
        hashes = [leaf_hash(e) for e in self.entries[:new_size]]
        return ConsistencyProof(old_size, tuple(consistency_proof_in_memory(old_size, hashes)))

    def bundle(
        self,
        release: bytes,
        attestations: Sequence[bytes],
        note: str | None = None,
        *,
        consistency: Sequence[ConsistencyProof] = (),
    ) -> bytes:
        note = note or self.checkpoint()
        return Bundle(
            note,
            self.logged(release, note),
            tuple(self.logged(a, note) for a in attestations),
            tuple(consistency),
        ).encode()

    # -- policy ---------------------------------------------------------------

    def tlog_policy(self, quorum: int | None = None) -> str:
        lines = [f"log {self.log_key.verifier_key().encode()}"]
        names = []
        for i, w in enumerate(self.witness_keys, start=1):
            lines.append(f"witness W{i} {witness_key(w).encode()}")
            names.append(f"W{i}")
        k = len(names) if quorum is None else quorum
        lines.append(f"group witnesses {k} {' '.join(names)}")
        lines.append("quorum witnesses")
        return "\n".join(lines) + "\n"

    def policy_toml(
        self,
        *,
        threshold: int | None = None,
        max_age: int = 86400,
        verdicts: Sequence[str] | None = None,
        extra_packages: str = "",
        package_extra: str = "",
    ) -> str:
        def keys(ks: Sequence[SigningKey]) -> str:
            return "[" + ", ".join(f'"{k.verifier_key().encode()}"' for k in ks) + "]"

        text = (
            'format = "rebuild-policy/v1"\n'
            'tlog_policy = "tlog.policy"\n'
            f"max_checkpoint_age = {max_age}\n"
            "[[package]]\n"
            f'name = "{self.package}"\n'
            f"maintainers = {keys([self.maintainer])}\n"
            f"rebuilders = {keys(self.rebuilder_keys)}\n"
            f"threshold = {self.threshold if threshold is None else threshold}\n"
        )
        if verdicts is not None:
            text += "verdicts = [" + ", ".join(f'"{v}"' for v in verdicts) + "]\n"
        return text + package_extra + extra_packages

    def policy(self, *, quorum: int | None = None, **kw: object) -> UpdatePolicy:
        tlog = self.tlog_policy(quorum).encode()
        return parse_policy(self.policy_toml(**kw).encode(), lambda _: tlog)  # type: ignore[arg-type]


def honest(world: World, artifact: bytes = b"<?php echo 'hello';\n") -> tuple[bytes, bytes]:
    """An artifact and a bundle the world's policy accepts: release + k+1 attestations."""
    release = world.release(artifact)
    atts = [world.attest(artifact, k) for k in world.rebuilder_keys]
    world.add(release, *atts)
    return artifact, world.bundle(release, atts)


def write_gate_inputs(directory: Path, artifact: bytes, name: str = "hello.phar") -> None:
    """An accepted release for ``rebuild gate`` in ``directory``: the artifact ``name``,
    its bundle ``b.json`` (cosigned now: the CLI reads the real clock), ``tlog.policy``
    and ``policy.toml``."""
    w = World()
    release = w.release(artifact)
    atts = [w.attest(artifact, k) for k in w.rebuilder_keys]
    w.add(release, *atts)
    note = w.checkpoint(cosign_time=int(time.time()))
    (directory / name).write_bytes(artifact)
    (directory / "b.json").write_bytes(w.bundle(release, atts, note))
    (directory / "tlog.policy").write_text(w.tlog_policy())
    (directory / "policy.toml").write_text(w.policy_toml())
