"""The log from the command line, against real ``rebuild log serve`` processes.

``log add --wait`` writes a proof file, ``get`` and ``find`` read entries
through the tiles (checked against the signed tree), ``status`` says when the
witnesses are down, ``follow`` reports changes only, and the errors a new
user meets name the file, the server and what to try next. Every ``--json``
output here is checked against docs/cli-output.schema.json.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from rebuild.keystore import load_signing_key
from tests import clijson
from tests.logutil import (
    PYTHON,
    RECIPE,
    Server,
    cli_env,
    envelope,
    free_port,
    make_key,
    run_cli,
    start_log,
)
from tests.statements import attestation
from verify.cosignature import witness_key
from verify.intoto import Verdict

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def _log(tmp: Path, *extra: str, name: str = "log.cli.test") -> Iterator[tuple[Server, Path]]:
    key = make_key(tmp, name)
    server = start_log(tmp / "logdir", key, tmp / "serve.out", "--workers", "0", *extra)
    try:
        yield server, key
    finally:
        server.stop()


def _json(*args: str, code: int, command: str) -> Any:
    r = run_cli(*args, "--json")
    assert r.returncode == code, (r.stdout, r.stderr)
    return clijson.envelope(r.stdout, code, command)


def _release(tmp: Path, artifact_bytes: bytes = b"<?php echo 1;\n") -> tuple[Path, Path, Path]:
    """A maintainer key, an artifact and its signed release statement."""
    maint = make_key(tmp, "maint.cli.test")
    artifact = tmp / "hello.phar"
    artifact.write_bytes(artifact_bytes)
    r = run_cli("release", "sign", str(artifact), "--recipe", str(RECIPE), "--key", str(maint))
    assert r.returncode == 0, r.stderr
    return maint, artifact, tmp / "hello.phar.release.json"


def _attestation(tmp: Path, artifact: Path, verdict: Verdict) -> tuple[Path, Path]:
    """A rebuilder key and its signed attestation about ``artifact``."""
    rebuilder = make_key(tmp, f"rebuilder-{verdict}.cli.test")
    path = tmp / f"attestation-{verdict}.json"
    path.write_bytes(attestation(rebuilder, artifact, verdict))
    return rebuilder, path


def _policy(tmp: Path, log_key: Path, *witness_lines: str, quorum: str = "none") -> Path:
    policy = tmp / "policy"
    lines = [f"log {log_key.with_name(log_key.name + '.pub').read_text().strip()}"]
    policy.write_text("\n".join([*lines, *witness_lines, f"quorum {quorum}", ""]))
    return policy


# -- add --wait, prove, verify-proof -----------------------------------------------------------


def test_log_add_wait_to_a_file_writes_a_proof_file_that_verifies(tmp_path: Path) -> None:
    """`log add --wait F > P` printed the index line first, so P was no proof file."""
    entry = tmp_path / "e.json"
    entry.write_bytes(envelope("proof-file"))
    with _log(tmp_path) as (server, key):
        proof = tmp_path / "p"
        with proof.open("wb") as out:
            r = subprocess.run(
                [PYTHON, "-m", "rebuild", "log", "add", "--log", server.url, "--wait", str(entry)],
                env=cli_env(),
                stdout=out,
                stderr=subprocess.PIPE,
                text=False,
                timeout=60,
                check=False,
            )
        assert r.returncode == 0, r.stderr
        assert proof.read_bytes().startswith(b"c2sp.org/tlog-proof@v1\n")
        assert b"entry 0 added" in r.stderr  # the index still reaches the user, on stderr
        policy = _policy(tmp_path, key)
        doc = _json(
            "log", "verify-proof", "--policy", str(policy), str(entry), str(proof),
            code=0, command="log verify-proof",
        )  # fmt: skip
        assert doc["verdict"] == "verified" and doc["index"] == 0

        # --out writes the same proof; --json carries it too.
        doc = _json(
            "log", "add", "--log", server.url, "--out", str(tmp_path / "p2"), str(entry),
            code=0, command="log add",
        )  # fmt: skip
        assert (tmp_path / "p2").read_text() == doc["proof"]


def test_verify_proof_errors_name_the_proof_file(tmp_path: Path) -> None:
    entry = tmp_path / "e.json"
    entry.write_bytes(envelope("named"))
    other = tmp_path / "other.json"
    other.write_bytes(envelope("another entry"))
    with _log(tmp_path) as (server, key):
        proof = tmp_path / "entry.proof"
        r = run_cli("log", "add", "--log", server.url, "--out", str(proof), str(entry))
        assert r.returncode == 0, r.stderr
    policy = _policy(tmp_path, key)
    # An index line in front (what `log add --wait > p` used to write): unusable, exit 2.
    damaged = tmp_path / "damaged.proof"
    damaged.write_bytes(b"0\n" + proof.read_bytes())
    doc = _json(
        "log", "verify-proof", "--policy", str(policy), str(entry), str(damaged),
        code=2, command="log verify-proof",
    )  # fmt: skip
    assert str(damaged) in doc["error"]["message"]
    # A valid proof for another entry: a negative verdict, exit 1, naming the file.
    doc = _json(
        "log", "verify-proof", "--policy", str(policy), str(other), str(proof),
        code=1, command="log verify-proof",
    )  # fmt: skip
    assert doc["verdict"] == "rejected"
    assert str(proof) in doc["reason"]["message"]


# -- get and find --------------------------------------------------------------------------


def test_log_get_prints_the_entry_checked_against_the_signed_tree(tmp_path: Path) -> None:
    maint, _, statement = _release(tmp_path)
    with _log(tmp_path) as (server, key):
        assert run_cli("log", "add", "--log", server.url, "--wait", str(statement)).returncode == 0
        out = tmp_path / "got.json"
        doc = _json(
            "log", "get", "--log", server.url, "0", "--log-key", f"{key}.pub",
            "--trusted-key", f"{maint}.pub", "--out", str(out),
            code=0, command="log get",
        )  # fmt: skip
        assert out.read_bytes() == statement.read_bytes()
        e = doc["entry"]
        assert (e["kind"], e["package"], e["version"]) == ("release", "hello-phar", "1.0.0")
        assert e["verified_signers"] == [f"maint.cli.test+{_key_id(maint)}"]
        assert doc["checkpoint"] == {"origin": "log.cli.test", "size": 1, "verified": True}
        human = run_cli("log", "get", "--log", server.url, "0")
        assert human.returncode == 0
        assert "release hello-phar 1.0.0 hello.phar" in human.stdout
        assert "NOT verified" in human.stdout
        _json("log", "get", "--log", server.url, "5", code=2, command="log get")


def _key_id(key: Path) -> str:
    return key.with_name(key.name + ".pub").read_text().split("+")[1]


def test_log_get_refuses_an_entry_the_log_serves_altered(tmp_path: Path) -> None:
    """The log serves entry bytes other than the ones its signed tree holds: caught
    by hashing the entry bundle into the tree, a negative verdict, never printed as
    the entry."""
    _, _, statement = _release(tmp_path)
    with _log(tmp_path) as (server, key):
        assert run_cli("log", "add", "--log", server.url, "--wait", str(statement)).returncode == 0
        bundle = tmp_path / "logdir" / "tile" / "entries" / "000.p" / "1"
        data = bytearray(bundle.read_bytes())
        data[-10] ^= 1
        bundle.write_bytes(bytes(data))
        r = run_cli("log", "get", "--log", server.url, "0", "--log-key", f"{key}.pub", "--json")
    assert r.returncode == 1, r.stderr
    doc = clijson.envelope(r.stdout, 1, "log get")
    assert doc["reason"]["kind"] == "ForkError"
    assert "does not hash to the tree" in doc["reason"]["message"]


def test_log_find_lists_releases_and_attestations_with_signers_and_verdicts(
    tmp_path: Path,
) -> None:
    maint, artifact, statement = _release(tmp_path)
    good, reproduced = _attestation(tmp_path, artifact, "reproduced")
    bad, mismatch = _attestation(tmp_path, artifact, "mismatch")
    unrelated = tmp_path / "unrelated.json"
    unrelated.write_bytes(envelope("unrelated"))
    with _log(tmp_path) as (server, key):
        for f in (statement, unrelated, reproduced, mismatch):
            assert run_cli("log", "add", "--log", server.url, "--wait", str(f)).returncode == 0
        trust = ["--trusted-key", f"{maint}.pub", "--trusted-key", f"{good}.pub"]
        doc = _json(
            "log", "find", "--log", server.url, "--package", "Hello_Phar", "--log-key",
            f"{key}.pub", *trust, code=0, command="log find",
        )  # fmt: skip
        rows = [
            (e["index"], e["kind"], e.get("verdict"), e["verified_signers"]) for e in doc["entries"]
        ]
        assert rows == [
            (0, "release", None, [f"maint.cli.test+{_key_id(maint)}"]),
            (2, "rebuild", "reproduced", [f"rebuilder-reproduced.cli.test+{_key_id(good)}"]),
            (3, "rebuild", "mismatch", []),  # signed by a key not given as trusted
        ]
        assert doc["entries"][2]["signers"] == [f"rebuilder-mismatch.cli.test+{_key_id(bad)}"]
        assert doc["checkpoint"]["verified"] is True

        by_digest = _json(
            "log", "find", "--log", server.url, "--sha256",
            __import__("hashlib").sha256(artifact.read_bytes()).hexdigest(),
            code=0, command="log find",
        )  # fmt: skip
        assert [e["index"] for e in by_digest["entries"]] == [0, 2, 3]
        other_version = _json(
            "log", "find", "--log", server.url, "--package", "hello-phar", "--version", "2.0",
            code=0, command="log find",
        )  # fmt: skip
        assert other_version["entries"] == []
        human = run_cli("log", "find", "--log", server.url, "--package", "hello-phar", *trust)
        assert "rebuild hello-phar 1.0.0 hello.phar: reproduced; signed by" in human.stdout
        assert "rebuild hello-phar 1.0.0 hello.phar: mismatch; key IDs" in human.stdout
        assert "none of them a --trusted-key" in human.stdout


# -- status, witnesses down, the errors a new user meets -----------------------------------


def test_log_status_says_the_witnesses_are_down_and_the_log_says_it_once(
    tmp_path: Path,
) -> None:
    wkey = make_key(tmp_path, "w1.cli.test")
    wvkey = witness_key(load_signing_key(wkey)).encode()
    log_key = make_key(tmp_path, "log.cli.test")
    down = f"http://127.0.0.1:{free_port()}"
    policy = _policy(tmp_path, log_key, f"witness w1 {wvkey} {down}", quorum="w1")
    server = start_log(
        tmp_path / "logdir", log_key, tmp_path / "serve.out",
        "--workers", "0", "--witnesses", str(policy),
    )  # fmt: skip
    try:
        entry = tmp_path / "e.json"
        entry.write_bytes(envelope("unwitnessed"))
        r = run_cli(
            "log", "add", "--log", server.url, "--wait", "--wait-timeout", "1", str(entry), "--json"
        )
        assert r.returncode == 2
        doc = clijson.envelope(r.stdout, 2, "log add")
        assert doc["index"] == 0 and doc["proof"] is None
        assert "no published checkpoint covered it within 1 s" in doc["error"]["message"]
        assert f"rebuild log status --log {server.url}" in doc["error"]["hint"]
        assert "waiting up to 1 s for a published checkpoint" in r.stderr  # it said so

        # Wait (on the server's own count, not a clock) for several failed attempts.
        deadline = time.monotonic() + 60
        while True:
            status = _json("log", "status", "--log", server.url, code=0, command="log status")
            if status["witnesses"][0]["failures_in_a_row"] >= 3:
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
        assert status["healthy"] is False
        assert (status["committed_size"], status["published_size"]) == (1, 0)
        assert status["pending"]["awaiting_witnesses"] == 1
        w = status["witnesses"][0]
        assert w["name"] == "w1" and w["ok"] is False
        assert "connection refused" in w["last_error"]
        human = run_cli("log", "status", "--log", server.url)
        assert "UNHEALTHY" in human.stdout and "witness w1" in human.stdout

        # The checkpoint is not "not found": the user learns why there is none.
        r = run_cli("log", "follow", "--log", server.url, "--log-key", f"{log_key}.pub",
                    "--state", str(tmp_path / "mon"), "--once")  # fmt: skip
        assert r.returncode == 2
        assert "has published no checkpoint yet" in r.stderr
        assert "rebuild log status" in r.stderr
    finally:
        server.stop()
    # Three failed attempts, one line about the witness (no aiohttp repr), one about the quorum.
    text = (tmp_path / "serve.out").read_text()
    witness_lines = [line for line in text.splitlines() if "witness w1" in line]
    assert len(witness_lines) == 1, text
    assert "cannot connect: connection refused" in witness_lines[0]
    assert "ClientConnectorError" not in text
    assert text.count("waits for the witness quorum") == 1, text


def test_a_refused_connection_says_what_was_reached_and_what_to_try(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    doc = _json("log", "status", "--log", url, code=2, command="log status")
    assert doc["error"] == {
        "kind": "TransportError",
        "message": f"cannot reach the log at {url}: connection refused",
        "hint": f"is the log running at {url}? (rebuild log status --log {url})",
    }


def test_the_old_ca_bundle_spelling_still_works_with_a_warning(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    r = run_cli("log", "status", "--log", url, "--ca-bundle", str(tmp_path / "ca.pem"))
    assert r.returncode == 2
    assert "warning: --ca-bundle is now --log-ca-bundle" in r.stderr
    assert "connection refused" in r.stderr
    assert "--ca-bundle" not in run_cli("log", "status", "--help").stdout


def test_a_witness_s_plain_key_in_a_policy_points_at_witness_vkey(tmp_path: Path) -> None:
    log_key = make_key(tmp_path, "log.cli.test")
    wkey = make_key(tmp_path, "w1.cli.test")
    plain = (tmp_path / "w1.cli.test.pub").read_text().strip()  # 0x01, not the 0x04 key
    policy = _policy(tmp_path, log_key, f"witness w1 {plain} http://127.0.0.1:1", quorum="w1")
    entry = tmp_path / "e.json"
    entry.write_bytes(envelope("x"))
    doc = _json(
        "log", "verify-proof", "--policy", str(policy), str(entry), str(entry),
        code=2, command="log verify-proof",
    )  # fmt: skip
    assert "cosignature/v1 (0x04)" in doc["error"]["message"]
    assert "rebuild witness vkey --key" in doc["error"]["hint"]
    assert wkey.exists()


# -- follow --------------------------------------------------------------------------------


def test_log_follow_reports_changes_as_json_lines_not_every_unchanged_round(
    tmp_path: Path,
) -> None:
    with _log(tmp_path) as (server, key):
        state = tmp_path / "mon"
        proc = subprocess.Popen(
            [PYTHON, "-m", "rebuild", "log", "follow", "--log", server.url, "--log-key",
             f"{key}.pub", "--state", str(state), "--interval", "0.05", "--json"],
            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        try:
            first = json.loads(proc.stdout.readline())
            assert first["event"] == "initial" and first["size"] == 0
            entry = tmp_path / "e.json"
            entry.write_bytes(envelope("grows"))
            assert run_cli("log", "add", "--log", server.url, "--wait", str(entry)).returncode == 0
            second = json.loads(proc.stdout.readline())
            assert (second["event"], second["previous_size"], second["size"]) == ("grew", 0, 1)
            # Let it do several unchanged rounds (each one replaces the state file).
            _wait_for_rounds(state / "checkpoint.json", 5)
        finally:
            proc.send_signal(signal.SIGTERM)
            rest, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = [first, second, *(json.loads(line) for line in rest.splitlines())]
    docs = clijson.stream("\n".join(json.dumps(d) for d in lines), 0, "log follow")
    assert [d.get("event") for d in docs] == ["initial", "grew", None]  # no "unchanged"
    assert docs[-1]["verdict"] == "consistent" and docs[-1]["size"] == 1
    assert docs[-1]["rounds"] >= 5


def _wait_for_rounds(path: Path, rounds: int) -> None:
    seen: set[tuple[int, int]] = set()
    deadline = time.monotonic() + 60
    while len(seen) < rounds:
        assert time.monotonic() < deadline, f"only {len(seen)} rounds"
        with suppress(FileNotFoundError):
            st = path.stat()
            seen.add((st.st_ino, st.st_mtime_ns))
        time.sleep(0.01)


def test_log_follow_human_output_names_changes(tmp_path: Path) -> None:
    with _log(tmp_path) as (server, key):
        r = run_cli(
            "log", "follow", "--log", server.url, "--log-key", f"{key}.pub",
            "--state", str(tmp_path / "mon"), "--once",
        )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("initial: size 0")


def test_log_serve_json_prints_a_listening_line_and_a_final_envelope(tmp_path: Path) -> None:
    key = make_key(tmp_path, "log.cli.test")
    proc = subprocess.Popen(
        [PYTHON, "-m", "rebuild", "log", "serve", "--dir", str(tmp_path / "d"), "--key",
         str(key), "--listen", "127.0.0.1:0", "--workers", "0", "--json"],
        env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        listening = json.loads(proc.stdout.readline())
        assert listening["event"] == "listening" and listening["url"].startswith("http://")
        status = _json("log", "status", "--log", listening["url"], code=0, command="log status")
        assert status["healthy"] is True and status["origin"] == "log.cli.test"
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    clijson.stream(json.dumps(listening) + "\n" + rest, 0, "log serve")


def test_status_through_front_end_processes(tmp_path: Path) -> None:
    """/status is answered by the sequencer, also when front-end processes serve HTTP."""
    key = make_key(tmp_path, "log.cli.test")
    server = start_log(tmp_path / "d", key, tmp_path / "serve.out", "--workers", "2")
    try:
        status = _json("log", "status", "--log", server.url, code=0, command="log status")
    finally:
        server.stop()
    assert status["committed_size"] == 0 and status["witnesses"] == []
