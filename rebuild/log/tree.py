"""Read audit log entries through the tlog-tiles read API, checked against the tree.

Decides whether entry bytes the log serves are the ones its signed
checkpoint commits to: the hash tiles must reproduce the checkpoint's root,
and each entry bundle must hash to the subtree those tiles say it is. A
log that serves other entries than it signed is caught here (a
:class:`~rebuild.log.monitor.ForkError`), never acted on. Reading and
verifying only; no state. Used by the fleet's watcher and publisher and by
``rebuild log get`` / ``log find``.
"""

from __future__ import annotations

from collections.abc import Iterator

from rebuild.log.client import LogClient, NotFoundError
from rebuild.log.monitor import ForkError
from verify import merkle
from verify.checkpoint import Checkpoint
from verify.errors import VerifyError
from verify.tiles import ENTRIES, TILE_WIDTH, Tile, TileHashes, parse_entry_bundle, tile_for


class TreeReader:
    """Entries and subtree hashes of one checkpoint's tree, read from tiles."""

    def __init__(self, client: LogClient, checkpoint: Checkpoint) -> None:
        self.client = client
        self.size = checkpoint.size
        self.hashes = TileHashes(checkpoint.size, client.tile)
        try:
            if self.hashes.root() != checkpoint.root_hash:
                raise ForkError(
                    f"{client.url}: the log's tiles do not reproduce the root it signed "
                    f"for size {checkpoint.size}"
                )
        except VerifyError as e:
            raise ForkError(f"{client.url}: unusable tiles for size {self.size}: {e}") from None

    def _bundle(self, n: int) -> list[bytes]:
        tile = tile_for(self.size, ENTRIES, n)
        try:
            data = self.client.tile(tile)
            entries = parse_entry_bundle(data, tile.width)
        except NotFoundError:
            if not tile.is_partial:
                raise
            # A partial bundle may be gone once the full one exists (tlog-tiles
            # allows it); its entries are the full bundle's first ones.
            full = Tile(ENTRIES, n)
            entries = parse_entry_bundle(self.client.tile(full), TILE_WIDTH)[: tile.width]
        except VerifyError as e:
            raise ForkError(f"{self.client.url}: entry bundle {n}: {e}") from None
        start = n * TILE_WIDTH
        expected = self.hashes.subtree(start, start + tile.width)
        if merkle.root([merkle.leaf_hash(e) for e in entries]) != expected:
            raise ForkError(
                f"{self.client.url}: entry bundle {n} does not hash to the tree the log signed"
            )
        return entries

    def entries(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        """``(index, entry)`` for ``start <= index < min(end, size)``, each one verified."""
        end = min(end, self.size)
        index = start
        while index < end:
            n = index // TILE_WIDTH
            bundle = self._bundle(n)
            for i in range(index - n * TILE_WIDTH, len(bundle)):
                if n * TILE_WIDTH + i >= end:
                    return
                yield n * TILE_WIDTH + i, bundle[i]
            index = (n + 1) * TILE_WIDTH

    def entry(self, index: int) -> bytes:
        for _, data in self.entries(index, index + 1):
            return data
        raise NotFoundError(f"{self.client.url}: no entry {index} in a tree of size {self.size}")
