"""The log's storage engine: tiles match the reference, recovery, the lock."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from rebuild.errors import StorageError
from rebuild.log.store import LogStore, Pending
from tests.conftest import load_vector
from verify import merkle
from verify.checkpoint import open_checkpoint
from verify.keys import SigningKey
from verify.tiles import TileHashes, entry_bundles, hash_tiles, parse_entry_bundle


def _pending(data: bytes) -> Pending:
    return Pending(data, merkle.leaf_hash(data))


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate("log.test")


def test_tiles_match_sunlight_reference_tree(tmp_path: Path, key: SigningKey) -> None:
    """300 leaves written in uneven batches give byte-identical tiles to Sunlight's."""
    vec = load_vector("sunlight-skylight-tiles.json")
    leaves = [f"record {i}".encode() for i in range(300)]
    with LogStore.open(tmp_path, key, "rome2026h1.example.org") as store:
        for lo, hi in [(0, 1), (1, 7), (7, 255), (255, 256), (256, 300)]:
            got = store.integrate([_pending(x) for x in leaves[lo:hi]])
            assert [s.index for s in got] == list(range(lo, hi))
        assert store.latest.root == base64.b64decode(vec["tree"]["root_b64"])
        for path, b64 in vec["tiles_b64"].items():
            assert (tmp_path / path).read_bytes() == base64.b64decode(b64), path
    # every tile and bundle the size-300 tree needs is there, nothing else (once
    # closed: superseded partial tiles are removed in the background)
    served = {str(p.relative_to(tmp_path)) for p in (tmp_path / "tile").rglob("*") if p.is_file()}
    assert served == {t.path() for t in hash_tiles(300) + entry_bundles(300)}
    with LogStore.open(tmp_path, key, "rome2026h1.example.org") as store:
        bundle = (tmp_path / "tile/entries/001.p/44").read_bytes()
        assert parse_entry_bundle(bundle, 44) == leaves[256:300]
        cp, _ = open_checkpoint(store.latest.note, key.verifier_key(), "rome2026h1.example.org")
        assert cp.size == 300


def test_resubmitted_entry_is_appended_and_lookup_finds_the_first_copy(
    tmp_path: Path, key: SigningKey
) -> None:
    with LogStore.open(tmp_path, key, "o") as store:
        first = store.integrate([_pending(b"a"), _pending(b"b"), _pending(b"a")])
        assert [s.index for s in first] == [0, 1, 2]
        assert store.lookup_leaf(merkle.leaf_hash(b"a")) == 0
        store.flush_index()
        assert store.lookup_leaf(merkle.leaf_hash(b"a")) == 0
        assert store.lookup_leaf(merkle.leaf_hash(b"b")) == 1


def test_lookup_index_lost_in_a_crash_is_rebuilt_from_the_tiles(
    tmp_path: Path, key: SigningKey
) -> None:
    """The index is derived data: losing it (or its last flushes) loses no lookup."""
    subject = bytes(range(32))
    with LogStore.open(tmp_path, key, "o") as store:
        store.integrate([Pending(b"x%d" % i, merkle.leaf_hash(b"x%d" % i)) for i in range(300)])
        store.integrate([Pending(b"y", merkle.leaf_hash(b"y"), (subject,))])
    for f in (tmp_path / "state").glob("index.sqlite*"):
        f.unlink()
    env = (tmp_path / "tile/entries/001.p/45").read_bytes()
    assert env.endswith(b"y")
    with LogStore.open(tmp_path, key, "o") as store:
        assert store.lookup_leaf(merkle.leaf_hash(b"x299")) == 299
        assert store.lookup_leaf(merkle.leaf_hash(b"y")) == 300
        # "y" is not a DSSE envelope, so its subject is not re-derived; the
        # subject index only ever holds what check_entry extracts
        assert store.lookup_subject(subject)[0] == []


def test_second_server_on_same_directory_is_refused(tmp_path: Path, key: SigningKey) -> None:
    with LogStore.open(tmp_path, key, "o"), pytest.raises(StorageError, match="lock"):
        LogStore.open(tmp_path, key, "o")


def test_reopening_with_another_key_is_refused(tmp_path: Path, key: SigningKey) -> None:
    LogStore.open(tmp_path, key, "o").close()
    with pytest.raises(StorageError, match="another key"):
        LogStore.open(tmp_path, SigningKey.generate("log.test"), "o")


def test_interrupted_batch_leftovers_are_removed_on_restart(
    tmp_path: Path, key: SigningKey
) -> None:
    """Files a crashed batch wrote beyond the committed size never survive a restart."""
    with LogStore.open(tmp_path, key, "o") as store:
        store.integrate([_pending(b"%d" % i) for i in range(10)])
        root10 = store.latest.root
    # what a batch killed between writing tiles and committing leaves behind
    stale = [
        "tile/0/000.p/200",
        "tile/0/001",
        "tile/entries/000.p/11",
        "tile/entries/000",
        "tile/1/000.p/1",
        "tile/0/.002.tmp",
    ]
    for rel in stale:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(os.urandom(64))
    with LogStore.open(tmp_path, key, "o") as store:
        assert store.size == 10 and store.latest.root == root10
        for rel in stale:
            assert not (tmp_path / rel).exists(), rel
        got = store.integrate([_pending(b"x")])
        assert got[0].index == 10
        assert TileHashes(11, store.tiles.tile).root() == store.latest.root


def test_tampered_tile_refuses_to_start(tmp_path: Path, key: SigningKey) -> None:
    with LogStore.open(tmp_path, key, "o") as store:
        store.integrate([_pending(b"%d" % i) for i in range(5)])
    (tmp_path / "tile/0/000.p/5").write_bytes(os.urandom(5 * 32))
    with pytest.raises(StorageError):
        LogStore.open(tmp_path, key, "o")


def test_proofs_from_disk_tiles_verify(tmp_path: Path, key: SigningKey) -> None:
    data = [b"entry %d" % i for i in range(1000)]
    with LogStore.open(tmp_path, key, "o") as store:
        for lo in range(0, 1000, 333):
            store.integrate([_pending(x) for x in data[lo : lo + 333]])
        roots = {}
        for size in (1, 255, 256, 257, 666, 1000):
            roots[size] = merkle.root([merkle.leaf_hash(x) for x in data[:size]])
        th = store.tile_hashes(1000)
        assert th.root() == roots[1000] == store.latest.root
        for i in (0, 255, 256, 999):
            merkle.verify_inclusion(
                merkle.leaf_hash(data[i]), i, 1000, th.inclusion_proof(i), roots[1000]
            )
        for old in (1, 255, 256, 257, 666):
            merkle.verify_consistency(old, 1000, th.consistency_proof(old), roots[old], roots[1000])
        assert store.entry(777) == data[777]


def test_lookups_span_index_epochs_and_return_the_first_copy(tmp_path: Path) -> None:
    """Rows are grouped by epoch: a key seen in several epochs still maps to its first index."""
    from rebuild.log.index import EPOCH_BITS, LookupIndex

    epoch = 1 << EPOCH_BITS
    leaf, subject = b"L" * 32, b"S" * 32
    index = LookupIndex(tmp_path / "index.sqlite")
    try:
        where = [5, epoch + 1, 3 * epoch + 7]  # in index order, as the store adds them
        index.add([(leaf, i) for i in where], [(subject, i) for i in where], 3 * epoch + 8)
        assert index.lookup_leaf(leaf) == 5  # answered from memory
        index.flush()
        assert index.lookup_leaf(leaf) == 5  # and from SQLite, across epochs
        assert index.lookup_subject([subject])[0] == where
        assert index.lookup_leaf(b"M" * 32) is None
    finally:
        index.close()
    reopened = LookupIndex(tmp_path / "index.sqlite")
    try:
        assert reopened.lookup_leaf(leaf) == 5
        assert reopened.lookup_subject([subject])[0] == where
    finally:
        reopened.close()


def test_index_of_an_older_layout_is_rebuilt_from_the_tiles(
    tmp_path: Path, key: SigningKey
) -> None:
    """An index.sqlite keyed by hash alone (layout 1) is dropped and rebuilt, not misread."""
    import sqlite3

    with LogStore.open(tmp_path, key, "o") as store:  # more than one re-indexing chunk
        for lo in (0, 2500):
            store.integrate(
                [Pending(b"x%d" % i, merkle.leaf_hash(b"x%d" % i)) for i in range(lo, lo + 2500)]
            )
    for f in (tmp_path / "state").glob("index.sqlite*"):
        f.unlink()
    old = sqlite3.connect(tmp_path / "state" / "index.sqlite")
    old.executescript(
        "CREATE TABLE meta(k TEXT PRIMARY KEY, v) WITHOUT ROWID;"
        "CREATE TABLE leaves(hash BLOB PRIMARY KEY, idx INTEGER NOT NULL) WITHOUT ROWID;"
        "CREATE TABLE subjects(digest BLOB NOT NULL, idx INTEGER NOT NULL,"
        " PRIMARY KEY(digest, idx)) WITHOUT ROWID;"
        "INSERT INTO meta VALUES ('indexed', 5000);"
    )
    old.commit()
    old.close()
    with LogStore.open(tmp_path, key, "o") as store:
        store.flush_index()
        for i in (0, 4095, 4096, 4999):
            assert store.lookup_leaf(merkle.leaf_hash(b"x%d" % i)) == i
