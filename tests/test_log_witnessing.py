"""The log as a tlog-witness client: quorum gating and 409 recovery, with real witnesses.

A witness that is down must keep an under-witnessed checkpoint from being
published (while entries are still acknowledged); a log restarted with no
memory of what its witnesses saw must recover through their 409 answers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rebuild.keystore import load_signing_key
from tests.logutil import Server, envelope, free_port, make_key, run_cli, start_log
from verify.cosignature import verify_cosignatures, witness_key


def _wait_for_size(url: str, size: int, timeout: float = 30) -> str:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
        conn.request("GET", "/checkpoint")
        resp = conn.getresponse()
        body = resp.read().decode()
        conn.close()
        if resp.status == 200 and int(body.split("\n")[1]) >= size:
            return body
        time.sleep(0.1)
    raise AssertionError(f"no checkpoint of size {size} published")


@pytest.mark.slow
def test_witness_quorum_gates_publication_and_restart_recovers_through_409(
    tmp_path: Path,
) -> None:
    log_key = make_key(tmp_path, "log.quorum.test")
    wk = make_key(tmp_path, "w1.quorum.test")
    w1 = Server(
        [
            "witness",
            "serve",
            "--key",
            str(wk),
            "--state",
            str(tmp_path / "ws1"),
            "--listen",
            "127.0.0.1:0",
            "--log-key",
            f"{log_key}.pub",
        ],
        tmp_path / "witness.log",
    )
    servers = [w1]
    try:
        wvk = witness_key(load_signing_key(wk))
        other = witness_key(load_signing_key(make_key(tmp_path, "w2.quorum.test")))
        down = f"http://127.0.0.1:{free_port()}"
        strict = tmp_path / "strict.policy"
        strict.write_text(
            f"witness W1 {wvk} {w1.url}\nwitness W2 {other} {down}\n"
            "group both 2 W1 W2\nquorum both\n"
        )
        lenient = tmp_path / "lenient.policy"
        lenient.write_text(
            f"witness W1 {wvk} {w1.url}\nwitness W2 {other} {down}\ngroup one 1 W1 W2\nquorum one\n"
        )
        entry = tmp_path / "e.json"
        entry.write_bytes(envelope("gated"))

        # 1. quorum 2 with one witness down: the entry is acknowledged, but
        #    no checkpoint is ever published without both cosignatures.
        log = start_log(
            str(tmp_path / "log"), str(log_key), tmp_path / "log1.log", "--witnesses", str(strict)
        )
        # The log says (once) when it decided: W1 cosigned, the quorum was not
        # met, and it did not publish.
        log.wait_for(r"checkpoint \d+ waits for the witness quorum \(cosigned by W1\)")
        before = _failures(log.url, "W2")
        r = run_cli("log", "add", "--log", log.url, str(entry))
        assert r.returncode == 0 and r.stdout.strip() == "0", r.stderr
        # Two more rounds (at least one wholly after the add, so for size 1):
        # the retries hold back as well.
        _wait_for_failures(log.url, "W2", before + 2)
        assert not (tmp_path / "log/checkpoint").exists()
        r = run_cli("log", "prove", "--log", log.url, str(entry))
        assert r.returncode == 2
        log.stop()

        # 2. restarted with 1-of-2: published, cosigned by W1 only. The
        #    witness already cosigned sizes while the strict log ran, so the
        #    new process (which starts at old size 0) must take the 409 path.
        log = start_log(
            str(tmp_path / "log"), str(log_key), tmp_path / "log2.log", "--witnesses", str(lenient)
        )
        servers.append(log)
        note = _wait_for_size(log.url, 1)
        assert {c.key for c in verify_cosignatures(note, [wvk, other], now=int(time.time()))} == {
            wvk
        }
        log.wait_for(r"(?m)published checkpoint 1 cosigned by W1$")  # names, not a tuple
        entry2 = tmp_path / "e2.json"
        entry2.write_bytes(envelope("after restart"))
        r = run_cli("log", "add", "--log", log.url, str(entry2), "--wait", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["proof"]
        log.stop()
        # The operator reads names, not a Python tuple.
        served = (tmp_path / "log2.log").read_text()
        assert "published checkpoint 1 cosigned by W1\n" in served, served
        assert "('W1'" not in served

        # 3. once more, with the witness now ahead of a log process that knows nothing
        log = start_log(
            str(tmp_path / "log"), str(log_key), tmp_path / "log3.log", "--witnesses", str(lenient)
        )
        servers.append(log)
        entry3 = tmp_path / "e3.json"
        entry3.write_bytes(envelope("third"))
        r = run_cli("log", "add", "--log", log.url, str(entry3), "--wait", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["index"] == 2
    finally:
        for s in servers:
            s.stop()


def _failures(url: str, witness: str) -> int:
    """How many requests in a row to ``witness`` failed, by ``rebuild log status``."""
    r = run_cli("log", "status", "--log", url, "--json")
    [w] = [w for w in json.loads(r.stdout)["witnesses"] if w["name"] == witness]
    return int(w["failures_in_a_row"])


def _wait_for_failures(url: str, witness: str, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while _failures(url, witness) < count:
        assert time.monotonic() < deadline, f"{witness}: fewer than {count} failures"
        time.sleep(0.2)
