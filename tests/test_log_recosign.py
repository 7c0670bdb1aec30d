"""An idle log keeps fresh witness cosignatures on its unchanged checkpoint.

Updaters refuse a checkpoint whose newest cosignature is older than their
policy's maximum age (a freeze attack: an attacker replaying an old, validly
cosigned checkpoint to hide a newer release). A log that receives no entry
for a while must therefore get its unchanged checkpoint cosigned again. Real
processes on 127.0.0.1: ``rebuild witness serve`` and ``rebuild log serve
--witnesses POLICY --recosign-interval 1``; no entry is added while the
published cosignature's timestamp must advance.
"""

from __future__ import annotations

import time
from pathlib import Path

from rebuild.keystore import load_signing_key
from rebuild.witness import origin_hash
from tests.logutil import Server, envelope, http_request, make_key, run_cli, start_log
from verify.checkpoint import open_checkpoint
from verify.cosignature import verify_cosignatures, witness_key
from verify.keys import VerifierKey
from verify.note import split_note


def _newest_cosignature(note: bytes, wkey: VerifierKey) -> int:
    return max(
        (c.timestamp for c in verify_cosignatures(note, [wkey], now=int(time.time()))), default=0
    )


def _wait_for(url: str, predicate: object, seconds: float = 60.0) -> bytes:
    assert callable(predicate)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status, note = http_request(url, "GET", "/checkpoint")
        if status == 200 and predicate(note):
            return note
        time.sleep(0.1)
    raise AssertionError("the published checkpoint never reached the expected state")


def test_idle_log_gets_its_unchanged_checkpoint_cosigned_again(tmp_path: Path) -> None:
    log_key = make_key(tmp_path, "recosign.log.test")
    wkey_file = make_key(tmp_path, "w.recosign.test")
    wkey = witness_key(load_signing_key(wkey_file))
    witness = Server(
        ["witness", "serve", "--key", str(wkey_file), "--state", str(tmp_path / "ws"),
         "--listen", "127.0.0.1:0", "--log-key", f"{log_key}.pub"],
        tmp_path / "witness.log",
    )  # fmt: skip
    log = None
    try:
        policy = tmp_path / "policy"
        log_vkey = Path(f"{log_key}.pub").read_text().strip()
        policy.write_text(f"log {log_vkey}\nwitness W {wkey} {witness.url}\nquorum W\n")
        log = start_log(
            tmp_path / "log", log_key, tmp_path / "log.log",
            "--witnesses", str(policy), "--recosign-interval", "1",
        )  # fmt: skip
        entry = tmp_path / "entry.json"
        entry.write_bytes(envelope("the only entry"))
        assert run_cli("log", "add", "--log", log.url, str(entry), "--wait").returncode == 0
        first = _wait_for(log.url, lambda n: split_note(n)[0].split("\n")[1] == "1")
        t0 = _newest_cosignature(first, wkey)
        assert t0 > 0
        # no entry is added: the timestamp must advance on the same tree
        later = _wait_for(log.url, lambda n: _newest_cosignature(n, wkey) > t0 + 1)
        cp0, _ = open_checkpoint(first, VerifierKey.parse(log_vkey))
        cp1, _ = open_checkpoint(later, VerifierKey.parse(log_vkey))
        assert cp1 == cp0  # same size, same root: the same tree, cosigned again
        assert len(verify_cosignatures(later, [wkey], now=int(time.time()))) == 1
        # the witness stored the fresher cosignature too
        status, stored = http_request(
            witness.url, "GET", f"/{origin_hash('recosign.log.test')}/checkpoint"
        )
        assert status == 200 and _newest_cosignature(stored, wkey) > t0
        # a monitor sees the same tree, unchanged, and keeps the fresher checkpoint
        r = run_cli(
            "log", "follow", "--log", log.url, "--state", str(tmp_path / "mon"),
            "--policy", str(policy), "--once",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
    finally:
        if log is not None:
            log.stop()
        witness.stop()
    assert "cosigned again" in (tmp_path / "log.log").read_text()


def test_recosign_interval_out_of_range_is_a_usage_error(tmp_path: Path) -> None:
    key = make_key(tmp_path, "recosign.log.test")
    for bad in ("-1", "nan", "999999999"):
        r = run_cli(
            "log", "serve", "--dir", str(tmp_path / "log"), "--key", str(key),
            "--listen", "127.0.0.1:0", "--recosign-interval", bad,
        )  # fmt: skip
        assert r.returncode == 2 and "--recosign-interval" in r.stderr, r.stderr
