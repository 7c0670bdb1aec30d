"""`rebuild release sign/verify` end to end: real keys, real files, real exit codes."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nacl.pwhash
import pytest

from rebuild.cli import main
from rebuild.keystore import generate_key_files
from rebuild.recipe import load_recipe
from tests.logutil import RECIPE
from verify.dsse import MAX_ENVELOPE_SIZE, sign_envelope
from verify.intoto import (
    RELEASE_PREDICATE_TYPE,
    EnvironmentRef,
    RebuildPredicate,
    Subject,
    make_statement,
    sign_statement,
)
from verify.keys import ALG_COSIGNATURE_V1, SigningKey

REPO = Path(__file__).resolve().parent.parent
FAST_KDF = {
    "opslimit": nacl.pwhash.argon2id.OPSLIMIT_MIN,
    "memlimit": nacl.pwhash.argon2id.MEMLIMIT_MIN,
}


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = int(e.code or 0)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def one_line(err: str, *needles: str | Path) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rebuild: "), err
    for n in needles:
        assert str(n) in lines[0], (n, err)


def no_temp_files(d: Path) -> None:
    leftovers = [p.name for p in d.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


class Release:
    """A maintainer's working directory: key pair, artifact, signed statement."""

    def __init__(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.root = root
        self.capsys = capsys
        self.key = root / "maint.key"
        self.signing_key, self.pub = generate_key_files("maintainer.example", self.key, None)
        self.artifact = root / "hello.phar"
        self.artifact.write_bytes(b"<?php echo 'hello';\n")
        self.statement = root / "hello.phar.release.json"

    def sign(self, *extra: str | Path) -> tuple[int, str, str]:
        return run(
            self.capsys, "release", "sign", self.artifact, "--recipe", RECIPE,
            "--key", self.key, *extra,
        )  # fmt: skip

    def verify(self, statement: Path | None = None, *extra: str | Path) -> tuple[int, str, str]:
        return run(
            self.capsys, "release", "verify", self.artifact,
            "--statement", statement or self.statement, "--maintainer-key", self.pub, *extra,
        )  # fmt: skip

    def envelope(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.statement.read_bytes())
        return doc


@pytest.fixture
def rel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Release:
    return Release(tmp_path, capsys)


# -- the happy path -------------------------------------------------------------------


def test_signed_release_verifies(rel: Release) -> None:
    code, out, _ = rel.sign("--json")
    assert code == 0
    signed = json.loads(out)
    assert signed["statement_file"] == str(rel.statement)
    assert signed["package"] == "hello-phar" and signed["version"] == "1.0.0"
    code, out, _ = rel.verify(None, "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["verdict"] == "valid"
    assert doc["sha256"] == signed["sha256"]
    assert doc["signers"] == [signed["signer"]]
    assert doc["source"]["commit"] == "3f786850e387550fdab836ed7e6dc881de23001b"


def test_release_statement_carries_the_recipe_and_its_digest(rel: Release) -> None:
    rel.sign()
    env = rel.envelope()
    assert env["payloadType"] == "application/vnd.in-toto+json"
    statement = json.loads(base64.b64decode(env["payload"]))
    assert statement["predicateType"] == RELEASE_PREDICATE_TYPE
    assert statement["subject"][0]["name"] == "hello.phar"
    assert statement["predicate"]["recipe"]["content"].encode() == RECIPE.read_bytes()


def test_human_output_names_the_verdict(rel: Release) -> None:
    rel.sign()
    code, out, _ = rel.verify()
    assert code == 0 and "valid" in out and "maintainer.example+" in out


def test_encrypted_maintainer_key_signs_with_a_passphrase_from_the_environment(
    rel: Release, monkeypatch: pytest.MonkeyPatch
) -> None:
    enc = rel.root / "enc.key"
    generate_key_files("maintainer.example", enc, b"s3cret", **FAST_KDF)
    monkeypatch.setenv("MAINT_PASS", "s3cret")
    rel.key, rel.pub = enc, rel.root / "enc.key.pub"
    assert rel.sign("--passphrase-env", "MAINT_PASS")[0] == 0
    assert rel.verify()[0] == 0


def test_wrong_passphrase_writes_no_statement(
    rel: Release, monkeypatch: pytest.MonkeyPatch
) -> None:
    enc = rel.root / "enc.key"
    generate_key_files("maintainer.example", enc, b"s3cret", **FAST_KDF)
    monkeypatch.setenv("MAINT_PASS", "guess")
    rel.key = enc
    code, _, err = rel.sign("--passphrase-env", "MAINT_PASS")
    assert code == 2
    one_line(err, enc, "wrong passphrase")
    assert not rel.statement.exists()
    no_temp_files(rel.root)


# -- exit 1: the artifact or the signature does not match ---------------------------------


def test_trojaned_artifact_is_rejected_with_exit_1(rel: Release) -> None:
    rel.sign()
    rel.artifact.write_bytes(b"<?php system($_GET['c']);\n")
    code, out, err = rel.verify(None, "--json")
    assert code == 1
    assert json.loads(out)["reason"]["kind"] == "DigestMismatchError"
    one_line(err, rel.artifact, "is not covered by", rel.statement)


def test_statement_signed_by_an_untrusted_key_is_rejected_with_exit_1(rel: Release) -> None:
    rel.sign()
    impostor = SigningKey("maintainer.example", b"\x42" * 32)  # same name, other key
    statement = base64.b64decode(rel.envelope()["payload"])
    rel.statement.write_bytes(sign_envelope(statement, [impostor]))
    code, _, err = rel.verify()
    assert code == 1
    one_line(err, rel.statement, "no trusted key signed")


def test_edited_statement_is_rejected_with_exit_1(rel: Release) -> None:
    """Swap in a different artifact digest after signing: the signature no longer holds."""
    rel.sign()
    env = rel.envelope()
    statement = json.loads(base64.b64decode(env["payload"]))
    statement["subject"][0]["digest"]["sha256"] = "0" * 64
    env["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    rel.statement.write_text(json.dumps(env))
    code, _, err = rel.verify()
    assert code == 1
    one_line(err, rel.statement, "invalid signature by trusted key")


def test_duplicated_signature_entry_is_malformed_with_exit_2(rel: Release) -> None:
    rel.sign()
    env = rel.envelope()
    env["signatures"].append(env["signatures"][0])
    rel.statement.write_text(json.dumps(env))
    code, _, err = rel.verify()
    assert code == 2
    one_line(err, rel.statement, "duplicates an earlier signature")


# -- exit 2: unusable input ---------------------------------------------------------------


def _rebuild_attestation(key: SigningKey, sha: str) -> bytes:
    pred = RebuildPredicate(
        package="hello-phar",
        version="1.0.0",
        verdict="failed",
        source=load_recipe(RECIPE).source,
        recipe_sha256="1" * 64,
        environment=EnvironmentRef("php-8.2", "2" * 64),
        tool_version="rebuild/0.1.0",
        started_at=0,
        finished_at=1,
    )
    return sign_statement(make_statement([Subject("hello.phar", sha)], pred), [key])


BROKEN: list[tuple[str, Any, str]] = [
    ("truncated", lambda raw, env: raw[: len(raw) // 2], "not valid JSON"),
    ("garbled", lambda raw, env: raw.replace(b'"payload"', b'"pay\x00load"'), "not valid JSON"),
    ("non-UTF-8", lambda raw, env: b"\xff" + raw, "not UTF-8"),
    ("empty", lambda raw, env: b"", "not valid JSON"),
    ("oversized", lambda raw, env: raw + b" " * MAX_ENVELOPE_SIZE, "65536-byte limit"),
    ("missing payload", lambda raw, env: _drop(env, "payload"), "missing field 'payload'"),
    ("missing signatures", lambda raw, env: _drop(env, "signatures"), "'signatures'"),
    ("no signatures", lambda raw, env: _set(env, "signatures", []), "non-empty list"),
    ("wrong payload type", lambda raw, env: _set(env, "payloadType", "text/plain"), "payload type"),
    ("extra field", lambda raw, env: _set(env, "comment", "hi"), "unknown field 'comment'"),
    ("payload not base64", lambda raw, env: _set(env, "payload", "%%%"), "invalid base64"),
]


def _drop(env: dict[str, Any], key: str) -> bytes:
    env.pop(key)
    return json.dumps(env).encode()


def _set(env: dict[str, Any], key: str, value: Any) -> bytes:
    env[key] = value
    return json.dumps(env).encode()


@pytest.mark.parametrize(("mutate", "message"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_statement_file_is_exit_2_naming_it(rel: Release, mutate: Any, message: str) -> None:
    rel.sign()
    raw = rel.statement.read_bytes()
    rel.statement.write_bytes(mutate(raw, json.loads(raw)))
    code, out, err = rel.verify(None, "--json")
    assert code == 2
    assert json.loads(out)["exit_code"] == 2
    one_line(err, rel.statement, message)


def test_a_rebuild_attestation_is_not_a_release_statement(rel: Release) -> None:
    rel.sign()
    subject = json.loads(base64.b64decode(rel.envelope()["payload"]))["subject"][0]
    rel.statement.write_bytes(_rebuild_attestation(rel.signing_key, subject["digest"]["sha256"]))
    code, _, err = rel.verify()
    assert code == 2
    one_line(err, rel.statement, "expected " + RELEASE_PREDICATE_TYPE)


def test_missing_files_are_exit_2(rel: Release) -> None:
    code, _, err = rel.verify(rel.root / "nope.json")
    assert code == 2
    one_line(err, rel.root / "nope.json", "no such file")
    rel.sign()
    rel.artifact.unlink()
    code, _, err = rel.verify()
    assert code == 2
    one_line(err, rel.artifact, "no such file")


# -- signing refuses to clobber or to sign the wrong thing ----------------------------------


def test_sign_never_overwrites_without_force(rel: Release) -> None:
    rel.statement.write_text("keep me\n")
    code, _, err = rel.sign()
    assert code == 2
    one_line(err, rel.statement, "--force")
    assert rel.statement.read_text() == "keep me\n"
    assert rel.sign("--force")[0] == 0
    assert rel.verify()[0] == 0


def test_sign_refuses_a_version_the_recipe_does_not_describe(rel: Release) -> None:
    code, _, err = rel.sign("--version", "1.0.1")
    assert code == 2
    one_line(err, "--version 1.0.1", "1.0.0")
    assert not rel.statement.exists()
    assert rel.sign("--package", "hello-phar", "--version", "1.0.0")[0] == 0


def test_sign_with_a_broken_recipe_writes_nothing(rel: Release) -> None:
    bad = rel.root / "bad.toml"
    bad.write_bytes(RECIPE.read_bytes().replace(b"commit = ", b"kommit = "))
    code, _, err = run(
        rel.capsys, "release", "sign", rel.artifact, "--recipe", bad, "--key", rel.key
    )
    assert code == 2
    one_line(err, bad, "kommit")
    assert not rel.statement.exists()
    no_temp_files(rel.root)


def test_sign_to_an_explicit_out_path(rel: Release) -> None:
    out = rel.root / "sub"
    out.mkdir()
    assert rel.sign("--out", out / "r.json")[0] == 0
    assert rel.verify(out / "r.json")[0] == 0


def test_sign_refuses_to_write_the_envelope_over_its_own_inputs(rel: Release) -> None:
    before = rel.artifact.read_bytes()
    code, _, err = rel.sign("--out", rel.artifact, "--force")
    assert code == 2
    one_line(err, "is the ARTIFACT file")
    assert rel.artifact.read_bytes() == before
    code, _, err = rel.sign("--out", rel.key, "--force")
    assert code == 2
    one_line(err, "is the --key file")


def test_a_fifo_as_artifact_is_refused_not_hashed_forever(rel: Release) -> None:
    rel.artifact.unlink()
    os.mkfifo(rel.artifact)
    # Opening a FIFO for reading blocks until a writer appears; give it one.
    writer = subprocess.Popen(["sh", "-c", f"exec cat /dev/zero > '{rel.artifact}'"])
    try:
        code, _, err = rel.sign()
    finally:
        writer.kill()
        writer.wait()
    assert code == 2
    one_line(err, rel.artifact, "not a regular file")


def test_witness_key_given_as_maintainer_key_is_refused(rel: Release) -> None:
    rel.sign()
    witness = rel.root / "witness.pub"
    witness.write_text(rel.signing_key.verifier_key(ALG_COSIGNATURE_V1).encode() + "\n")
    rel.pub = witness
    code, _, err = rel.verify()
    assert code == 2
    one_line(err, witness, "cannot sign releases")


def test_exit_codes_of_the_real_process(rel: Release) -> None:
    """`python -m rebuild release verify` as a user runs it: 0, then 1, then 2."""
    rel.sign()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable, "-m", "rebuild", "release", "verify", str(rel.artifact),
        "--statement", str(rel.statement), "--maintainer-key", str(rel.pub),
    ]  # fmt: skip

    def code() -> int:
        return subprocess.run(cmd, env=env, capture_output=True, check=False).returncode

    assert code() == 0
    shutil.copy(RECIPE, rel.artifact)
    assert code() == 1
    rel.statement.write_bytes(b"\x00")
    assert code() == 2


def test_a_release_no_rebuild_can_reproduce_is_refused_at_signing(rel: Release) -> None:
    """The recipe builds hello.phar; a release of hello-1.0.0.phar could never be
    matched by a rebuild (verify compares the file with the output of the same
    name), so signing it would publish a release nobody can ever attest."""
    renamed = rel.root / "hello-1.0.0.phar"
    rel.artifact.rename(renamed)
    code, out, err = run(
        rel.capsys, "release", "sign", renamed, "--recipe", RECIPE, "--key", rel.key, "--json"
    )
    assert code == 2
    doc = json.loads(out)
    assert doc["error"]["kind"] == "UsageError"
    assert "matches none of the recipe's outputs (hello.phar)" in doc["error"]["message"]
    assert "hello.phar" in doc["error"]["hint"]
    assert str(renamed) in err
    assert not (rel.root / "hello-1.0.0.phar.release.json").exists()
