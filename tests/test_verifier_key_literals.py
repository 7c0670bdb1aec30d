"""Literal verifier keys whose name has a ``/`` (``example.com/log+id+key``).

C2SP names logs like URLs, so ``witness serve --log``, ``log follow
--log-key`` and ``release verify --key-file`` must take such a literal key
instead of looking for a file called ``example.com/log+...``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rebuild.errors import InputError
from rebuild.keystore import load_signing_key, load_verifier_key
from tests.logutil import Server, envelope, make_key, run_cli, start_log
from verify.cosignature import verify_cosignatures, witness_key
from verify.keys import SigningKey


def _key_with_slash_in_base64() -> SigningKey:
    for i in range(1000):
        k = SigningKey(f"example.com/log{i}", bytes([i % 256, i // 256]) * 16)
        if "/" in k.verifier_key().encode().split("+", 2)[2]:
            return k
    raise AssertionError("no key with a '/' in its base64 found")


def test_a_literal_key_with_slashes_is_a_key_not_a_missing_file(tmp_path: Path) -> None:
    key = _key_with_slash_in_base64()
    literal = key.verifier_key().encode()
    assert "/" in literal.split("+", 1)[0]
    assert load_verifier_key(literal) == key.verifier_key()
    # A file still works, and wins when it exists.
    pub = tmp_path / "log.pub"
    pub.write_text(literal + "\n")
    assert load_verifier_key(pub) == key.verifier_key()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("missing/file.pub", "no such file"),
        ("example.com/log+0000000a+AAAA", "verifier key"),
    ],
)
def test_a_bad_literal_or_missing_file_is_named(spec: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_verifier_key(spec)


@pytest.mark.slow
def test_witness_serve_takes_a_literal_log_key_named_like_a_url(tmp_path: Path) -> None:
    log_key = tmp_path / "log.key"
    r = run_cli("key", "generate", "example.com/gate-log", "--out", str(log_key))
    assert r.returncode == 0, r.stderr
    literal = (tmp_path / "log.key.pub").read_text().strip()
    assert literal.startswith("example.com/gate-log+")
    wkey = make_key(tmp_path, "w1.example.com")
    servers: list[Server] = []
    try:
        witness = Server(
            [
                "witness",
                "serve",
                "--key",
                str(wkey),
                "--state",
                str(tmp_path / "ws"),
                "--listen",
                "127.0.0.1:0",
                "--log-key",
                literal,
            ],
            tmp_path / "witness.log",
        )
        servers.append(witness)
        assert "witnessing: example.com/gate-log" in (tmp_path / "witness.log").read_text()
        wvkey = witness_key(load_signing_key(wkey))
        policy = tmp_path / "tlog.policy"
        policy.write_text(f"log {literal}\nwitness W1 {wvkey} {witness.url}\nquorum W1\n")
        log = start_log(tmp_path / "log", log_key, tmp_path / "log.log", "--witnesses", str(policy))
        servers.append(log)
        entry = tmp_path / "entry.json"
        entry.write_bytes(envelope("slash"))
        r = run_cli("log", "add", "--log", log.url, str(entry), "--wait", "--json")
        assert r.returncode == 0, r.stderr
        proof = json.loads(r.stdout)["proof"]
        # The witness cosigned the checkpoint of the log it was given literally.
        cosigs = verify_cosignatures(proof.split("\n\n", 1)[1], [wvkey], now=int(time.time()))
        assert [c.key for c in cosigs] == [wvkey]
        # log follow --log-key takes the same literal.
        r = run_cli(
            "log",
            "follow",
            "--log",
            log.url,
            "--state",
            str(tmp_path / "mon"),
            "--log-key",
            literal,
            "--once",
            "--json",
        )
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["size"] == 1
    finally:
        for s in servers:
            s.stop()
