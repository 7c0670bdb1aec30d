"""Hostile input to every parser on the trust boundary raises a typed error
(or parses), never anything else: garbage cannot crash the witness or the
verifier."""

from __future__ import annotations

import base64

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rebuild.witness import BadRequest, parse_add_checkpoint
from verify.checkpoint import parse as parse_checkpoint
from verify.errors import FormatError, VerifyError
from verify.merkle import MAX_TREE_SIZE, inclusion_proof_in_memory, leaf_hash, root
from verify.tiles import (
    ENTRIES,
    MAX_LEVEL,
    TILE_WIDTH,
    TileHashes,
    parse_tile_path,
    tiles_from_leaf_hashes,
)
from verify.tlog_policy import parse_policy
from verify.tlogproof import parse as parse_tlog_proof

# Text built from the characters these formats are made of, plus anything.
ALPHABET = st.sampled_from(
    list("old index extra quorum group witness log any all none\n\n—+/=0123456789xp.AZaz \t")
)
formatish = st.lists(ALPHABET, max_size=300).map("".join) | st.text(max_size=300)
raw = st.binary(max_size=400) | formatish.map(str.encode)

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(raw)
@example(
    b"old 3\n"
    + b"A" * 43
    + b"=\n\nlog.example\n7\n"
    + b"A" * 43
    + b"=\n\n\xe2\x80\x94 k AAAAAAA=\n"
)
def test_add_checkpoint_body(data: bytes) -> None:
    try:
        req = parse_add_checkpoint(data)
    except BadRequest:
        return
    proof = "".join(base64.b64encode(h).decode() + "\n" for h in req.proof)
    assert f"old {req.old_size}\n{proof}\n{req.note}".encode() == data


@SETTINGS
@given(raw)
@example(b"log.example\n7\n" + b"A" * 43 + b"=\next\n")
def test_checkpoint_body(data: bytes) -> None:
    try:
        cp = parse_checkpoint(data)
    except FormatError:
        return
    assert cp.body().encode() == data  # one canonical encoding


@SETTINGS
@given(raw)
@example(
    b"c2sp.org/tlog-proof@v1\nextra aGk=\nindex 0\n\nlog.example\n1\n"
    + b"A" * 43
    + b"=\n\n\xe2\x80\x94 k AAAAAAA=\n"
)
def test_tlog_proof(data: bytes) -> None:
    try:
        tp = parse_tlog_proof(data)
    except FormatError:
        return
    assert tp.encode().encode() == data


@SETTINGS
@given(raw)
@example(b"# c\n  quorum\tnone  \n")
def test_policy(data: bytes) -> None:
    try:
        policy = parse_policy(data)
    except VerifyError:
        return
    assert parse_policy(policy.encode()) == policy


@SETTINGS
@given(formatish.map(lambda s: "tile/" + s))
def test_tile_path(path: str) -> None:
    try:
        tile = parse_tile_path(path)
    except FormatError:
        return
    assert tile.path() == path


def _tile_index(n: int) -> str:
    """tlog-tiles: N as zero-padded 3-digit elements, all but the last prefixed x."""
    digits = str(n).zfill(-(-len(str(n)) // 3) * 3)
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join([*("x" + g for g in groups[:-1]), groups[-1]])


@SETTINGS
@given(
    st.sampled_from([ENTRIES, *range(MAX_LEVEL + 1)]),
    st.integers(0, MAX_TREE_SIZE >> 8) | st.integers(0, 2000),
    st.integers(1, TILE_WIDTH),
)
@example(0, 1234067, TILE_WIDTH)  # the spec's example: tile/0/x001/x234/067
def test_well_formed_tile_path_parses_to_its_tile(level: int, n: int, width: int) -> None:
    path = f"tile/{'entries' if level == ENTRIES else level}/{_tile_index(n)}"
    if width < TILE_WIDTH:
        path += f".p/{width}"
    tile = parse_tile_path(path)
    assert (tile.level, tile.n, tile.width) == (level, n, width)
    assert tile.path() == path


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 1500), st.data())
def test_proofs_from_tiles_equal_proofs_from_leaves(size: int, data: st.DataObject) -> None:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    tiles = tiles_from_leaf_hashes(leaves)
    th = TileHashes(size, lambda t: tiles[t])
    assert th.root() == root(leaves)
    index = data.draw(st.integers(0, size - 1))
    assert th.inclusion_proof(index) == inclusion_proof_in_memory(index, leaves)
