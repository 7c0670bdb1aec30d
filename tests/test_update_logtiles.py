"""Consistency proofs from untrusted tile sources (rebuild.updater.logtiles), over real HTTPS.

The trees are built in memory with the project's own RFC 6962 code (70,000
leaves: three tile levels); the tile sources are real aiohttp servers on
127.0.0.1 with ``trustme`` certificates, serving exactly the bytes a
tlog-tiles server would, or tampered ones. The whole story with real ``log
serve``, witnesses, mirrors and ``rebuild update`` is in
tests/test_update_catchup.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from rebuild.errors import StorageError
from rebuild.updater.fetch import FetchOptions
from rebuild.updater.logtiles import (
    CatchUp,
    fetch_consistency_blocking,
    prove,
    tile_sources,
    tiles_needed,
)
from rebuild.updater.mirror import LogTiles, copy_log_tiles
from tests.updaterutil import TLS, ThreadServer, dead_url
from verify.errors import ProofError
from verify.gate import ConsistencyNeed
from verify.merkle import leaf_hash, root, verify_consistency
from verify.tiles import Tile, tiles_between, tiles_from_leaf_hashes

N = 70_000
LEAVES = [leaf_hash(f"entry {i}".encode()) for i in range(N + 512)]
ORIGIN = "log.example/tiles"


def _tiles(leaves: list[bytes]) -> dict[str, bytes]:
    return {t.path(): data for t, data in tiles_from_leaf_hashes(leaves).items()}


HONEST = _tiles(LEAVES[:N])


def _need(old: int, new: int = N, leaves: list[bytes] = LEAVES) -> ConsistencyNeed:
    return ConsistencyNeed(ORIGIN, old, new, root(leaves[:new]))


class TileServer:
    """Serves a dict of tile paths over HTTPS; counts requests."""

    def __init__(self, tls: TLS, tiles: dict[str, bytes]) -> None:
        self.tiles = tiles
        self.requests: list[str] = []

        async def get(request: web.Request) -> web.Response:
            path = request.match_info["path"]
            self.requests.append(path)
            if path not in self.tiles:
                raise web.HTTPNotFound()
            return web.Response(body=self.tiles[path])

        app = web.Application()
        app.router.add_get("/{path:.*}", get)
        self.server = ThreadServer(app, tls.server_context())
        self.url = self.server.url


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLS:
    return TLS(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def servers(tls: TLS) -> Iterator[list[TileServer]]:
    made: list[TileServer] = []
    yield made
    for s in made:
        s.server.stop()


def _serve(tls: TLS, servers: list[TileServer], tiles: dict[str, bytes]) -> TileServer:
    s = TileServer(tls, tiles)
    servers.append(s)
    return s


def _fetch(tls: TLS, sources: list[str], need: ConsistencyNeed, **kw: bool) -> CatchUp:
    return fetch_consistency_blocking(sources, need, FetchOptions(ca_bundle=tls.ca_bundle, **kw))


@pytest.mark.parametrize("old", [1, 255, 256, 257, 4097, 65535, 65536, 65537, N - 1])
def test_a_skipped_range_is_proved_from_the_tiles_at_every_level(
    tls: TLS, servers: list[TileServer], old: int
) -> None:
    src = _serve(tls, servers, HONEST)
    need = _need(old)
    got = _fetch(tls, [src.url], need)
    assert got.proof is not None, got.as_json()
    verify_consistency(old, N, list(got.proof.hashes), root(LEAVES[:old]), need.new_root)
    assert got.source == src.url and [s.status for s in got.sources] == ["ok"]
    # exactly the tiles the dry run listed, each read once, and only a handful
    assert sorted(src.requests) == sorted(t.path() for t in tiles_needed(need))
    assert len(src.requests) <= 12


def test_tampered_tiles_give_no_proof_and_the_next_source_is_tried(
    tls: TLS, servers: list[TileServer]
) -> None:
    need = _need(4097)
    tampered = dict(HONEST)
    for t in tiles_needed(need):  # one flipped bit in every tile the proof reads
        data = bytearray(tampered[t.path()])
        data[7] ^= 1
        tampered[t.path()] = bytes(data)
    bad = _serve(tls, servers, tampered)
    alone = _fetch(tls, [bad.url], need)
    assert alone.proof is None
    assert [s.status for s in alone.sources] == ["invalid"]
    assert "do not prove size 4097" in (alone.sources[0].error or "")
    good = _serve(tls, servers, HONEST)
    got = _fetch(tls, [bad.url, good.url], need)
    assert got.proof is not None and got.source == good.url
    assert [s.status for s in got.sources] == ["invalid", "ok"]


def test_a_single_tampered_tile_is_enough_to_refuse_the_source(
    tls: TLS, servers: list[TileServer]
) -> None:
    need = _need(65537)
    for t in tiles_needed(need):
        tampered = dict(HONEST)
        data = bytearray(tampered[t.path()])
        data[-1] ^= 0x80
        tampered[t.path()] = bytes(data)
        src = _serve(tls, servers, tampered)
        got = _fetch(tls, [src.url], need)
        assert got.proof is None and got.sources[0].status == "invalid", t.path()


def test_another_trees_tiles_give_no_proof_for_the_signed_root(
    tls: TLS, servers: list[TileServer]
) -> None:
    other = [leaf_hash(b"a fork's first entry"), *LEAVES[1:N]]
    src = _serve(tls, servers, _tiles(other))
    got = _fetch(tls, [src.url], _need(300))
    assert got.proof is None and got.sources[0].status == "invalid"


def test_a_forked_logs_own_tiles_prove_its_tree_and_the_gate_sees_the_fork(
    tls: TLS, servers: list[TileServer]
) -> None:
    """The fork's tiles reproduce its signed root; the stored (honest) root is no prefix."""
    fork = [leaf_hash(b"a fork's first entry"), *LEAVES[1:N]]
    src = _serve(tls, servers, _tiles(fork))
    need = _need(300, leaves=fork)
    got = _fetch(tls, [src.url], need)
    assert got.proof is not None
    with pytest.raises(ProofError):
        verify_consistency(300, N, list(got.proof.hashes), root(LEAVES[:300]), need.new_root)


def test_a_dead_source_fails_over(tls: TLS, servers: list[TileServer]) -> None:
    good = _serve(tls, servers, HONEST)
    got = _fetch(tls, [dead_url(), good.url], _need(1000))
    assert got.proof is not None
    assert [s.status for s in got.sources] == ["connection", "ok"]


def test_plain_http_is_refused_without_the_flag_and_never_to_other_hosts(tls: TLS) -> None:
    got = _fetch(tls, ["http://127.0.0.1:9/", "http://log.example/"], _need(10))
    assert [s.status for s in got.sources] == ["refused", "refused"]
    assert "--insecure-loopback" in (got.sources[0].error or "")
    got = _fetch(tls, ["http://log.example/"], _need(10), insecure_loopback=True)
    assert got.sources[0].status == "refused"


def test_an_oversized_tile_is_cut_off(tls: TLS, servers: list[TileServer]) -> None:
    need = _need(1000)
    big = dict(HONEST)
    first = tiles_needed(need)[0].path()
    big[first] = big[first] + b"x" * 100_000
    src = _serve(tls, servers, big)
    got = _fetch(tls, [src.url], need)
    assert got.proof is None and got.sources[0].status == "too-large"


def test_a_deleted_partial_tile_is_cut_from_its_full_tile(
    tls: TLS, servers: list[TileServer]
) -> None:
    """tlog-tiles lets a log delete a partial tile once it is full: the log grew to 512."""
    served = _tiles(LEAVES[:512])
    at_300 = _tiles(LEAVES[:300])
    served[Tile(1, 0, 1).path()] = at_300[Tile(1, 0, 1).path()]  # still partial at 512: kept
    assert Tile(0, 1, 44).path() not in served
    src = _serve(tls, servers, served)
    need = _need(100, 300)
    got = _fetch(tls, [src.url], need)
    assert got.proof is not None, got.as_json()
    assert Tile(0, 1, 44).path() in src.requests and Tile(0, 1).path() in src.requests
    verify_consistency(100, 300, list(got.proof.hashes), root(LEAVES[:100]), need.new_root)


def test_mirrors_log_prefixes_come_after_the_given_sources_once_each() -> None:
    assert tile_sources(
        ["https://log.example/"], ["https://m1.example/a/", "https://m2.example"]
    ) == [
        "https://log.example/",
        "https://m1.example/a/log",
        "https://m2.example/log",
    ]
    assert tile_sources(["https://m.example/log"], ["https://m.example"]) == [
        "https://m.example/log"
    ]


def test_the_tiles_a_proof_reads_depend_on_the_sizes_only() -> None:
    need = _need(4097)
    listed = tiles_needed(need)
    assert all(isinstance(t, Tile) for t in listed)
    assert tiles_needed(ConsistencyNeed(ORIGIN, 4097, N, hashlib.sha256(b"x").digest())) == listed


# -- rebuild mirror publish --log: the mirror's copy ---------------------------------
# The log is a dict reader here (the copy logic is what is tested); the command
# against a real ``log serve`` is in tests/test_update_catchup.py.


def _log(leaves: list[bytes], tiles: dict[str, bytes]) -> LogTiles:
    return LogTiles(lambda t: tiles[t.path()], len(leaves), root(leaves), "https://log.example")


def test_the_mirrors_copy_grows_by_the_new_tiles_only_and_proves_any_skipped_range(
    tmp_path: Path,
) -> None:
    first = copy_log_tiles(tmp_path, _log(LEAVES[:4097], _tiles(LEAVES[:4097])))
    assert (first.copied, first.present) == (len(list(tiles_between(0, 4097))), 0)
    second = copy_log_tiles(tmp_path, _log(LEAVES[:N], HONEST))
    assert second.copied == len(list(tiles_between(0, N))) - 16  # 16 full level-0 tiles were there
    need = _need(4097)
    local = {t: (tmp_path / "log" / t.path()).read_bytes() for t in tiles_needed(need)}
    proof = prove(need, local)
    verify_consistency(4097, N, list(proof.hashes), root(LEAVES[:4097]), need.new_root)


def test_a_log_serving_one_bad_interior_tile_cannot_fill_a_mirror(tmp_path: Path) -> None:
    """A full tile in the middle of the tree: the root alone would not show it."""
    bad = dict(HONEST)
    path = Tile(0, 100).path()
    bad[path] = bad[path][:-1] + bytes([bad[path][-1] ^ 1])
    with pytest.raises(StorageError, match=r"tile/0/100: does not hash to hash 100"):
        copy_log_tiles(tmp_path, _log(LEAVES[:N], bad))
    with pytest.raises(StorageError, match="another log"):
        copy_log_tiles(tmp_path / "other", _log(LEAVES[:N], _tiles([LEAVES[1], *LEAVES[1:N]])))
