"""The gate's attack suite, against real servers and real rebuilds.

One honest world is built once per session (tests/gateworld.py): real
``witness serve`` and ``log serve`` processes, a maintainer's ``release
sign``, real rebuilds of the php-phar fixture by ``rebuild verify --key
--log``. Each test below is one attack, named after it, made from that
world's real envelopes, proofs and checkpoints; each must be rejected by
the step the attack targets, with that step's specific failure code.
Gates run in-process (``rebuild.gate.open_gate``, the same code path as the
CLI) with a fresh state directory unless the attack needs an earlier
acceptance; the CLI's exit codes and JSON are checked where they matter.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from rebuild.gate import load_policy, open_gate
from tests.engine.conftest import docker_envs  # noqa: F401 (session fixture)
from tests.gateworld import RealWorld
from tests.logutil import PYTHON, cli_env, run_cli
from verify.bundle import Bundle, LoggedEnvelope
from verify.gate import AttestationReport, Decision
from verify.note import split_note
from verify.state import parse_state
from verify.tlogproof import TlogProof

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("docker_envs")]


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory, docker_envs: None) -> Iterator[RealWorld]:  # noqa: F811
    w = RealWorld(tmp_path_factory.mktemp("gateworld"))
    try:
        w.build()
        yield w
    finally:
        w.stop()


def gate(
    world: RealWorld,
    bundle: Bundle | bytes,
    state: Path,
    *,
    artifact: Path | bytes | None = None,
    policy: Path | None = None,
    now: int | None = None,
    strict: bool = False,
    allow_downgrade: bool = False,
) -> Decision:
    """One gate run, committing on acceptance exactly as ``rebuild gate`` does."""
    data = bundle if isinstance(bundle, bytes) else bundle.encode()
    art = world.artifact if artifact is None else artifact
    p = load_policy(policy or world.gate_policy)
    with open_gate(
        art, data, p, state, now=now, strict=strict, allow_downgrade=allow_downgrade
    ) as run:
        if run.decision.accepted:
            run.commit_installed()
        return run.decision


def codes(d: Decision) -> list[tuple[int, str]]:
    return [(f.step, f.code) for f in d.failures]


def rejected_by(d: Decision, step: int, code: str) -> str:
    """Assert the decision is a rejection with this failure; return its reason."""
    assert not d.accepted
    assert (step, code) in codes(d), codes(d)
    return next(f.reason for f in d.failures if (f.step, f.code) == (step, code))


def with_attestations(world: RealWorld, *tags: str) -> Bundle:
    return world.a.bundle(world.env("release"), [world.env(t) for t in tags])


def newest_cosignature(note: str) -> int:
    _, sigs = split_note(note)
    return max(int.from_bytes(s.signature[:8], "big") for s in sigs if len(s.signature) == 72)


# -- the honest path ---------------------------------------------------------------


def test_an_honest_bundle_from_real_servers_is_accepted_by_the_cli(
    world: RealWorld, tmp_path: Path
) -> None:
    out = tmp_path / "hello.phar.bundle.json"
    r = run_cli(
        "bundle",
        "--log",
        world.a.url,
        "--artifact",
        str(world.artifact),
        "--policy",
        str(world.gate_policy),
        "--out",
        str(out),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)
    assert made["package"] == "hello-phar" and made["version"] == "1.0.0"
    # --policy kept the trusted maintainer's release and the trusted rebuilders'
    # attestations (r1 twice, the other-recipe/commit ones, r3's mismatch).
    signers = sorted({s.split("+")[0] for a in made["attestations"] for s in a["signers"]})
    assert signers == ["r1.gate.test", "r2.gate.test", "r3.gate.test"]
    assert any("release not signed by a maintainer" in s for s in made["skipped"])
    state = tmp_path / "state"
    args = ["gate", str(world.artifact), "--bundle", str(out)]
    args += ["--policy", str(world.gate_policy), "--state", str(state), "--json"]
    r = run_cli(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["decision"] == "accepted" and doc["exit_code"] == 0
    assert [s["status"] for s in doc["steps"]] == ["passed"] * 7
    assert doc["rebuilders"]["distinct"] == 3
    assert doc["state"]["committed"] == "installed"
    # r3's mismatch is reported, not hidden.
    assert any("attests mismatch" in n for n in doc["steps"][2]["notes"])
    stored = parse_state((state / "state.json").read_bytes())
    assert stored.installed_release("hello-phar").version == "1.0.0"  # type: ignore[union-attr]
    # Human output names every step.
    r = run_cli(*args[:-1])
    assert r.returncode == 0, r.stderr
    assert "accepted: hello-phar 1.0.0" in r.stdout
    # --strict refuses the same bundle because a trusted rebuilder dissents.
    r = run_cli(*args, "--strict")
    assert r.returncode == 1
    assert json.loads(r.stdout)["failures"][0]["code"] == "dissent"


def test_a_bundle_from_files_is_accepted(world: RealWorld, tmp_path: Path) -> None:
    honest = world.honest_bundle()
    pairs: list[str] = []
    for i, logged in enumerate((honest.release, *honest.attestations)):
        env, proof = tmp_path / f"e{i}.json", tmp_path / f"e{i}.proof"
        env.write_bytes(logged.envelope)
        proof.write_text(logged.proof.encode())
        pairs += ["--release" if i == 0 else "--attestation", str(env), str(proof)]
    out = tmp_path / "b.json"
    r = run_cli(
        "bundle", "--from-files", "--artifact", str(world.artifact), *pairs, "--out", str(out)
    )
    assert r.returncode == 0, r.stderr
    d = gate(world, out.read_bytes(), tmp_path / "state")
    assert d.accepted, codes(d)


# -- step 1 -----------------------------------------------------------------------


def test_bundle_of_one_release_used_with_another_artifact(world: RealWorld, tmp_path: Path) -> None:
    d = gate(world, world.honest_bundle(), tmp_path / "s", artifact=world.artifact_110)
    reason = rejected_by(d, 1, "subject-mismatch")
    assert hashlib.sha256(world.artifact_110.read_bytes()).hexdigest() in reason


def test_truncated_artifact(world: RealWorld, tmp_path: Path) -> None:
    truncated = world.artifact.read_bytes()[:-100]
    d = gate(world, world.honest_bundle(), tmp_path / "s", artifact=truncated)
    rejected_by(d, 1, "subject-mismatch")
    assert not (tmp_path / "s" / "state.json").exists()


def test_oversized_bundle(world: RealWorld, tmp_path: Path) -> None:
    data = world.honest_bundle().encode()
    padded = tmp_path / "big.json"
    padded.write_bytes(data[:-2] + b" " * (5 << 20) + data[-2:])  # valid JSON, 5 MiB
    r = run_cli(
        "gate",
        str(world.artifact),
        "--bundle",
        str(padded),
        "--policy",
        str(world.gate_policy),
        "--state",
        str(tmp_path / "s"),
        "--json",
    )
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert doc["failures"] == [
        {"step": 1, "code": "bundle-too-large", "reason": doc["failures"][0]["reason"]}
    ]
    assert "over the 4194304-byte limit" in doc["failures"][0]["reason"]


def test_deeply_nested_bundle(world: RealWorld, tmp_path: Path) -> None:
    data = world.honest_bundle().encode()
    nested = data[:-2] + b', "x": ' + b"[" * 5000 + b"]" * 5000 + data[-2:]
    d = gate(world, nested, tmp_path / "s")
    reason = rejected_by(d, 1, "bundle-too-deep")
    assert "5001 levels" in reason
    assert [s.status for s in d.steps[1:]] == ["skipped"] * 6


# -- step 2 -----------------------------------------------------------------------


def test_forged_maintainer_signature(world: RealWorld, tmp_path: Path) -> None:
    honest = world.honest_bundle()
    doc = json.loads(honest.release.envelope)
    statement = json.loads(base64.b64decode(doc["payload"]))
    statement["predicate"]["version"] = "9.9.9"  # the signature no longer covers this
    doc["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    forged = LoggedEnvelope(json.dumps(doc).encode(), honest.release.proof)
    d = gate(world, replace(honest, release=forged), tmp_path / "s")
    reason = rejected_by(d, 2, "maintainer-signature-invalid")
    assert "maintainer.gate.test" in reason
    rejected_by(d, 4, "not-included")  # and it was never logged


def test_maintainer_key_of_another_package(world: RealWorld, tmp_path: Path) -> None:
    b = world.a.bundle(world.env("release-m2"), [world.env(r) for r in ("r1", "r2", "r3")])
    d = gate(world, b, tmp_path / "s")
    reason = rejected_by(d, 2, "maintainer-other-package")
    assert "m2.gate.test" in reason and "a maintainer of other-pkg" in reason
    assert codes(d) == [(2, "maintainer-other-package")]


# -- step 3 -----------------------------------------------------------------------


def test_attestation_by_an_untrusted_key(world: RealWorld, tmp_path: Path) -> None:
    """r4 rebuilt for real, but is trusted only for another package: it counts zero."""
    d = gate(world, with_attestations(world, "r1", "r4"), tmp_path / "s")
    reason = rejected_by(d, 3, "threshold-not-met")
    assert "1 of the required 2" in reason
    assert [a.code for a in d.attestations] == ["counted", "untrusted-key"]
    assert codes(d) == [(3, "threshold-not-met")]


def test_the_same_trusted_key_twice_to_reach_k(world: RealWorld, tmp_path: Path) -> None:
    d = gate(world, with_attestations(world, "r1", "r1-again"), tmp_path / "s")
    rejected_by(d, 3, "threshold-not-met")
    assert [a.code for a in d.attestations] == ["counted", "duplicate-key"]
    assert d.counted == ("r1.gate.test+" + d.counted[0].split("+")[1],)
    assert codes(d) == [(3, "threshold-not-met")]


def test_k_minus_one_valid_plus_one_invalid(world: RealWorld, tmp_path: Path) -> None:
    b = with_attestations(world, "r1", "r2")
    doc = json.loads(b.attestations[1].envelope)
    sig = bytearray(base64.b64decode(doc["signatures"][0]["sig"]))
    sig[0] ^= 1
    doc["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    bad = LoggedEnvelope(json.dumps(doc).encode(), b.attestations[1].proof)
    d = gate(world, replace(b, attestations=(b.attestations[0], bad)), tmp_path / "s")
    rejected_by(d, 3, "threshold-not-met")
    assert d.attestations[1].code == "invalid-signature"
    assert "r2.gate.test" in d.attestations[1].reason
    assert codes(d) == [(3, "threshold-not-met")]


def _second_counts_zero(world: RealWorld, tmp_path: Path, tag: str, code: str) -> AttestationReport:
    """r1's honest attestation plus ``tag``'s: rejected by step 3, ``tag`` ignored as ``code``."""
    d = gate(world, with_attestations(world, "r1", tag), tmp_path / "s")
    rejected_by(d, 3, "threshold-not-met")
    assert codes(d) == [(3, "threshold-not-met")]
    assert d.attestations[1].code == code, d.attestations[1]
    return d.attestations[1]


def test_attestation_for_another_digest(world: RealWorld, tmp_path: Path) -> None:
    """r2's real attestation of release 1.1.0's bytes."""
    _second_counts_zero(world, tmp_path, "r2-110", "other-digest")


def test_attestation_for_another_commit(world: RealWorld, tmp_path: Path) -> None:
    """r3 really reproduced these bytes, from another commit of the same tree."""
    report = _second_counts_zero(world, tmp_path, "r3-other-commit", "other-commit")
    assert report.verdict == "reproduced"


def test_attestation_for_another_recipe(world: RealWorld, tmp_path: Path) -> None:
    """r2 really reproduced these bytes, with a recipe one comment longer."""
    report = _second_counts_zero(world, tmp_path, "r2-other-recipe", "other-recipe")
    assert report.verdict == "reproduced"


def test_a_trusted_mismatch(world: RealWorld, tmp_path: Path) -> None:
    b = with_attestations(world, "r1", "r2", "r3-mismatch")
    lenient = gate(world, b, tmp_path / "lenient")
    assert lenient.accepted, codes(lenient)
    assert any("r3.gate.test" in n and "mismatch" in n for n in lenient.step(3).notes)
    d = gate(world, b, tmp_path / "strict", strict=True)
    reason = rejected_by(d, 3, "dissent")
    assert "r3.gate.test" in reason and "mismatch" in reason
    assert codes(d) == [(3, "dissent")]


# -- step 4 -----------------------------------------------------------------------


def test_envelope_not_in_the_log(world: RealWorld, tmp_path: Path) -> None:
    """r2's real attestation that was never logged, carried with the proof of its logged one."""
    b = with_attestations(world, "r1", "r2")
    unlogged = LoggedEnvelope(world.r2_unlogged, b.attestations[1].proof)
    d = gate(world, replace(b, attestations=(b.attestations[0], unlogged)), tmp_path / "s")
    reason = rejected_by(d, 4, "not-included")
    assert "r2.gate.test" in reason
    assert codes(d) == [(4, "not-included")]


def test_proof_against_another_tree(world: RealWorld, tmp_path: Path) -> None:
    """r1's proof as the log answered it when r1 published (an older checkpoint)."""
    b = with_attestations(world, "r1", "r2")
    old_proof = world.a.entries["r1"].proof_at_add
    assert old_proof is not None
    stale = LoggedEnvelope(world.env("r1"), _parse_proof(old_proof))
    d = gate(world, replace(b, attestations=(stale, b.attestations[1])), tmp_path / "s")
    reason = rejected_by(d, 4, "proof-other-checkpoint")
    assert "size 2" in reason
    assert codes(d) == [(4, "proof-other-checkpoint")]


def _parse_proof(text: str) -> TlogProof:
    from verify.tlogproof import parse

    return parse(text)


# -- step 5 -----------------------------------------------------------------------


def test_checkpoint_signed_by_another_log_key(world: RealWorld, tmp_path: Path) -> None:
    d = gate(world, world.impostor, tmp_path / "s")
    reason = rejected_by(d, 5, "log-signature")
    assert "not signed by the log's key" in reason
    assert all(step == 5 for step, _ in codes(d))  # inclusion in the impostor's tree is fine


def test_too_few_witness_cosignatures(world: RealWorld, tmp_path: Path) -> None:
    b = world.honest_bundle()
    text, sigs = split_note(b.checkpoint)
    w3 = [s for s in sigs if s.name == "w3.gate.test"]
    assert len(w3) == 1
    note = text + "\n" + "".join(s.line() for s in sigs if s not in w3)
    d = gate(world, replace(b, checkpoint=note), tmp_path / "s")
    reason = rejected_by(d, 5, "witness-quorum")
    assert "cosigned by W1, W2" in reason
    assert codes(d) == [(5, "witness-quorum")]


def test_only_unknown_witnesses(world: RealWorld, tmp_path: Path) -> None:
    b = world.honest_bundle()
    note = world.cosign_with_unknown_witness(b.checkpoint)
    d = gate(world, replace(b, checkpoint=note), tmp_path / "s")
    reason = rejected_by(d, 5, "witness-quorum")
    assert "no trusted witness" in reason and "1 signature(s) by keys not in the policy" in reason
    rejected_by(d, 5, "checkpoint-undated")


def test_stale_checkpoint(world: RealWorld, tmp_path: Path) -> None:
    """A frozen view: the newest cosignature is older than max_checkpoint_age (3600 s)."""
    b = world.honest_bundle()
    now = newest_cosignature(b.checkpoint) + 3600
    d = gate(world, b, tmp_path / "s", now=now)
    reason = rejected_by(d, 5, "checkpoint-stale")
    assert "3600 s old" in reason
    assert codes(d) == [(5, "checkpoint-stale")]
    assert gate(world, b, tmp_path / "s2", now=now - 1).accepted


def test_future_dated_cosignature(world: RealWorld, tmp_path: Path) -> None:
    """Cosignatures 10 minutes after the updater's clock (beyond the 5-minute skew)."""
    b = world.honest_bundle()
    now = newest_cosignature(b.checkpoint) - 600
    d = gate(world, b, tmp_path / "s", now=now)
    reason = rejected_by(d, 5, "cosignature-future")
    assert "600 s after now" in reason or "s after now" in reason


# -- step 6 -----------------------------------------------------------------------


def test_smaller_checkpoint_than_the_stored_one(world: RealWorld, tmp_path: Path) -> None:
    state = tmp_path / "s"
    current = world.honest_bundle()
    assert gate(world, current, state).accepted
    d = gate(world, world.early, state)  # an older, genuine bundle replayed
    reason = rejected_by(d, 6, "rollback")
    assert f"smaller than size {current.checkpoint_body().size}" in reason
    assert codes(d) == [(6, "rollback")]
    assert not list(state.glob("fork-evidence-*"))


def test_forked_log_two_roots_for_one_size(world: RealWorld, tmp_path: Path) -> None:
    """Log B: log A's key, another history; same-keyed witnesses cosigned it too."""
    state = tmp_path / "s"
    assert gate(world, world.early, state).accepted
    before = (state / "state.json").read_bytes()
    assert world.fork_same_size.checkpoint_body().size == world.early.checkpoint_body().size
    d = gate(world, world.fork_same_size, state)
    reason = rejected_by(d, 6, "fork")
    assert "two different roots signed for size 4" in reason
    assert codes(d) == [(6, "fork")]  # every other step passes: only step 6 sees it
    evidence = list(state.glob("fork-evidence-*"))
    assert len(evidence) == 1
    text = evidence[0].read_text()
    assert world.early.checkpoint in text and world.fork_same_size.checkpoint in text
    assert (state / "state.json").read_bytes() == before


def test_forked_log_inconsistent_larger_tree(world: RealWorld, tmp_path: Path) -> None:
    state = tmp_path / "s"
    assert gate(world, world.early, state).accepted
    d = gate(world, world.fork_larger, state)
    reason = rejected_by(d, 6, "fork")
    assert "not consistent with size 4" in reason
    assert codes(d) == [(6, "fork")]
    assert len(list(state.glob("fork-evidence-*"))) == 1


def test_larger_tree_without_a_consistency_proof_names_the_size(
    world: RealWorld, tmp_path: Path
) -> None:
    state = tmp_path / "s"
    assert gate(world, world.early, state).accepted
    d = gate(world, world.honest_bundle(), state)
    rejected_by(d, 6, "consistency-proof-missing")
    assert d.needs_since_size == 4
    # rebuild bundle --since-size 4 makes the bundle the gate asked for.
    out = tmp_path / "b.json"
    r = run_cli(
        "bundle",
        "--log",
        world.a.url,
        "--artifact",
        str(world.artifact),
        "--policy",
        str(world.gate_policy),
        "--since-size",
        "4",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    d = gate(world, out.read_bytes(), state)
    assert d.accepted, codes(d)


# -- step 7 -----------------------------------------------------------------------


def test_downgrade_to_an_older_signed_release(world: RealWorld, tmp_path: Path) -> None:
    state = tmp_path / "s"
    b110 = world.a.bundle(world.env("release-110"), [world.env("r1-110"), world.env("r2-110")])
    (tmp_path / "b110.json").write_bytes(b110.encode())
    (tmp_path / "b100.json").write_bytes(world.honest_bundle().encode())
    base = ["--policy", str(world.gate_policy), "--state", str(state), "--json"]
    r = run_cli("gate", str(world.artifact_110), "--bundle", str(tmp_path / "b110.json"), *base)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_cli("gate", str(world.artifact), "--bundle", str(tmp_path / "b100.json"), *base)
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert [(f["step"], f["code"]) for f in doc["failures"]] == [(7, "downgrade")]
    assert "1.0.0 is older than the installed 1.1.0" in doc["failures"][0]["reason"]
    assert doc["state"]["committed"] == "nothing"
    # The override is explicit and recorded.
    r = run_cli(
        "gate",
        str(world.artifact),
        "--bundle",
        str(tmp_path / "b100.json"),
        *base,
        "--allow-downgrade",
    )
    assert r.returncode == 0, r.stderr
    stored = parse_state((state / "state.json").read_bytes()).installed_release("hello-phar")
    assert stored is not None and stored.version == "1.0.0" and stored.downgrade_from == "1.1.0"


def test_the_gate_needs_no_network(world: RealWorld, tmp_path: Path) -> None:
    """rebuild gate in a network namespace of its own (no interface up, not even
    loopback) accepts the honest bundle: everything it decides is in the bundle."""
    (tmp_path / "b.json").write_bytes(world.honest_bundle().encode())
    r = subprocess.run(
        [
            "unshare",
            "--net",
            PYTHON,
            "-m",
            "rebuild",
            "gate",
            str(world.artifact),
            "--bundle",
            str(tmp_path / "b.json"),
            "--policy",
            str(world.gate_policy),
            "--state",
            str(tmp_path / "s"),
            "--json",
        ],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["decision"] == "accepted"
