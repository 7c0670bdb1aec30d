"""Crash safety: SIGKILL the real log server at random points under concurrent writers.

Each round starts ``rebuild log serve`` on the same directory, lets several
writer threads add entries over keep-alive HTTP, kills the server with
SIGKILL at a random moment and starts it again. At the end the log must hold
every acknowledged entry at the index it was given, its tiles must reproduce
every checkpoint it ever signed, and no size may have been signed with two
different roots.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from rebuild.keystore import load_signing_key
from rebuild.log.store import LogStore
from tests.logutil import envelope, make_key, start_log
from verify import merkle
from verify.checkpoint import open_checkpoint
from verify.tiles import hash_tiles, tiles_from_leaf_hashes

ROUNDS = 20
WRITERS = 6


def _writer(url: str, tag: str, acked: list[tuple[int, bytes]], lock: threading.Lock) -> None:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    seq = 0
    try:
        while True:
            body = envelope(f"{tag}-{seq}")
            seq += 1
            conn.request("POST", "/add", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                return
            with lock:
                acked.append((json.loads(data)["index"], body))
    except (OSError, http.client.HTTPException):
        return  # the server was killed mid-request: that entry was never acknowledged
    finally:
        conn.close()


def _observe(url: str, seen: dict[int, set[str]], stop: threading.Event) -> None:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        while not stop.is_set():
            conn.request("GET", "/checkpoint")
            resp = conn.getresponse()
            note = resp.read().decode()
            size = int(note.split("\n")[1])
            seen.setdefault(size, set()).add(note.split("\n")[2])
            time.sleep(0.01)
    except (OSError, http.client.HTTPException, ValueError, IndexError):
        return
    finally:
        conn.close()


@pytest.mark.slow
def test_sigkill_at_random_points_loses_no_acknowledged_entry(tmp_path: Path) -> None:
    rng = random.Random(0xC0FFEE)
    key_file = make_key(tmp_path, "crash.log")
    log_dir = tmp_path / "log"
    acked: list[tuple[int, bytes]] = []
    lock = threading.Lock()
    observed: dict[int, set[str]] = {}
    for round_no in range(ROUNDS):
        server = start_log(
            str(log_dir), str(key_file), tmp_path / f"server-{round_no}.log", "--batch-ms", "0"
        )
        stop = threading.Event()
        threads = [
            threading.Thread(target=_writer, args=(server.url, f"r{round_no}w{w}", acked, lock))
            for w in range(WRITERS)
        ]
        threads.append(threading.Thread(target=_observe, args=(server.url, observed, stop)))
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.05, 0.6))
        server.kill()
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert len(acked) > ROUNDS * WRITERS, "writers barely ran; the test proves nothing"
    print(f"acknowledged {len(acked)} entries over {ROUNDS} kills")

    key = load_signing_key(key_file)
    with LogStore.open(log_dir, key, "crash.log") as store:
        size = store.size
        entries = [store.entry(i) for i in range(size)]
        leaves = [merkle.leaf_hash(e) for e in entries]
        # 1. every acknowledged entry is at the index it was given
        for index, body in acked:
            assert index < size and entries[index] == body, f"acknowledged entry {index} lost"
        assert len({i for i, _ in acked}) == len(acked), "two acknowledgements share an index"
        for index, body in acked[:: max(1, len(acked) // 200)]:
            assert store.lookup_leaf(merkle.leaf_hash(body)) == index, "lookup index lost it"
        # 2. tiles on disk are exactly the tree of the entries
        expected = tiles_from_leaf_hashes(leaves)
        for tile in hash_tiles(size):
            assert (log_dir / tile.path()).read_bytes() == expected[tile], tile.path()
        assert store.tile_hashes(size).root() == merkle.root(leaves) == store.latest.root
        # 3. every checkpoint ever signed (or served) is a prefix of this log:
        #    one root per size, and it is the root of the first `size` entries
        roots: dict[int, bytes] = {}
        for signed in store.signed_history():
            assert roots.setdefault(signed.size, signed.root) == signed.root, (
                f"two different checkpoints signed for size {signed.size}"
            )
            assert signed.root == merkle.root(leaves[: signed.size])
            open_checkpoint(signed.note, key.verifier_key())
        for cp_size, cp_roots in observed.items():
            assert len(cp_roots) == 1, f"clients saw two roots for size {cp_size}"
            assert cp_size <= size
        published, _ = open_checkpoint((log_dir / "checkpoint").read_bytes(), key.verifier_key())
        assert published.root_hash == merkle.root(leaves[: published.size])
