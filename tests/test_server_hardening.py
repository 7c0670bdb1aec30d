"""Smaller holes in the servers and the command line, each with its real fault.

A 4,301-digit integer in a statement; secret keys readable by others and a
FIFO as a key; a 413 that kept reading a 1 GB body; malformed requests that
flooded the server log with tracebacks; leading zeros, percent-encoding and
HTTP/0.9 on the log's API; a front-end process that dies (SIGKILL); partial
tiles a kill left behind; one key used as both log and witness key; an
index outside a proof's tree. Real processes and sockets on 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from rebuild.keystore import load_signing_key
from rebuild.log.store import LogStore, Pending
from tests.logutil import Server, envelope, http_request, make_key, run_cli, start_log
from verify import merkle
from verify.cosignature import witness_key
from verify.tlogproof import TlogProof


def _raw(url: str, data: bytes, timeout: float = 10.0) -> bytes:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "", parts.port or 0), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("hardening")
    key = make_key(tmp, "hard.log.test")
    with LogStore.open(tmp / "log", load_signing_key(key), "hard.log.test") as store:
        entries = [envelope(f"e{i}") for i in range(300)]
        store.integrate([Pending(e, merkle.leaf_hash(e)) for e in entries])
    server = start_log(tmp / "log", key, tmp / "server.log")
    yield server
    server.stop()


# --- the command line ---------------------------------------------------------


def test_statement_with_a_4301_digit_integer_is_exit_2_in_one_line(tmp_path: Path) -> None:
    key = make_key(tmp_path, "maintainer.example")
    artifact = tmp_path / "a.phar"
    artifact.write_bytes(b"x")
    statement = tmp_path / "s.json"
    statement.write_text('{"payloadType": "x", "n": ' + "1" * 4301 + "}")
    r = run_cli(
        "release", "verify", str(artifact), "--statement", str(statement),
        "--maintainer-key", f"{key}.pub",
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_secret_key_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    key = make_key(tmp_path, "w.hard.test")
    key.chmod(mode)
    r = run_cli("witness", "vkey", "--key", str(key))
    assert r.returncode == 2 and "chmod 600" in r.stderr, r.stderr
    key.chmod(0o600)
    assert run_cli("witness", "vkey", "--key", str(key)).returncode == 0


def test_fifo_given_as_a_key_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "key"
    os.mkfifo(fifo, 0o600)
    start = time.monotonic()
    r = run_cli("witness", "vkey", "--key", str(fifo), timeout=30)
    assert r.returncode == 2 and "not a regular file" in r.stderr
    assert time.monotonic() - start < 20


def test_one_key_as_log_key_and_witness_key_is_refused(tmp_path: Path) -> None:
    key = make_key(tmp_path, "same.test")
    r = run_cli(
        "witness", "serve", "--key", str(key), "--state", str(tmp_path / "ws"),
        "--listen", "127.0.0.1:0", "--log-key", f"{key}.pub",
    )  # fmt: skip
    assert r.returncode == 2 and "own" in r.stderr, r.stderr
    policy = tmp_path / "policy"
    vkey = Path(f"{key}.pub").read_text().strip()
    wkey = witness_key(load_signing_key(key))
    policy.write_text(f"log {vkey}\nwitness W {wkey} http://127.0.0.1:1\nquorum W\n")
    r = run_cli(
        "log", "serve", "--dir", str(tmp_path / "log"), "--key", str(key),
        "--listen", "127.0.0.1:0", "--witnesses", str(policy),
    )  # fmt: skip
    assert r.returncode == 2 and "own key" in r.stderr, r.stderr


def test_proof_index_outside_its_tree_is_exit_2(log: Server, tmp_path: Path) -> None:
    note = http_request(log.url, "GET", "/checkpoint")[1].decode()
    size = int(note.split("\n")[1])
    proof = tmp_path / "proof"
    proof.write_text(TlogProof(size, (), note).encode())
    entry = tmp_path / "entry"
    entry.write_bytes(envelope("e1"))
    policy = tmp_path / "policy"
    vkey = (log.log.parent / "hard.log.test.pub").read_text().strip()
    policy.write_text(f"log {vkey}\nquorum none\n")
    r = run_cli("log", "verify-proof", "--policy", str(policy), str(entry), str(proof))
    assert r.returncode == 2 and f"is not in a tree of size {size}" in r.stderr


# --- HTTP -----------------------------------------------------------------------


def test_413_closes_the_connection_instead_of_reading_the_body(log: Server) -> None:
    """A client announcing 1 GB is answered 413 and cut off, not drained."""
    parts = urlsplit(log.url)
    s = socket.create_connection((parts.hostname or "", parts.port or 0), timeout=30)
    s.sendall(b"POST /add HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n")
    sent = 0
    stop = threading.Event()

    def pump() -> None:
        nonlocal sent
        block = b"x" * 65536
        try:
            while not stop.is_set() and sent < 1_000_000_000:
                sent += s.send(block)
        except OSError:
            return

    t = threading.Thread(target=pump)
    t.start()
    answer = b""
    try:
        while chunk := s.recv(65536):
            answer += chunk
    except ConnectionResetError:
        # The server closed with our unread body in its buffer, so its kernel
        # sent a reset after the answer; the answer itself was read before it.
        pass
    stop.set()
    t.join(timeout=30)
    s.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    assert sent < 64 << 20, f"the server read {sent} bytes of a refused body"


def test_malformed_requests_log_one_line_each_rate_limited(log: Server) -> None:
    before = log.log.read_text().splitlines()
    for i in range(200):
        _raw(log.url, b"POST /add HTTP/1.1\r\nHost: x\r\nContent-Length: -%d\r\n\r\n" % i)
    # No wait: aiohttp logs a malformed request before it answers it, and the
    # server's log handler writes each line as it comes, so by the time _raw
    # has read the answer (to the close) the request's line, if any, is there.
    lines = log.log.read_text().splitlines()[len(before) :]
    assert not any("Traceback" in line for line in lines)
    assert all(line.startswith("rebuild log serve") for line in lines), lines[:5]
    assert len(lines) <= 2 * 31, len(lines)  # per process: 30 a minute and a summary


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/proof/01", 400),
        ("/proof/00", 400),
        ("/proof/1", 200),
        ("/tile/0/000", 200),
        ("/tile/0/%30%30%30", 404),
        ("/tile/%30/000", 404),
        ("/%63heckpoint", 404),
        ("/checkpoint", 200),
    ],
)
def test_one_name_per_resource(log: Server, path: str, status: int) -> None:
    assert http_request(log.url, "GET", path)[0] == status


def test_http_0_9_is_not_answered(log: Server) -> None:
    assert _raw(log.url, b"GET /checkpoint\r\n\r\n") == b""
    assert _raw(log.url, b"GET /checkpoint HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 200")


# --- processes and files ---------------------------------------------------------


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    return sorted(kids)


def _wait_children(pid: int, old: list[int], n: int) -> list[int]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        kids = _children(pid)
        if len(kids) == n and kids != old:
            return kids
        time.sleep(0.05)
    raise AssertionError("the front-end was not restarted")


def test_killed_front_end_is_restarted_and_a_crash_loop_stops_the_server(
    tmp_path: Path,
) -> None:
    key = make_key(tmp_path, "fe.hard.test")
    server = start_log(tmp_path / "log", key, tmp_path / "s.log", "--workers", "2")
    try:
        kids = _children(server.proc.pid)
        os.kill(kids[0], signal.SIGKILL)
        kids = _wait_children(server.proc.pid, kids, 2)
        assert server.proc.poll() is None
        for i in range(20):  # served by both front-ends again
            assert http_request(server.url, "POST", "/add", envelope(f"after-{i}"))[0] == 200
        # four more deaths within the minute are still restarted; the sixth is not
        for _ in range(4):
            os.kill(kids[0], signal.SIGKILL)
            kids = _wait_children(server.proc.pid, kids, 2)
        os.kill(kids[0], signal.SIGKILL)
        assert server.proc.wait(timeout=60) == 2
    finally:
        server.stop()
    text = server.log.read_text()
    assert "restarting it" in text and "giving up" in text


def test_partial_tiles_left_by_a_kill_are_removed_at_start(tmp_path: Path) -> None:
    key = make_key(tmp_path, "p.hard.test")
    log_dir = tmp_path / "log"
    with LogStore.open(log_dir, load_signing_key(key), "p.hard.test") as store:
        entries = [envelope(f"e{i}") for i in range(300)]
        store.integrate([Pending(e, merkle.leaf_hash(e)) for e in entries[:100]])
        store.integrate([Pending(e, merkle.leaf_hash(e)) for e in entries[100:]])
    # what a SIGKILL between a tile filling up and its partials' removal leaves
    stale = {
        "tile/0/000.p/100": (log_dir / "tile/0/000").read_bytes()[: 100 * 32],
        "tile/entries/000.p/7": b"stale",
    }
    for rel, data in stale.items():
        (log_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (log_dir / rel).write_bytes(data)
    server = start_log(log_dir, key, tmp_path / "s.log")
    server.stop()
    assert not (log_dir / "tile/0/000.p").exists()
    assert not (log_dir / "tile/entries/000.p").exists()
    assert (log_dir / "tile/0/001.p/44").exists()  # the right edge's partial stays


def test_hostile_key_id_hint_cannot_break_lookups(log: Server) -> None:
    """Hints are free text: odd ones are stored, and only name+8-hex is indexed."""
    digest = hashlib.sha256(b"odd").hexdigest()
    statement = json.dumps({"subject": [{"digest": {"sha256": digest}}]}).encode()
    for hint in ("+", "a+", "+deadbeef", "a+DEADBEEF", "a+deadbeef0"):
        body = json.dumps({
            "payloadType": "application/vnd.in-toto+json",
            "payload": base64.b64encode(statement).decode(),
            "signatures": [{"keyid": hint, "sig": "c2ln"}],
        }).encode()  # fmt: skip
        assert http_request(log.url, "POST", "/add", body)[0] == 200
    status, data = http_request(log.url, "GET", f"/lookup/sha256/{digest}?keyid=deadbeef")
    assert status == 200 and json.loads(data)["indexes"] == []
    status, data = http_request(log.url, "GET", f"/lookup/sha256/{digest}")
    assert len(json.loads(data)["indexes"]) == 5


# --- stopping -----------------------------------------------------------------


@pytest.mark.parametrize("server", ["witness", "log, front-ends", "log, one process"])
def test_a_client_holding_an_idle_connection_does_not_delay_the_stop(
    tmp_path: Path, server: str
) -> None:
    """SIGTERM closes idle keep-alive connections at once.

    Before, the server waited its whole drain timeout (10 s for the witness,
    30 s for the log) for a connection that was between requests.
    """
    key = make_key(tmp_path, "stop.log.test")
    if server == "witness":
        wkey = make_key(tmp_path, "w.stop.test")
        args = ["witness", "serve", "--key", str(wkey), "--state", str(tmp_path / "ws"),
                "--listen", "127.0.0.1:0", "--log-key", f"{key}.pub"]  # fmt: skip
        running = Server(args, tmp_path / "out")
    else:
        workers = ["--workers", "2" if "front-ends" in server else "0"]
        running = start_log(tmp_path / "log", key, tmp_path / "out", *workers)
    parts = urlsplit(running.url)
    held = socket.create_connection((parts.hostname or "", parts.port or 0), timeout=30)
    try:
        held.sendall(b"GET /no-such-path HTTP/1.1\r\nHost: x\r\n\r\n")
        assert held.recv(65536).startswith(b"HTTP/1.1 404")  # answered, kept alive
        start = time.monotonic()
        running.stop()
        stopped_in = time.monotonic() - start
    finally:
        held.close()
    assert running.proc.returncode == 0
    assert stopped_in < 8, f"stopping took {stopped_in:.1f} s"
