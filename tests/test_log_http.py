"""The log's HTTP API against a real ``rebuild log serve`` on 127.0.0.1.

Bad input (oversized bodies, garbage, hostile tile paths) must get the right
status and never disturb the log; the read API must follow tlog-tiles
(content types, caching, nothing beyond the tree); the write API's proofs
must verify offline.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from rebuild.keystore import load_signing_key
from tests.logutil import Server, envelope, make_key, run_cli
from verify import merkle
from verify.checkpoint import open_checkpoint
from verify.dsse import Envelope
from verify.errors import EnvelopeFormatError
from verify.tlog_policy import parse_policy
from verify.tlogproof import verify_tlog_proof


class Log:
    def __init__(self, server: Server, key_file: Path, directory: Path) -> None:
        self.server = server
        self.url = server.url
        self.key_file = key_file
        self.dir = directory
        self.vkey = load_signing_key(key_file).verifier_key()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def add(self, body: bytes, wait: bool = False) -> dict[str, object]:
        status, _, data = self.request("POST", "/add?wait=1" if wait else "/add", body)
        assert status == 200, data
        doc = json.loads(data)
        assert isinstance(doc, dict)
        return doc


@pytest.fixture(scope="module", params=["0", "2"], ids=["one-process", "two-front-ends"])
def log(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Log]:
    """The same API in both shapes: HTTP in the sequencer's process, or in front-ends."""
    tmp = tmp_path_factory.mktemp("log")
    key = make_key(tmp, "http.log.test")
    server = Server(
        [
            "log",
            "serve",
            "--dir",
            str(tmp / "log"),
            "--key",
            str(key),
            "--listen",
            "127.0.0.1:0",
            "--workers",
            request.param,
        ],
        tmp / "server.log",
    )
    try:
        yield Log(server, key, tmp / "log")
    finally:
        server.stop()


def _policy(log: Log) -> str:
    return f"log {log.vkey}\nquorum none\n"


def test_add_returns_index_and_leaf_hash_and_a_proof_that_verifies(log: Log) -> None:
    body = envelope("first")
    doc = log.add(body, wait=True)
    assert doc["leaf_hash"] == merkle.leaf_hash(body).hex()
    assert isinstance(doc["proof"], str)
    verified = verify_tlog_proof(
        doc["proof"], body, parse_policy(_policy(log)), now=int(time.time()) + 300
    )
    assert verified.index == doc["index"]


def test_readding_an_entry_appends_it_and_lookup_finds_the_first(log: Log) -> None:
    body = envelope("twice")
    first = log.add(body)
    again = log.add(body)
    assert again["index"] != first["index"] and again["leaf_hash"] == first["leaf_hash"]
    status, _, data = log.request("GET", f"/lookup/leaf/{first['leaf_hash']}")
    assert status == 200 and json.loads(data)["index"] == first["index"]


def test_oversized_entry_is_refused_with_413(log: Log) -> None:
    before = log.request("GET", "/checkpoint")[2]
    status, _, _ = log.request("POST", "/add", b"{" + b" " * (64 * 1024) + b"}")
    assert status == 413
    # without a Content-Length (chunked), the limit still holds
    parts = urlsplit(log.url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    conn.request("POST", "/add", body=iter([b"x" * 40000, b"y" * 40000]), encode_chunked=True)
    assert conn.getresponse().status == 413
    conn.close()
    assert log.request("GET", "/checkpoint")[2] == before


def test_largest_entry_a_bundle_can_hold_is_accepted(log: Log) -> None:
    raw = envelope("big")
    body = raw[:1] + b" " * (0xFFFF - len(raw)) + raw[1:]  # JSON whitespace as padding
    assert len(body) == 0xFFFF  # the uint16 length prefix of an entry bundle
    assert log.add(body)["leaf_hash"] == merkle.leaf_hash(body).hex()
    assert log.request("POST", "/add", body + b" ")[0] == 413


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe garbage",
        b"[1, 2, 3]",
        b'{"payloadType": "x", "payload": "AAAA"}',
        b'{"payloadType": "x", "payload": "AAAA", "signatures": []}',
        b'{"payloadType": "x", "payload": "%%%", "signatures": [{"sig": "AAAA"}]}',
        b'{"payloadType": 7, "payload": "AAAA", "signatures": [{"sig": "AAAA"}]}',
        b"[" * 100000,
    ],
)
def test_malformed_envelope_is_refused_with_400(log: Log, body: bytes) -> None:
    status, _, data = log.request("POST", "/add", body[:65535])
    assert status == 400, data
    assert "error" in json.loads(data)


def _env_text(payload: str = "e30=", sig: str = "c2ln", extra: str = "", n_sigs: int = 1) -> str:
    sigs = ", ".join(f'{{"keyid": "k{i}", "sig": "{sig}"}}' for i in range(n_sigs))
    return (
        f'{{"payloadType": "application/vnd.in-toto+json", "payload": "{payload}", '
        f'"signatures": [{sigs}]{extra}}}'
    )


# Each is accepted by a lenient json.loads-based check and refused by the DSSE
# parser the verifiers use (docs/formats.md): the log must not hold what no
# verifier will parse.
HOSTILE_ENVELOPES = {
    "duplicate-key": _env_text(extra=', "payload": "e30="').encode(),
    "nan": _env_text(extra=', "x": NaN').encode(),
    "extra-field": _env_text(extra=', "pad": ""').encode(),
    "extra-signature-field": _env_text().replace('"sig"', '"x": 1, "sig"').encode(),
    "lone-surrogate": _env_text().replace('"k0"', '"\\ud800"').encode(),
    "non-canonical-base64": _env_text(payload="e31=").encode(),
    "bom": b"\xef\xbb\xbf" + _env_text().encode(),
    "utf-16": _env_text().encode("utf-16"),
    "utf-32": _env_text().encode("utf-32"),
    "33-signatures": _env_text(n_sigs=33).encode(),
    "huge-integer": _env_text(extra=', "n": ' + "1" * 4301).encode(),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_ENVELOPES))
def test_envelope_a_verifier_would_refuse_is_refused_at_the_door(log: Log, name: str) -> None:
    body = HOSTILE_ENVELOPES[name]
    with pytest.raises(EnvelopeFormatError):
        Envelope.parse(body)
    status, _, data = log.request("POST", "/add", body)
    assert status == 400, data
    assert "error" in json.loads(data)
    status, _, _ = log.request("POST", "/add-bundle", len(body).to_bytes(2, "big") + body)
    assert status == 400


@pytest.mark.parametrize(
    "path",
    [
        "/tile/../state/index.sqlite",
        "/tile/0/1234",
        "/tile/0/x001",
        "/tile/0/000.p/0",
        "/tile/0/000.p/256",
        "/tile/64/000",
        "/tile/entries/000.p/07",
        "/tile/0/%2e%2e/state",
        "/state/index.sqlite",
        "/tile/9/000",
        "/tile/0/999",
    ],
)
def test_hostile_or_out_of_tree_tile_paths_are_404(log: Log, path: str) -> None:
    status, _, _ = log.request("GET", path)
    assert status == 404


def test_tiles_and_checkpoint_carry_tlog_tiles_headers(log: Log) -> None:
    for i in range(300):
        log.add(envelope(f"fill-{i}"))
    status, headers, note = log.request("GET", "/checkpoint")
    assert status == 200
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["cache-control"] == "no-cache"
    cp, _ = open_checkpoint(note, log.vkey)
    assert cp.size >= 300
    status, headers, full = log.request("GET", "/tile/0/000")
    assert status == 200 and len(full) == 8192
    assert headers["cache-control"] == "public, max-age=31536000, immutable"
    assert headers["content-type"] == "application/octet-stream"
    width = cp.size % 256
    status, headers, partial = log.request("GET", f"/tile/0/001.p/{width}")
    assert status == 200 and len(partial) == 32 * width
    assert "immutable" not in headers["cache-control"]
    status, headers, _ = log.request(
        "GET", "/tile/entries/000", headers={"Accept-Encoding": "gzip"}
    )
    assert status == 200 and headers.get("content-encoding") == "gzip"


def test_lookup_by_subject_digest_finds_the_entry(log: Log) -> None:
    artifact = b"the artifact bytes"
    doc = log.add(envelope("lookup", subject=artifact))
    digest = hashlib.sha256(artifact).hexdigest()
    status, _, data = log.request("GET", f"/lookup/sha256/{digest}")
    assert status == 200 and json.loads(data)["indexes"] == [doc["index"]]
    assert log.request("GET", "/lookup/sha256/" + "0" * 64)[2] == (
        b'{"sha256": "' + b"0" * 64 + b'", "indexes": [], "next_cursor": null}'
    )
    assert log.request("GET", "/lookup/sha256/NOTHEX")[0] == 400
    status, _, data = log.request("GET", f"/lookup/leaf/{doc['leaf_hash']}")
    assert json.loads(data)["index"] == doc["index"]
    assert log.request("GET", "/lookup/leaf/" + "ab" * 32)[0] == 404


def test_proof_for_an_index_beyond_the_tree_is_404(log: Log) -> None:
    assert log.request("GET", "/proof/999999999")[0] == 404
    assert log.request("GET", "/proof/-1")[0] == 400
    assert log.request("GET", "/proof/" + "9" * 30)[0] == 400


def test_wrong_methods_are_refused(log: Log) -> None:
    assert log.request("GET", "/add")[0] == 405
    assert log.request("PUT", "/checkpoint")[0] == 405


def test_second_server_on_the_same_directory_refuses_to_start(log: Log) -> None:
    r = run_cli(
        "log",
        "serve",
        "--dir",
        str(log.dir),
        "--key",
        str(log.key_file),
        "--listen",
        "127.0.0.1:0",
    )
    assert r.returncode == 2
    assert "another log server" in r.stderr


def test_cli_add_prove_and_verify_proof(log: Log, tmp_path: Path) -> None:
    entry = tmp_path / "entry.json"
    entry.write_bytes(envelope("cli"))
    r = run_cli("log", "add", "--log", log.url, str(entry), "--wait", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    policy = tmp_path / "policy"
    policy.write_text(_policy(log))
    proof = tmp_path / "entry.tlog-proof"
    r = run_cli("log", "prove", "--log", log.url, str(entry), "--out", str(proof))
    assert r.returncode == 0, r.stderr
    r = run_cli("log", "verify-proof", "--policy", str(policy), str(entry), str(proof))
    assert r.returncode == 0, r.stderr
    assert f"entry {doc['index']}" in r.stdout
    # a tampered proof hash: exit 1 (a negative verdict)
    text = proof.read_text().split("\n")
    for i, line in enumerate(text):
        if i > 1 and len(line) == 44:
            text[i] = base64.b64encode(bytes(32)).decode()
            break
    else:
        text[1] = f"index {doc['index'] + 1}"
    tampered = tmp_path / "tampered.tlog-proof"
    tampered.write_text("\n".join(text))
    r = run_cli("log", "verify-proof", "--policy", str(policy), str(entry), str(tampered))
    assert r.returncode == 1, r.stdout + r.stderr
    # a policy that trusts another log key: exit 1
    other = tmp_path / "other-policy"
    other_key = make_key(tmp_path, "http.log.test")
    other.write_text(f"log {Path(str(other_key) + '.pub').read_text().strip()}\nquorum none\n")
    r = run_cli("log", "verify-proof", "--policy", str(other), str(entry), str(proof))
    assert r.returncode == 1
    # garbage proof: exit 2 with a one-line error, no traceback
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00not a proof")
    r = run_cli("log", "verify-proof", "--policy", str(policy), str(entry), str(garbage))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    # an entry that is not in the log: prove fails with exit 2
    missing = tmp_path / "missing.json"
    missing.write_bytes(envelope("never added"))
    r = run_cli("log", "prove", "--log", log.url, str(missing))
    assert r.returncode == 2 and "not in the log" in r.stderr


def test_client_refuses_plain_http_to_a_non_loopback_host(tmp_path: Path) -> None:
    entry = tmp_path / "entry.json"
    entry.write_bytes(envelope("x"))
    r = run_cli("log", "add", "--log", "http://192.0.2.1:8080", str(entry))
    assert r.returncode == 2
    assert "loopback" in r.stderr


def _bundle(entries: list[bytes]) -> bytes:
    return b"".join(len(e).to_bytes(2, "big") + e for e in entries)


def test_add_bundle_sequences_every_entry_and_each_is_provable(log: Log) -> None:
    entries = [envelope(f"bundle-{i}") for i in range(40)]
    status, _, data = log.request("POST", "/add-bundle", _bundle(entries))
    assert status == 200, data
    got = json.loads(data)["entries"]
    assert [g["leaf_hash"] for g in got] == [merkle.leaf_hash(e).hex() for e in entries]
    policy = parse_policy(_policy(log))
    for g, e in zip(got[::13], entries[::13], strict=True):
        status, _, proof = log.request("GET", f"/proof/{g['index']}")
        assert status == 200
        assert verify_tlog_proof(proof, e, policy, now=int(time.time()) + 300).index == g["index"]


def _post_status(log: Log, path: str, body: bytes) -> int:
    """POST and read the status even if the server answers and closes before the body is sent.

    A refused oversized body (413) is not read: the server answers and closes
    the connection, so a client still sending gets a broken pipe.
    """
    parts = urlsplit(log.url)
    with socket.create_connection((parts.hostname or "", parts.port or 0), timeout=30) as s:
        s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (
            path.encode(), len(body)))  # fmt: skip
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(body)
        head = s.recv(100)
    return int(head.split(b" ", 2)[1])


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (_bundle([envelope("ok"), b"not an envelope"]), 400),
        (_bundle([envelope("ok")])[:-3], 400),
        (b"\x00", 400),
        (b"", 400),
        (_bundle([envelope(f"many-{i}") for i in range(257)]), 400),
        (_bundle([envelope("big") + b" " * 60000] * 70), 413),
    ],
)
def test_bad_bundle_is_refused_whole(log: Log, body: bytes, status: int) -> None:
    # Entries are sequenced in the order they arrive: anything taken from the
    # refused bundle would get an index between the two entries around it.
    before = log.add(envelope(f"before-{status}-{len(body)}"))["index"]
    assert isinstance(before, int)
    assert _post_status(log, "/add-bundle", body) == status
    assert log.add(envelope(f"after-{status}-{len(body)}"))["index"] == before + 1


@pytest.mark.parametrize(
    "raw",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS hello
        b"GARBAGE / HTTP/1.1\r\n\r\n",
        b"POST /add HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b'POST /add HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"payload',  # then EOF
        b"POST /add HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
    ],
    ids=["tls-hello", "bad-method", "negative-length", "short-body", "bad-chunk", "long-line"],
)
def test_garbage_on_the_socket_is_refused_and_the_log_keeps_working(log: Log, raw: bytes) -> None:
    parts = urlsplit(log.url)
    with socket.create_connection((parts.hostname or "", parts.port or 0), timeout=30) as s:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer == b"" or re.match(rb"HTTP/1\.[01] 4\d\d ", answer), answer[:200]
    doc = log.add(envelope(f"after-garbage-{hashlib.sha256(raw).hexdigest()[:8]}"))
    assert isinstance(doc["index"], int)


def test_hostile_envelope_template_itself_is_accepted(log: Log) -> None:
    """Control: each hostile body above differs from this accepted one in one way."""
    body = _env_text().encode()
    Envelope.parse(body)
    assert isinstance(log.add(body)["index"], int)
