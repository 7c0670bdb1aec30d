"""Consistency proofs an updater computes itself from the log's tiles (untrusted sources).

A bundle is made once, when a release is published, with the consistency
proof from one earlier tree size; every updater has its own stored size. One
that skipped a release, or accepted a newer checkpoint through another
package, needs a proof no bundle carries. Like Go's sumdb client, it
computes the proof from the log's C2SP tlog-tiles, which are static files
any web server, CDN or mirror can serve, and which need no trust: the proof
is checked against signed roots.

:func:`fetch_consistency` answers a :class:`verify.gate.ConsistencyNeed`
(the gate's "I need the proof from size m to size n, whose root is R"). For
each tile source, in order, until one gives a proof:

1. the URL is held to the mirrors' transport rules (HTTPS; plain http only
   to loopback with ``insecure_loopback``; the update's timeouts, deadline,
   no redirects, no proxy from the environment);
2. the hash tiles the proof needs are listed without reading any (a dry run
   of the computation: which tiles it reads depends on the sizes only), at
   most :data:`MAX_TILES`;
3. they are fetched concurrently, each capped at its exact size (a partial
   tile the source no longer has is cut from its full tile, as tlog-tiles
   allows a log to delete partial tiles once the full one exists);
4. the proof from ``m`` to ``n`` and the tiles' own root of size ``m`` are
   computed, and the proof is checked against that root and the bundle's
   signed root ``R``. Tiles that fail (tampered, truncated, another log's,
   another tree's) give no proof: the source is reported ``invalid`` and the
   next one is tried, so bad tiles cannot pass for a fork either.

The proof that passes step 4 is the signed tree's own; the gate then checks
it against the root it accepted before. When the log really forked (the
updater accepted a tree whose prefix is not this one's), that check fails
and the gate keeps both checkpoints as evidence. Nothing here decides trust.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

from rebuild.updater.fetch import FetchOptions, MirrorError, MirrorSession, check_mirror_url, join
from verify.bundle import ConsistencyProof
from verify.errors import VerifyError
from verify.gate import ConsistencyNeed
from verify.merkle import HASH_SIZE, verify_consistency
from verify.tiles import FULL_TILE_BYTES, Tile, TileHashes, TileReader

MAX_TILES: Final = 512
"""More tiles than any proof between two sizes below 2**63 reads (a few per level)."""
MAX_SOURCES: Final = 64
MIRROR_LOG_PREFIX: Final = "log"
"""Where ``rebuild mirror publish --log`` puts the log's tiles in a mirror."""
DEFAULT_DEADLINE: Final = 120.0


@dataclass
class SourceReport:
    """What one tile source did: ``ok``, or the failure kind and message."""

    url: str
    status: str = "ok"  # ok | invalid | a MirrorError kind (refused, tls, http, timeout, ...)
    error: str | None = None
    tiles: int = 0
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "status": self.status,
            "error": self.error,
            "tiles": self.tiles,
            "seconds": round(self.seconds, 4),
        }


@dataclass
class CatchUp:
    """The answer to one ConsistencyNeed: a proof (from ``source``) or none, and every try."""

    need: ConsistencyNeed
    proof: ConsistencyProof | None = None
    source: str | None = None
    sources: list[SourceReport] = field(default_factory=list)

    def summary(self) -> str:
        """One sentence for a report: where the proof came from, or why none did."""
        if self.proof is not None:
            return (
                f"consistency proof from size {self.need.old_size} to {self.need.new_size} "
                f"computed from the tiles at {self.source}"
            )
        if not self.sources:
            return "no tile source was given"
        tried = "; ".join(f"{s.url}: {s.status}" for s in self.sources)
        return f"no tile source gave the consistency proof ({tried})"

    def as_json(self) -> dict[str, Any]:
        return {
            "needed": self.need.to_dict(),
            "proof": self.proof is not None,
            "source": self.source,
            "sources": [s.as_json() for s in self.sources],
        }


ADVICE: Final = (
    "add a tile source of the log: --log URL (the log's tlog-tiles URL, or a mirror's "
    f"{MIRROR_LOG_PREFIX}/ prefix) or logs = [...] in the policy"
)
"""What an updater is told when no tile source could give the proof."""


def tiles_needed(need: ConsistencyNeed) -> list[Tile]:
    """The hash tiles :func:`prove` reads for ``need``, found without reading any.

    Raises VerifyError for sizes no proof exists between.
    """
    seen: list[Tile] = []

    def record(tile: Tile) -> bytes:
        seen.append(tile)
        return bytes(tile.width * HASH_SIZE)

    _compute(need, record)
    return sorted(set(seen))


def _compute(need: ConsistencyNeed, read: TileReader) -> tuple[list[bytes], bytes]:
    tiles = TileHashes(need.new_size, read)
    return tiles.consistency_proof(need.old_size), tiles.subtree(0, need.old_size)


def prove(need: ConsistencyNeed, tiles: dict[Tile, bytes]) -> ConsistencyProof:
    """The proof from ``need.old_size`` to ``need.new_size``, checked against ``need.new_root``.

    ``tiles`` holds the bytes of every tile :func:`tiles_needed` lists.
    Raises VerifyError when the tiles do not prove it (wrong length, or a
    proof that does not lead to the signed root from the tiles' own root
    of the old size).
    """
    hashes, old_root = _compute(need, tiles.__getitem__)
    verify_consistency(need.old_size, need.new_size, hashes, old_root, need.new_root)
    return ConsistencyProof(need.old_size, tuple(hashes))


async def _tile(session: MirrorSession, base: str, tile: Tile) -> bytes:
    try:
        return await session.get_bytes(join(base, tile.path()), tile.width * HASH_SIZE)
    except MirrorError as e:
        if e.status != 404 or not tile.is_partial:
            raise
        missing = e
    try:
        full = await session.get_bytes(join(base, tile.full().path()), FULL_TILE_BYTES)
    except MirrorError as e:
        why = f"HTTP {e.status}" if e.status is not None else e.kind
        raise MirrorError(e.kind, f"{missing} (and its full tile: {why})", e.status) from None
    if len(full) != FULL_TILE_BYTES:
        raise MirrorError(
            "invalid", f"{base}/{tile.full().path()}: {len(full)} bytes, not a full tile"
        )
    return full[: tile.width * HASH_SIZE]


async def _from_source(
    session: MirrorSession, base: str, need: ConsistencyNeed, wanted: list[Tile]
) -> ConsistencyProof:
    results = await asyncio.gather(
        *(_tile(session, base, t) for t in wanted), return_exceptions=True
    )
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return prove(need, dict(zip(wanted, cast(list[bytes], results), strict=True)))


def _unique(urls: Iterable[str]) -> list[str]:
    out: list[str] = []
    for u in urls:
        if u.rstrip("/") not in (o.rstrip("/") for o in out):
            out.append(u)
    return out[:MAX_SOURCES]


def tile_sources(logs: Sequence[str], mirrors: Sequence[str]) -> list[str]:
    """The sources to try: the given logs first, then each mirror's ``log/`` prefix."""
    return _unique([*logs, *(m.rstrip("/") + "/" + MIRROR_LOG_PREFIX for m in mirrors)])


async def fetch_consistency(
    session: MirrorSession, sources: Sequence[str], need: ConsistencyNeed
) -> CatchUp:
    """Try each source in order until one's tiles prove ``need``; report every try.

    Never raises for a source's failure (it is in the report); the caller
    hands ``CatchUp.proof`` (None when no source gave one) to the gate.
    """
    result = CatchUp(need)
    try:
        wanted = tiles_needed(need)
    except VerifyError as e:  # sizes the gate would never ask for
        result.sources.append(SourceReport("-", "invalid", f"no proof for {need}: {e}"))
        return result
    if len(wanted) > MAX_TILES:  # pragma: no cover (cannot happen below 2**63)
        raise AssertionError(f"a proof needing {len(wanted)} tiles")
    for url in _unique(sources):
        report = SourceReport(url)
        t0 = time.monotonic()
        try:
            base = check_mirror_url(url, session.options.insecure_loopback, "tile source")
            proof = await _from_source(session, base, need, wanted)
        except MirrorError as e:
            report.status, report.error = e.kind, str(e)
        except VerifyError as e:
            report.status = "invalid"
            report.error = (
                f"{url}: its tiles do not prove size {need.old_size} consistent with the "
                f"bundle's checkpoint (size {need.new_size}): {e}"
            )
        else:
            report.tiles = len(wanted)
            result.proof, result.source = proof, url
        report.seconds = time.monotonic() - t0
        result.sources.append(report)
        if result.proof is not None:
            break
    return result


def fetch_consistency_blocking(
    sources: Sequence[str],
    need: ConsistencyNeed,
    options: FetchOptions,
    deadline: float = DEFAULT_DEADLINE,
) -> CatchUp:
    """:func:`fetch_consistency` for callers without an event loop (``rebuild gate``)."""

    async def run() -> CatchUp:
        async with MirrorSession(options, time.monotonic() + deadline) as session:
            return await fetch_consistency(session, sources, need)

    return asyncio.run(run())


__all__ = [
    "ADVICE",
    "MIRROR_LOG_PREFIX",
    "CatchUp",
    "SourceReport",
    "fetch_consistency",
    "fetch_consistency_blocking",
    "prove",
    "tile_sources",
    "tiles_needed",
]
