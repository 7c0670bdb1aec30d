"""The log's lookup index: rows kept packed in memory until flushed, then in SQLite."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from rebuild.errors import StorageError
from rebuild.log import index as index_mod
from rebuild.log.index import LookupIndex


def _h(tag: str, i: int) -> bytes:
    return hashlib.sha256(b"%s-%d" % (tag.encode(), i)).digest()


def test_lookups_find_every_entry_after_many_flushes_and_a_restart(tmp_path: Path) -> None:
    """Rows move from memory to SQLite in many transactions; none is lost or reordered.

    Every fifth entry repeats an earlier leaf (the first index must win), and
    every entry shares one of seven subjects, so a subject's indexes span
    rows flushed long ago, rows just flushed and rows still in memory.
    """
    path = tmp_path / "index.sqlite"
    first: dict[bytes, int] = {}
    by_subject: dict[bytes, list[int]] = {}
    index = LookupIndex(path)
    try:
        upto = 0
        for batch in range(40):
            leaf_rows, subject_rows = [], []
            for i in range(upto, upto + 97):
                leaf = _h("leaf", i // 2 if i % 5 == 0 else i)
                subject = _h("subject", i % 7)
                leaf_rows.append((leaf, i))
                subject_rows.append((subject, i))
                first.setdefault(leaf, i)
                by_subject.setdefault(subject, []).append(i)
            upto += 97
            index.add(leaf_rows, subject_rows, upto)
            if batch % 3 == 0:
                index.flush()
            # whether still in memory or already committed, nothing is missing
            probe = leaf_rows[len(leaf_rows) // 2][0]
            assert index.lookup_leaf(probe) == first[probe]
            subject = subject_rows[-1][0]
            assert index.lookup_subject([subject])[0] == by_subject[subject]
    finally:
        index.close()
    assert index.indexed == upto
    reopened = LookupIndex(path)
    try:
        assert reopened.indexed == upto
        for leaf, i in first.items():
            assert reopened.lookup_leaf(leaf) == i
        for subject, idxs in by_subject.items():
            assert reopened.lookup_subject([subject])[0] == idxs
        assert reopened.lookup_leaf(_h("leaf", 10**6)) is None
    finally:
        reopened.close()


def test_lookup_never_misses_a_row_while_flushes_move_it_to_sqlite(tmp_path: Path) -> None:
    """A reader racing the index thread always finds every row added before it looked.

    A row is in memory, then in the transaction being written, then in SQLite;
    a lookup at any moment in between must see it exactly once.
    """
    index = LookupIndex(tmp_path / "index.sqlite")
    added = 0
    lock = threading.Lock()
    misses: list[int] = []
    lookups: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            with lock:
                n = added
            for i in (0, n // 2, n - 1) if n else ():
                if index.lookup_leaf(_h("leaf", i)) != i:
                    misses.append(i)
                if index.lookup_subject([_h("subject", i)])[0] != [i]:
                    misses.append(i)
            lookups.append(n)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for start in range(0, 12_000, 400):
            rows = range(start, start + 400)
            index.add(
                [(_h("leaf", i), i) for i in rows],
                [(_h("subject", i), i) for i in rows],
                start + 400,
            )
            with lock:
                added = start + 400
    finally:
        stop.set()
        t.join()
        index.close()
    assert misses == []
    assert len(lookups) > 10  # the reader really raced the flushes


def test_misaligned_match_inside_packed_rows_is_not_a_hit(tmp_path: Path) -> None:
    """A key made of the tail of one row and the head of the next is not in the index.

    Pending rows are one packed buffer; a byte search that ignored row
    boundaries would answer a lookup for bytes that straddle two rows.
    """
    a, b = _h("leaf", 1), _h("leaf", 2)
    packed = index_mod._pack([(a, 7), (b, 8)], tmp_path)
    straddling = packed[24:56]  # the end of row 0 and the start of row 1
    assert straddling not in (a, b)
    assert index_mod._find(packed, straddling) == []
    assert index_mod._find(packed, b) == [8]
    assert index_mod._find(packed, b[:16]) == []  # not a 32-byte key
    index = LookupIndex(tmp_path / "index.sqlite")
    try:
        index.add([(a, 7), (b, 8)], [], 9)
        assert index.lookup_leaf(straddling) is None
        assert index.lookup_leaf(b) == 8
        index.flush()
        assert index.lookup_leaf(straddling) is None
        assert index.lookup_leaf(b) == 8
    finally:
        index.close()


def test_index_key_of_the_wrong_length_is_refused(tmp_path: Path) -> None:
    index = LookupIndex(tmp_path / "index.sqlite")
    try:
        with pytest.raises(StorageError, match="31 bytes"):
            index.add([(b"\x01" * 31, 0)], [], 1)
        assert index.lookup_leaf(b"\x01" * 31) is None
    finally:
        index.close()
