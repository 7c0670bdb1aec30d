"""``rebuild bundle`` against a real log over HTTPS, and its lookup client.

The log is a real ``log serve`` with a trustme certificate; the envelopes in
it are signed in memory (tests/gatesim.py) so that the bundle's contents can
be compared with a known tree. The attack suite (tests/test_gate_attacks.py)
runs the same command on a witnessed log of real rebuilds.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest
import trustme

from rebuild.bundle import MAX_LOOKUP_PAGES, lookup_indexes
from rebuild.errors import TransportError
from rebuild.log.client import LogClient
from tests.gatesim import World
from tests.logutil import Server, run_cli, start_log
from verify.bundle import parse_bundle
from verify.keys import SigningKey, encode_secret_key_file
from verify.merkle import leaf_hash, root, verify_consistency, verify_inclusion

ART = b"<?php echo 'bundle';\n"
ROGUE = SigningKey("rogue-maintainer.example", b"r" * 32)


def _add(server: Server, tmp: Path, directory: Path, envelopes: list[bytes]) -> None:
    """``rebuild log add --wait`` each envelope, over HTTPS with the test CA."""
    directory.mkdir(exist_ok=True)
    for i, data in enumerate(envelopes):
        f = directory / f"entry{i}.json"
        f.write_bytes(data)
        r = run_cli(
            "log",
            "add",
            "--log",
            server.url,
            "--log-ca-bundle",
            str(tmp / "ca.pem"),
            str(f),
            "--wait",
        )
        assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, Server, Path]]:
    tmp = tmp_path_factory.mktemp("bundle-cli")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    w = World()
    key = tmp / "log.key"
    key.write_bytes(encode_secret_key_file(w.log_key, None))
    key.chmod(0o600)
    server = start_log(
        tmp / "log",
        key,
        tmp / "log.out",
        "--workers",
        "0",
        "--tls-cert",
        str(tmp / "server.pem"),
        "--tls-key",
        str(tmp / "server.pem"),
    )
    try:
        release = w.release(ART)
        atts = [w.attest(ART, k) for k in w.rebuilder_keys]
        stranger = w.attest(ART, SigningKey("stranger.example", b"s" * 32))
        other = w.attest(b"other bytes", w.rebuilder_keys[0])
        _add(server, tmp, tmp / "entries", [release, *atts, stranger, other])
        w.add(release, *atts, stranger, other)
        (tmp / "tlog.policy").write_text(w.tlog_policy())
        (tmp / "policy.toml").write_text(w.policy_toml())
        (tmp / "hello.phar").write_bytes(ART)
        yield w, server, tmp
    finally:
        server.stop()


def _bundle(served: tuple[World, Server, Path], *extra: str) -> tuple[Any, Any]:
    _, server, tmp = served
    out = tmp / "out.bundle.json"
    r = run_cli(
        "bundle",
        "--log",
        server.url,
        "--log-ca-bundle",
        str(tmp / "ca.pem"),
        "--artifact",
        str(tmp / "hello.phar"),
        "--out",
        str(out),
        "--json",
        *extra,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), parse_bundle(out.read_bytes())


def test_bundle_collects_every_envelope_about_the_artifact_with_proofs(
    served: tuple[World, Server, Path],
) -> None:
    w, _, _ = served
    doc, bundle = _bundle(served)
    cp = bundle.checkpoint_body()
    assert cp.size == 6
    assert cp.root_hash == root([leaf_hash(e) for e in w.entries])
    assert doc["release_index"] == 0
    assert [a["index"] for a in doc["attestations"]] == [1, 2, 3, 4]  # not 5: other bytes
    assert bundle.release.envelope == w.entries[0]
    for logged in (bundle.release, *bundle.attestations):
        assert logged.proof.checkpoint == bundle.checkpoint
        verify_inclusion(
            leaf_hash(logged.envelope),
            logged.proof.index,
            cp.size,
            logged.proof.proof,
            cp.root_hash,
        )


def test_policy_keeps_only_the_packages_keys(served: tuple[World, Server, Path]) -> None:
    _, _, tmp = served
    doc, bundle = _bundle(served, "--policy", str(tmp / "policy.toml"))
    assert [a["index"] for a in doc["attestations"]] == [1, 2, 3]
    # The stranger's attestation (index 4) is not even fetched: the client asks
    # for the policy's keyids and the log's keyid filter leaves it out.
    assert not any("index 4" in s for s in doc["skipped"]), doc["skipped"]
    assert len(bundle.attestations) == 3


def test_since_size_adds_a_consistency_proof(served: tuple[World, Server, Path]) -> None:
    w, _, _ = served
    _, bundle = _bundle(served, "--since-size", "2")
    proof = bundle.consistency_from(2)
    assert proof is not None
    old = root([leaf_hash(e) for e in w.entries[:2]])
    verify_consistency(2, 6, list(proof.hashes), old, bundle.checkpoint_body().root_hash)


def test_since_size_beyond_the_log_is_refused(served: tuple[World, Server, Path]) -> None:
    _, server, tmp = served
    r = run_cli(
        "bundle",
        "--log",
        server.url,
        "--log-ca-bundle",
        str(tmp / "ca.pem"),
        "--artifact",
        str(tmp / "hello.phar"),
        "--since-size",
        "99",
    )
    assert r.returncode == 2
    assert "beyond the log's published checkpoint" in r.stderr


def test_https_without_the_ca_is_refused(served: tuple[World, Server, Path]) -> None:
    _, server, tmp = served
    r = run_cli("bundle", "--log", server.url, "--artifact", str(tmp / "hello.phar"))
    assert r.returncode == 2 and "TLS" in r.stderr


def test_an_artifact_without_a_release_in_the_log(
    served: tuple[World, Server, Path], tmp_path: Path
) -> None:
    _, server, tmp = served
    (tmp_path / "x.phar").write_bytes(b"never released")
    r = run_cli(
        "bundle",
        "--log",
        server.url,
        "--log-ca-bundle",
        str(tmp / "ca.pem"),
        "--artifact",
        str(tmp_path / "x.phar"),
        "--json",
    )
    assert r.returncode == 2
    assert "no release statement" in json.loads(r.stdout)["error"]["message"]


def test_two_releases_for_one_artifact_need_a_policy(
    served: tuple[World, Server, Path], tmp_path: Path
) -> None:
    w, server, tmp = served
    rogue = tmp_path / "rogue.json"
    art = b"<?php echo 'contested';\n"
    (tmp_path / "c.phar").write_bytes(art)
    _add(server, tmp, tmp_path, [w.release(art), w.release(art, signer=ROGUE)])
    base = ["bundle", "--log", server.url, "--log-ca-bundle", str(tmp / "ca.pem")]
    base += ["--artifact", str(tmp_path / "c.phar"), "--out", str(rogue)]
    r = run_cli(*base)
    assert r.returncode == 2 and "several release statements" in r.stderr
    r = run_cli(*base, "--policy", str(tmp / "policy.toml"), "--json")
    assert r.returncode == 0, r.stderr
    kept = parse_bundle(rogue.read_bytes()).release.envelope
    assert json.loads(kept)["signatures"][0]["keyid"].startswith("maintainer.example+")


def test_from_files_refuses_proofs_in_different_trees(
    served: tuple[World, Server, Path], tmp_path: Path
) -> None:
    w, _, tmp = served
    _, bundle = _bundle(served)
    older = w.checkpoint(size=3, witnesses=[])
    files = []
    for i, logged in enumerate((bundle.release, bundle.attestations[0])):
        env, proof = tmp_path / f"e{i}", tmp_path / f"p{i}"
        env.write_bytes(logged.envelope)
        note = older if i == 1 else logged.proof.checkpoint
        text = w.logged(logged.envelope, note).proof.encode()
        proof.write_text(text)
        files.append((env, proof))
    r = run_cli(
        "bundle",
        "--from-files",
        "--artifact",
        str(tmp / "hello.phar"),
        "--release",
        str(files[0][0]),
        str(files[0][1]),
        "--attestation",
        str(files[1][0]),
        str(files[1][1]),
        "--out",
        str(tmp_path / "b"),
    )
    assert r.returncode == 2
    assert "against 2 different trees" in r.stderr


# -- the paged lookup (the next_cursor protocol) -----------------------------------


class _PagingLog(BaseHTTPRequestHandler):
    """A test double for the paged ``/lookup/sha256`` answer: pages of 2 indexes.

    The log server on this branch answers in one page; the paging server is
    being built on another branch, so its protocol is served here by hand.
    """

    indexes: ClassVar[list[int]] = list(range(0, 50, 5))
    stuck: ClassVar[bool] = False
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        type(self).seen.append(self.path)
        cursor = int(query.get("cursor", ["0"])[0])
        page = [i for i in self.indexes if i >= cursor][:2]
        rest = [i for i in self.indexes if i > (page[-1] if page else cursor)]
        nxt = None if not rest else (0 if self.stuck else rest[0])
        body = json.dumps(
            {"sha256": parts.path.rsplit("/", 1)[1], "indexes": page, "next_cursor": nxt}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def paging() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PagingLog)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        _PagingLog.stuck = False
        _PagingLog.indexes = list(range(0, 50, 5))
        _PagingLog.seen = []


DIGEST = "ab" * 32


def test_lookup_follows_next_cursor_to_the_end(paging: str) -> None:
    with LogClient(paging) as client:
        assert lookup_indexes(client, DIGEST, "0a1b2c3d") == list(range(0, 50, 5))
    assert len(_PagingLog.seen) == 5
    assert all("keyid=0a1b2c3d" in p for p in _PagingLog.seen)
    assert "cursor=10" in _PagingLog.seen[1]


def test_lookup_refuses_a_cursor_that_does_not_advance(paging: str) -> None:
    _PagingLog.stuck = True
    with LogClient(paging) as client, pytest.raises(TransportError, match="did not advance"):
        lookup_indexes(client, DIGEST)


def test_lookup_pages_are_bounded(paging: str) -> None:
    _PagingLog.indexes = list(range(2 * MAX_LOOKUP_PAGES + 10))
    with LogClient(paging) as client, pytest.raises(TransportError, match="lookup pages"):
        lookup_indexes(client, DIGEST)


def test_base64_of_bundled_envelopes_is_the_logged_bytes(
    served: tuple[World, Server, Path],
) -> None:
    w, _, tmp = served
    _bundle(served)
    doc = json.loads((tmp / "out.bundle.json").read_bytes())
    assert base64.b64decode(doc["release"]["envelope"]) == w.entries[0]
