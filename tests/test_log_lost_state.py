"""A log that lost or rolled back its state must refuse to start, never equivocate.

The faults are real: ``rebuild log serve`` adds entries, stops, and then its
state directory is deleted or replaced by an older copy (an operator's
restore from backup), and the server is started again on the same
directory. Starting afresh would re-use published indexes and sign a tree
conflicting with a checkpoint it published: the one promise a transparency
log's key must keep. The log must exit 2, say why, and touch nothing.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from rebuild.keystore import load_signing_key
from rebuild.log.store import LogStore, Pending
from tests.logutil import envelope, make_key, run_cli, start_log
from verify import merkle
from verify.tiles import ENTRIES, Tile


def _add(url: str, body: bytes) -> int:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.request("POST", "/add", body=body)
        resp = conn.getresponse()
        data = resp.read()
        assert resp.status == 200, data
        index = json.loads(data)["index"]
        assert isinstance(index, int)
        return index
    finally:
        conn.close()


def _snapshot(directory: Path) -> dict[str, str]:
    """Every published file (checkpoint, tiles) and the sha256 of its bytes."""
    out = {}
    for p in sorted(directory.rglob("*")):
        rel = p.relative_to(directory)
        if p.is_file() and rel.parts[0] != "state":
            out[str(rel)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _serve_once(directory: Path, key: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "log", "serve", "--dir", str(directory), "--key", str(key), "--listen", "127.0.0.1:0",
        timeout=60,
    )  # fmt: skip


def test_deleted_state_directory_refuses_to_start_instead_of_reusing_indexes(
    tmp_path: Path,
) -> None:
    key = make_key(tmp_path, "lost.log.test")
    log_dir = tmp_path / "log"
    server = start_log(log_dir, key, tmp_path / "s1.log")
    try:
        assert [_add(server.url, envelope(f"kept-{i}")) for i in range(2)] == [0, 1]
    finally:
        server.stop()
    before = _snapshot(log_dir)
    assert "checkpoint" in before and any(k.startswith("tile/entries") for k in before)
    shutil.rmtree(log_dir / "state")

    r = _serve_once(log_dir, key)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no state" in r.stderr and "Traceback" not in r.stderr
    # nothing published was deleted or rewritten, and no new state was created
    assert _snapshot(log_dir) == before
    assert not (log_dir / "state" / "log.sqlite").exists()
    # and a second try refuses just the same (the refusal left nothing behind)
    assert _serve_once(log_dir, key).returncode == 2


def test_tiles_without_state_or_checkpoint_refuse_to_start(tmp_path: Path) -> None:
    """Witness-gated logs may have tiles but no published checkpoint yet."""
    key = make_key(tmp_path, "lost.log.test")
    log_dir = tmp_path / "log"
    with LogStore.open(log_dir, load_signing_key(key), "lost.log.test") as store:
        e = envelope("unpublished")
        store.integrate([Pending(e, merkle.leaf_hash(e))])
    shutil.rmtree(log_dir / "state")
    assert not (log_dir / "checkpoint").exists()
    r = _serve_once(log_dir, key)
    assert r.returncode == 2 and "tiles" in r.stderr


def test_state_restored_from_an_older_backup_refuses_to_start(tmp_path: Path) -> None:
    """State at size 1, published checkpoint at size 3: re-signing 2..3 would equivocate."""
    key = make_key(tmp_path, "lost.log.test")
    log_dir = tmp_path / "log"
    server = start_log(log_dir, key, tmp_path / "s1.log")
    try:
        _add(server.url, envelope("one"))
    finally:
        server.stop()
    shutil.copytree(log_dir / "state", tmp_path / "backup")
    server = start_log(log_dir, key, tmp_path / "s2.log")
    try:
        _add(server.url, envelope("two"))
        _add(server.url, envelope("three"))
    finally:
        server.stop()
    before = _snapshot(log_dir)
    shutil.rmtree(log_dir / "state")
    shutil.copytree(tmp_path / "backup", log_dir / "state")
    (log_dir / "state" / "lock").unlink(missing_ok=True)

    r = _serve_once(log_dir, key)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "older than the published log" in r.stderr
    assert _snapshot(log_dir) == before  # the tiles of entries 1 and 2 are still there


def test_state_far_behind_its_tiles_refuses_to_start_even_unpublished(tmp_path: Path) -> None:
    key = make_key(tmp_path, "lost.log.test")
    log_dir = tmp_path / "log"
    signing = load_signing_key(key)
    with LogStore.open(log_dir, signing, "lost.log.test") as store:
        e = envelope("first")
        store.integrate([Pending(e, merkle.leaf_hash(e))])
    shutil.copytree(log_dir / "state", tmp_path / "backup")
    with LogStore.open(log_dir, signing, "lost.log.test") as store:
        for b in range(3):
            batch = [envelope(f"more-{b}-{i}") for i in range(4000)]
            store.integrate([Pending(x, merkle.leaf_hash(x)) for x in batch])
    assert not (log_dir / "checkpoint").exists()  # never published (no witness quorum yet)
    shutil.rmtree(log_dir / "state")
    shutil.copytree(tmp_path / "backup", log_dir / "state")
    far = log_dir / Tile(ENTRIES, 40).path()
    assert far.exists()
    r = _serve_once(log_dir, key)
    assert r.returncode == 2 and "far beyond" in r.stderr
    assert far.exists()


def test_published_checkpoint_of_another_tree_is_refused(tmp_path: Path) -> None:
    """A checkpoint this log signed for a tree its tiles do not extend: refuse."""
    key = make_key(tmp_path, "lost.log.test")
    signing = load_signing_key(key)
    with LogStore.open(tmp_path / "other", signing, "lost.log.test") as other:
        for tag in ("x0", "x1"):
            e = envelope(tag)
            other.integrate([Pending(e, merkle.leaf_hash(e))])
        foreign = other.signed_at(1)
    assert foreign is not None
    with LogStore.open(tmp_path / "log", signing, "lost.log.test") as store:
        for tag in ("a0", "a1", "a2"):
            e = envelope(tag)
            store.integrate([Pending(e, merkle.leaf_hash(e))])
    (tmp_path / "log" / "checkpoint").write_text(foreign.note)
    r = _serve_once(tmp_path / "log", key)
    assert r.returncode == 2 and "not consistent" in r.stderr


def test_log_refuses_to_sign_a_tree_its_tiles_cannot_prove_consistent(tmp_path: Path) -> None:
    """A hash tile of the signed tree damaged under a running log: the next add gets 503.

    The consistency proof from the last signed checkpoint is computed from
    the tiles on disk before each signature, so the log never signs blind.
    """
    key = make_key(tmp_path, "lost.log.test")
    log_dir = tmp_path / "log"
    server = start_log(log_dir, key, tmp_path / "s.log", "--workers", "0")
    try:
        for i in range(300):
            _add(server.url, envelope(f"fill-{i}"))
        published = (log_dir / "checkpoint").read_bytes()
        # the level-1 hash of the first 256 entries: every proof from size 300 uses it
        tile = log_dir / "tile/1/000.p/1"
        data = bytearray(tile.read_bytes())
        data[5] ^= 1
        tile.write_bytes(bytes(data))
        parts = urlsplit(server.url)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
        conn.request("POST", "/add", body=envelope("after-damage"))
        resp = conn.getresponse()
        assert resp.status == 503, resp.read()
        conn.close()
        assert (log_dir / "checkpoint").read_bytes() == published
    finally:
        server.stop()
    assert "not consistent" in server.log.read_text()
