"""tlog-tiles paths and tile hashing against the C2SP examples and Sunlight's tiles."""

from __future__ import annotations

import base64
import random
from collections.abc import Callable

import pytest

from tests.conftest import load_vector
from verify.checkpoint import parse
from verify.cosignature import verify_cosignatures
from verify.errors import ProofFormatError, TileFormatError
from verify.keys import VerifierKey
from verify.merkle import leaf_hash, root, verify_consistency, verify_inclusion
from verify.note import split_note
from verify.tiles import (
    ENTRIES,
    Tile,
    TileHashes,
    audit_tiles,
    encode_entry_bundle,
    entries_path,
    entry_bundles,
    entry_bundles_between,
    hash_tiles,
    parse_entry_bundle,
    parse_tile_path,
    split_hashes,
    tile_path,
    tiles_between,
    tiles_from_leaf_hashes,
)

PATHS = load_vector("tlog-tiles-paths.json")
SKY = load_vector("sunlight-skylight-tiles.json")
SKY_NOW = 1_800_000_000  # after the mirror's cosignature in the vectors (2025-12-31)


@pytest.mark.parametrize("case", PATHS["index_encoding"], ids=lambda c: str(c["n"]))
def test_index_encoding(case: dict[str, object]) -> None:
    n = case["n"]
    assert isinstance(n, int)
    assert tile_path(0, n) == f"tile/0/{case['path_elem']}"
    assert entries_path(n) == f"tile/entries/{case['path_elem']}"
    assert parse_tile_path(f"tile/3/{case['path_elem']}") == Tile(3, n)


@pytest.mark.parametrize("case", PATHS["tree_size_examples"], ids=lambda c: str(c["size"]))
def test_tiles_of_a_tree_size_match_the_spec_examples(case: dict[str, object]) -> None:
    size = case["size"]
    assert isinstance(size, int)
    assert [t.path() for t in hash_tiles(size)] == case["hash_tiles"]
    bundles = [t.path() for t in entry_bundles(size)]
    if "entry_bundles" in case:
        assert bundles == case["entry_bundles"]
    else:
        assert bundles[-2:] == case["entry_bundles_last"]
        assert len(bundles) == case["entry_bundle_count"]
    for path in case["hash_tiles"]:
        assert parse_tile_path(path).path() == path


def test_partial_path_round_trips() -> None:
    assert tile_path(1, 1234067, 17) == "tile/1/x001/x234/067.p/17"
    assert parse_tile_path("tile/1/x001/x234/067.p/17") == Tile(1, 1234067, 17)
    assert parse_tile_path("tile/entries/273.p/112") == Tile(ENTRIES, 273, 112)
    assert tile_path(0, 5, 256) == "tile/0/005"


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/1",  # not zero-padded
        "tile/0/0001",
        "tile/00/000",  # leading zero in level
        "tile/64/000",  # level beyond 63
        "tile/0/x000/001",  # non-canonical leading group
        "tile/0/001/002",  # inner group without x
        "tile/0/x001",  # last group with x
        "tile/0/000.p/0",
        "tile/0/000.p/256",
        "tile/0/000.p/07",
        "tile/0/000.p/",
        "tile/0/000.p",
        "tile/data/000",
        "tile/entries/../000",
        "tile/0/-01",
        "tile/0/000/",
        "/tile/0/000",
        "tile/0/x001/x002/x003/x004/x005/x006/x007/008",
        "tile/0/٠٠٠",  # non-ASCII digits
        "tile",
        "",
    ],
)
def test_path_traversal_and_non_canonical_tile_paths_are_refused(path: str) -> None:
    with pytest.raises(TileFormatError):
        parse_tile_path(path)


def test_tiles_between_lists_only_new_or_grown_tiles() -> None:
    assert [t.path() for t in tiles_between(300, 300)] == []
    assert [t.path() for t in tiles_between(256, 300)] == ["tile/0/001.p/44"]
    grown = [t.path() for t in tiles_between(300, 512)]
    assert grown == ["tile/0/001", "tile/1/000.p/2"]
    assert [t.path() for t in entry_bundles_between(300, 512)] == ["tile/entries/001"]


def test_skylight_tiles_hash_to_the_cosigned_root() -> None:
    tree = SKY["tree"]
    size = tree["size"]
    tiles = {path: base64.b64decode(b) for path, b in SKY["tiles_b64"].items()}
    assert sorted(tiles) == sorted(t.path() for t in hash_tiles(size))
    leaves = [leaf_hash(b"record %d" % i) for i in range(size)]
    level0 = split_hashes(tiles["tile/0/000"], 256) + split_hashes(tiles["tile/0/001.p/44"], 44)
    assert level0 == leaves
    assert split_hashes(tiles["tile/1/000.p/1"], 1) == [root(leaves[:256])]
    want_root = base64.b64decode(tree["root_b64"])
    th = TileHashes(size, lambda t: tiles[t.path()])
    assert th.root() == want_root == root(leaves)
    # The mirror's cosigned checkpoint commits to that root.
    mirror = VerifierKey.parse(tree["mirror_vkey"])
    text, _ = split_note(tree["mirror_checkpoint"])
    cp = parse(text)
    assert (cp.origin, cp.size, cp.root_hash) == (tree["origin"], size, want_root)
    assert [
        c.key for c in verify_cosignatures(tree["mirror_checkpoint"], [mirror], now=SKY_NOW)
    ] == [mirror]
    # Proofs computed from the tiles verify against it.
    for index in (0, 1, 255, 256, 299):
        proof = th.inclusion_proof(index)
        verify_inclusion(leaves[index], index, size, proof, want_root)
    for old in (1, 44, 255, 256, 257, 299):
        verify_consistency(old, size, th.consistency_proof(old), root(leaves[:old]), want_root)


def test_tiles_built_in_memory_match_skylight() -> None:
    leaves = [leaf_hash(b"record %d" % i) for i in range(300)]
    built = {t.path(): data for t, data in tiles_from_leaf_hashes(leaves).items()}
    assert built == {path: base64.b64decode(b) for path, b in SKY["tiles_b64"].items()}


def test_tile_reader_gets_a_short_tile_and_refuses_it() -> None:
    leaves = [leaf_hash(b"%d" % i) for i in range(300)]
    tiles = tiles_from_leaf_hashes(leaves)
    th = TileHashes(300, lambda t: tiles[t][:-1])
    with pytest.raises(TileFormatError):
        th.root()


def test_proofs_from_tiles_across_three_levels() -> None:
    size = 256 * 256 + 300
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    tiles = tiles_from_leaf_hashes(leaves)
    reads: list[Tile] = []

    def read(t: Tile) -> bytes:
        reads.append(t)
        return tiles[t]

    th = TileHashes(size, read)
    r = th.root()
    assert r == root(leaves)
    assert len(reads) == len(set(reads))  # each tile read once
    for index in (0, 65535, 65536, size - 1):
        verify_inclusion(leaves[index], index, size, th.inclusion_proof(index), r)
    for old in (1, 256, 65536, 65537, size - 1):
        verify_consistency(old, size, th.consistency_proof(old), root(leaves[:old]), r)
    with pytest.raises(ProofFormatError):
        th.subtree(1, 3)


def test_entry_bundle_round_trip_and_truncation() -> None:
    entries = [b"", b"a", b"x" * 300]
    data = encode_entry_bundle(entries)
    assert parse_entry_bundle(data, 3) == entries
    for bad, width in ((data[:-1], 3), (data + b"\x00", 3), (data, 4), (data, 2)):
        with pytest.raises(TileFormatError):
            parse_entry_bundle(bad, width)
    with pytest.raises(TileFormatError):
        encode_entry_bundle([b"x" * 65536])


def _audit_fixture(size: int) -> tuple[dict[str, bytes], bytes]:
    entries = [b"entry %d" % i for i in range(size)]
    files = {t.path(): data for t, data in tiles_from_leaf_hashes(
        [leaf_hash(e) for e in entries]).items()}  # fmt: skip
    for n in range(0, size, 256):
        chunk = entries[n : n + 256]
        files[entries_path(n // 256, len(chunk))] = encode_entry_bundle(chunk)
    return files, root([leaf_hash(e) for e in entries])


def _readers(files: dict[str, bytes]) -> tuple[Callable[[Tile], bytes], Callable[[Tile], bytes]]:
    def read(tile: Tile) -> bytes:
        try:
            return files[tile.path()]
        except KeyError:
            raise TileFormatError(f"{tile.path()} missing") from None

    return read, read


@pytest.mark.parametrize("size", [0, 1, 255, 256, 300, 65536 + 300])
def test_audit_of_intact_tiles_finds_nothing(size: int) -> None:
    files, expected = _audit_fixture(size)
    read_tile, read_bundle = _readers(files)
    assert audit_tiles(size, expected, read_tile, read_bundle) == []
    assert audit_tiles(size, expected, read_tile, read_bundle, start=size // 2) == []


def test_audit_finds_a_flipped_byte_in_every_kind_of_tile() -> None:
    """Any byte of any tile or bundle of the tree changed: the audit names a problem."""
    size = 65536 + 300
    files, expected = _audit_fixture(size)
    rng = random.Random(7)
    low = sorted(p for p in files if p.startswith(("tile/0/", "tile/entries/")))
    for path in sorted(set(files) - set(low)) + low[:2] + low[-2:] + rng.sample(low, 4):
        damaged = dict(files)
        data = bytearray(files[path])
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        damaged[path] = bytes(data)
        read_tile, read_bundle = _readers(damaged)
        problems = audit_tiles(size, expected, read_tile, read_bundle)
        assert problems, f"flipped byte in {path} not found"


def test_audit_reports_missing_tiles_and_a_wrong_root() -> None:
    files, expected = _audit_fixture(300)
    del files["tile/0/000"]
    read_tile, read_bundle = _readers(files)
    assert [p.path for p in audit_tiles(300, expected, read_tile, read_bundle)] == ["tile/0/000"]
    files, expected = _audit_fixture(300)
    read_tile, read_bundle = _readers(files)
    problems = audit_tiles(300, bytes(32), read_tile, read_bundle)
    assert len(problems) == 1 and "signed root" in problems[0].message
