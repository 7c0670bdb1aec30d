"""The log's HTTP server: write, proof and lookup endpoints, and the tile API.

Two halves. The :class:`Sequencer` owns the store, the key and the
witnesses: it queues checked entries, integrates them in batches on a single
storage thread (:class:`rebuild.log.store.LogStore`) and completes each add
only after the batch holding it is durable; a publisher task then gets the
newest signed checkpoint cosigned by the policy's witnesses (when there is a
policy) and publishes it as ``checkpoint``. The :class:`HttpApi` parses
requests, checks entries and answers; it reaches the sequencer through the
:class:`Backend` interface, either in the same process or, with front-end
processes (:mod:`rebuild.log.frontend`), over a socket pair, so HTTP
parsing and entry checks use every core while one process sequences.

The read API is C2SP tlog-tiles, served from the same files a static web
server would serve, with the caching the spec asks for. This module never
decides what is trusted and never serves a tile beyond the committed tree.

Endpoints::

    GET  /checkpoint                       published checkpoint (no-cache)
    GET  /tile/<L>/<N>[.p/<W>]             hash tiles (full: immutable)
    GET  /tile/entries/<N>[.p/<W>]         entry bundles (full: immutable)
    POST /add[?wait=1]                     add a DSSE envelope -> JSON
    POST /add-bundle                       add up to 256 envelopes (entry-bundle framing)
    GET  /proof/<index>                    tlog-proof@v1 against the published checkpoint
    GET  /lookup/sha256/<hex>[?cursor=N][&keyid=<8 hex>...]
                                           JSON indexes of entries with that subject, paged
    GET  /lookup/package/<name>[?cursor=N] JSON indexes of statements about that package, paged
    GET  /lookup/leaf/<hex>                JSON index of the entry with that leaf hash
    GET  /status                           JSON: sizes, checkpoint age, witnesses, pending work
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

from aiohttp import web

from rebuild.errors import StorageError
from rebuild.httpserve import ConnectionLimits, RateLimitedLog, read_body
from rebuild.log.entry import (
    MAX_ENTRY_SIZE,
    PACKAGE_NAME,
    EntryError,
    EntryTooLargeError,
    check_entry,
    package_key,
)
from rebuild.log.store import MAX_BATCH, LogStore, Pending, Sequenced
from rebuild.log.witnessing import WitnessPool
from verify import merkle
from verify.cosignature import MAX_CLOCK_SKEW, verify_cosignatures
from verify.errors import VerifyError
from verify.parsing import parse_decimal as decode_decimal
from verify.tiles import ENTRIES, TILE_WIDTH, parse_tile_path, tile_for
from verify.tlogproof import TlogProof

log = logging.getLogger(__name__)

IMMUTABLE: Final = "public, max-age=31536000, immutable"
SHORT_LIVED: Final = "public, max-age=60"
NO_CACHE: Final = "no-cache"
MAX_BUNDLE_BYTES: Final = 4 * 1024 * 1024
MAX_QUEUED_BYTES: Final = 256 * 1024 * 1024  # beyond this, POST /add answers 503
MAX_WAIT_SECONDS: Final = 60.0
WITNESS_RETRY_SECONDS: Final = 1.0
MAX_WITNESS_RETRY_SECONDS: Final = 30.0  # back-off ceiling while witnesses fail
RECOSIGN_RETRY_SECONDS: Final = 30.0


class LogBusyError(StorageError):
    """The sequencer's queue is full; the client should retry later (HTTP 503)."""


class LogClosingError(StorageError):
    """The log is shutting down (HTTP 503)."""


@dataclass(frozen=True)
class ServerOptions:
    batch_ms: float = 0.0
    wait_timeout: float = 30.0
    # With witnesses: ask them to cosign the unchanged checkpoint again once
    # the newest published cosignature is this old (0: never), so an idle
    # log's checkpoint stays fresh for updaters that refuse stale ones.
    recosign_interval: float = 3600.0
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)


class Backend(Protocol):
    """What the HTTP API needs from the sequencer, wherever it runs."""

    @property
    def tile_dir(self) -> Path: ...

    @property
    def published_size(self) -> int: ...

    def submit(self, entries: Sequence[Pending]) -> asyncio.Future[int]:
        """Queue one request's entries; the future gives the first index once durable.

        The entries get consecutive indexes. Fails with :class:`LogBusyError`,
        :class:`LogClosingError` or :class:`StorageError`.
        """
        ...

    async def committed_size(self, fresh: bool) -> int:
        """The committed tree size (``fresh``: not a cached, possibly older value)."""
        ...

    async def published_note(self) -> bytes: ...

    async def wait_published(self, size: int, timeout: float) -> bool: ...

    async def proof_text(self, index: int) -> str | None: ...

    async def lookup_subject(
        self, digest: bytes, key_ids: Sequence[bytes], cursor: int
    ) -> tuple[list[int], int | None]:
        """One page of indexes (ascending) and the next page's cursor (None: complete)."""
        ...

    async def lookup_leaf(self, digest: bytes) -> int | None: ...

    async def status(self) -> dict[str, object]:
        """What ``GET /status`` answers (see :meth:`Sequencer.status`)."""
        ...


class _Group:
    """One request's entries in the queue: completes when all of them are durable."""

    __slots__ = ("done", "error", "first", "remaining")

    def __init__(self, n: int, done: Callable[[int | StorageError], None]) -> None:
        self.remaining = n
        self.first = -1
        self.error: StorageError | None = None
        self.done = done

    def settle(self, index: int | StorageError) -> None:
        if isinstance(index, StorageError):
            self.error = self.error or index
        elif self.first < 0:
            self.first = index  # the queue is FIFO: the first to settle is the lowest
        self.remaining -= 1
        if self.remaining == 0:
            self.done(self.error if self.error is not None else self.first)


class SequencerObserver(Protocol):
    """Told of each integrated batch and each witnessing round (metrics)."""

    def batch(self, entries: int, seconds: float) -> None: ...

    def witnessed(self, cosigned: Sequence[str], quorum_met: bool) -> None: ...


class Sequencer:
    """One log directory: owns the store, the sequencer task and the publisher."""

    def __init__(
        self, store: LogStore, witnesses: WitnessPool | None, options: ServerOptions
    ) -> None:
        self.store = store
        self.witnesses = witnesses
        self.options = options
        self._queue: list[tuple[Pending, _Group]] = []
        self._queued_bytes = 0
        self._wakeup = asyncio.Event()
        self._committed = asyncio.Event()
        self._published = asyncio.Event()
        self._storage = ThreadPoolExecutor(1, thread_name_prefix="log-storage")
        self._tasks: list[asyncio.Task[None]] = []
        self._published_size = store.published_size
        self._published_note = b""
        self._closing = False
        self._publish_failed = False
        self._errors = RateLimitedLog(log)
        self._listeners: list[Callable[[int, int], None]] = []
        self.observer: SequencerObserver | None = None  # --metrics (rebuild.metrics)
        # the size whose checkpoint waits for the witness quorum (None: none waits)
        self._quorum_failing: int | None = None
        self._published_at: float | None = None  # wall clock of the last publication

    @property
    def tile_dir(self) -> Path:
        return self.store.dir

    @property
    def published_size(self) -> int:
        return self._published_size

    def on_state(self, listener: Callable[[int, int], None]) -> None:
        """Call ``listener(committed_size, published_size)`` after every change."""
        self._listeners.append(listener)
        listener(self.store.size, self._published_size)

    def off_state(self, listener: Callable[[int, int], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener(self.store.size, self._published_size)

    # --- lifecycle --------------------------------------------------------

    async def start(self) -> None:
        """Publish what is committed (when no witnesses gate it), start the tasks."""
        loop = asyncio.get_running_loop()
        if self.witnesses is None:
            await loop.run_in_executor(self._storage, self._publish_latest)
        self._refresh_published()
        self._tasks.append(asyncio.create_task(self._sequencer()))
        self._tasks.append(asyncio.create_task(self._publisher()))
        self._committed.set()

    def stop_accepting(self) -> None:
        self._closing = True

    async def close(self) -> None:
        """Stop after the batch in flight; fail whatever is still queued."""
        self._closing = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        closing = LogClosingError("log server is shutting down")
        for _, group in self._queue:
            group.settle(closing)
        self._queue.clear()
        if self.witnesses is not None:
            await self.witnesses.close()
        self._storage.shutdown(wait=True)

    def _refresh_published(self) -> None:
        with contextlib.suppress(StorageError):
            self._published_note = self.store.published_note()
        if self.store.published_size != self._published_size or self._published_at is None:
            self._published_at = self._publication_time()
        self._published_size = self.store.published_size
        self._published.set()
        self._published = asyncio.Event()
        self._changed()

    def _publication_time(self) -> float | None:
        """When the published checkpoint file was written (survives restarts)."""
        try:
            return (self.store.dir / "checkpoint").stat().st_mtime
        except OSError:
            return None

    # --- sequencing -------------------------------------------------------

    def add(self, entries: Sequence[Pending], done: Callable[[int | StorageError], None]) -> None:
        """Queue one request's entries; ``done`` gets the first index or the error.

        Raises :class:`LogBusyError` or :class:`LogClosingError` before
        queueing anything.
        """
        if self._closing:
            raise LogClosingError("log server is shutting down")
        size = sum(len(p.data) for p in entries)
        if self._queued_bytes + size > MAX_QUEUED_BYTES:
            raise LogBusyError("log is overloaded; retry later")
        group = _Group(len(entries), done)
        self._queue.extend((p, group) for p in entries)
        self._queued_bytes += size
        self._wakeup.set()

    def submit(self, entries: Sequence[Pending]) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def done(result: int | StorageError) -> None:
            if fut.done():
                return
            if isinstance(result, StorageError):
                fut.set_exception(result)
            else:
                fut.set_result(result)

        try:
            self.add(entries, done)
        except StorageError as e:
            fut.set_exception(e)
        return fut

    async def _sequencer(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            if self.options.batch_ms > 0:
                await asyncio.sleep(self.options.batch_ms / 1000)
            batch = self._queue[:MAX_BATCH]
            del self._queue[:MAX_BATCH]
            self._queued_bytes -= sum(len(p.data) for p, _ in batch)
            if not self._queue:
                self._wakeup.clear()
            if not batch:
                continue
            t0 = loop.time()
            try:
                results = await loop.run_in_executor(
                    self._storage, self._integrate, [p for p, _ in batch]
                )
                ms = (loop.time() - t0) * 1000
                log.debug("batch of %d integrated in %.1f ms", len(batch), ms)
                if self.observer is not None:
                    self.observer.batch(len(batch), ms / 1000)
            except Exception as e:
                if not isinstance(e, StorageError):
                    log.exception("internal error integrating a batch")
                    e = StorageError(f"internal error: {type(e).__name__}")
                self._errors.error("batch of %d entries not integrated: %s", len(batch), e)
                for _, group in batch:
                    group.settle(e)
                continue
            if self.witnesses is None:
                self._refresh_published()
            else:
                self._committed.set()
                self._changed()
            for (_, group), r in zip(batch, results, strict=True):
                group.settle(r.index)

    def _integrate(self, batch: list[Pending]) -> list[Sequenced]:
        """On the storage thread: integrate, then publish when no witnesses gate it."""
        results = self.store.integrate(batch)
        # Committed: publishing may fail (a full disk) without failing the batch.
        self._publish_latest()
        return results

    def _publish_latest(self) -> bool:
        """Without witnesses, publish the newest signed checkpoint; False if that failed."""
        if self.witnesses is None:
            latest = self.store.latest
            if latest.size > self.store.published_size:
                try:
                    self.store.publish(latest.note, latest.size)
                except StorageError as e:
                    self._publish_failed = True
                    self._errors.error(
                        "publishing checkpoint %d failed (will retry): %s", latest.size, e
                    )
                    return False
        self._publish_failed = False
        return True

    # --- witnessing -------------------------------------------------------

    def _cosigned_at(self) -> float:
        """Wall-clock time of the newest witness cosignature on the published checkpoint.

        0 when there is none that verifies now: a cosignature dated in the
        future must not postpone the next re-cosigning (the checkpoint
        would go stale for updaters in the meantime).
        """
        if self.witnesses is None or not self._published_note:
            return 0.0
        keys = self.witnesses.policy.witness_keys()
        now = int(time.time()) + MAX_CLOCK_SKEW
        try:
            cosigs = verify_cosignatures(self._published_note, keys, now=now)
        except VerifyError:
            return 0.0
        return float(max((c.timestamp for c in cosigs), default=0))

    async def _republish(self) -> None:
        """Without witnesses: retry a publication that failed after its batch committed."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(WITNESS_RETRY_SECONDS)
            if self._publish_failed:
                ok = await loop.run_in_executor(self._storage, self._publish_latest)
                if ok:
                    self._refresh_published()

    async def _publisher(self) -> None:
        if self.witnesses is None:
            await self._republish()
            return
        loop = asyncio.get_running_loop()
        interval = self.options.recosign_interval
        due = self._cosigned_at() + interval  # wall clock: survives restarts
        retry = WITNESS_RETRY_SECONDS
        while True:
            recosign = False
            if interval > 0 and self._published_note:
                try:
                    await asyncio.wait_for(self._committed.wait(), max(0.0, due - time.time()))
                except TimeoutError:
                    recosign = True
            else:
                await self._committed.wait()
            self._committed.clear()
            signed = self.store.latest
            if not recosign and signed.size <= self._published_size and self._published_note:
                continue

            async def proof(old: int, new: int) -> list[bytes]:
                return await asyncio.to_thread(self.store.tile_hashes(new).consistency_proof, old)

            # An unchanged tree is sent with old size == size and an empty
            # proof (tlog-witness allows it): the witnesses cosign it again.
            cosigned = await self.witnesses.collect(signed.size, signed.note, proof)
            if self.observer is not None:
                self.observer.witnessed(cosigned.witnesses, cosigned.quorum_met)
            if not cosigned.quorum_met:
                if self._quorum_failing is None:
                    # once per streak: each witness's own trouble is logged by the pool
                    log.warning(
                        "checkpoint %d waits for the witness quorum (cosigned by %s); "
                        "retrying with back-off up to %g s",
                        signed.size,
                        ", ".join(cosigned.witnesses) or "none",
                        MAX_WITNESS_RETRY_SECONDS,
                    )
                self._quorum_failing = signed.size
                if recosign:
                    # the published checkpoint stays valid meanwhile; retry calmly
                    due = time.time() + min(interval, RECOSIGN_RETRY_SECONDS)
                    continue
                await asyncio.sleep(retry)
                retry = min(retry * 2, MAX_WITNESS_RETRY_SECONDS)
                self._committed.set()
                continue
            retry = WITNESS_RETRY_SECONDS
            self._quorum_failing = None

            try:
                await loop.run_in_executor(
                    self._storage, self._persist_cosigned, signed.size, cosigned.note
                )
            except StorageError as e:
                log.error("publishing checkpoint %d failed: %s", signed.size, e)
                await asyncio.sleep(WITNESS_RETRY_SECONDS)
                self._committed.set()
                continue
            what = "cosigned again" if recosign else "published"
            log.info(
                "%s checkpoint %d cosigned by %s", what, signed.size, ", ".join(cosigned.witnesses)
            )
            self._refresh_published()
            due = time.time() + interval

    def _persist_cosigned(self, size: int, note: str) -> None:
        self.store.record_cosigned(size, note)
        self.store.publish(note, size)

    # --- reads --------------------------------------------------------------

    async def committed_size(self, fresh: bool) -> int:
        return self.store.size

    async def published_note(self) -> bytes:
        return self._published_note

    async def wait_published(self, size: int, timeout: float) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout
        while self._published_size < size:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._published.wait(), remaining)
        return True

    async def proof_text(self, index: int) -> str | None:
        size, note = self._published_size, self._published_note
        if index >= size:
            return None
        hashes = await asyncio.to_thread(
            lambda: self.store.tile_hashes(size).inclusion_proof(index)
        )
        return TlogProof(index, tuple(hashes), note.decode()).encode()

    async def lookup_subject(
        self, digest: bytes, key_ids: Sequence[bytes], cursor: int
    ) -> tuple[list[int], int | None]:
        return self.store.lookup_subject(digest, key_ids, cursor)

    async def lookup_leaf(self, digest: bytes) -> int | None:
        return self.store.lookup_leaf(digest)

    async def status(self) -> dict[str, object]:
        """Sizes, the published checkpoint's age, the witnesses' health, pending work."""
        committed, published = self.store.size, self._published_size
        witnesses = self.witnesses.health() if self.witnesses is not None else []
        problems = [str(w["last_error"]) for w in witnesses if w["last_error"]]
        if self._quorum_failing is not None:
            problems.insert(0, f"checkpoint {committed} waits for the witness quorum")
        at = self._published_at
        return {
            "origin": self.store.origin,
            "healthy": not problems,
            "committed_size": committed,
            "published_size": max(published, 0),
            "checkpoint_published_at": at,
            "checkpoint_age_seconds": None if at is None else round(time.time() - at, 1),
            "witness_quorum": None if self.witnesses is None else self.witnesses.policy.quorum,
            "witnesses": witnesses,
            "pending": {
                "queued_entries": len(self._queue),
                "awaiting_witnesses": max(0, committed - max(published, 0)),
            },
            "problems": problems,
        }


_NO_CACHE_HEADERS: Final = {"Cache-Control": NO_CACHE}
_ROUTES: Final = (
    "/add",
    "/add-bundle",
    "/checkpoint",
    "/tile/",
    "/proof/",
    "/lookup/",
    "/status",
)


def _known(path: str) -> bool:
    return any(path == r or (r.endswith("/") and path.startswith(r)) for r in _ROUTES)


def _json(doc: object, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(doc).encode(),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": NO_CACHE},
    )


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def _digest(text: str) -> bytes | None:
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        return None
    return bytes.fromhex(text)


MAX_LOOKUP_KEY_IDS: Final = 16
_ADD_WAIT: Final = frozenset({"wait=1", "wait=true"})
_ADD_QUERIES: Final = _ADD_WAIT | {"", "wait=0", "wait=false"}
_KEY_ID_HEX: Final = frozenset("0123456789abcdef")


def parse_decimal(text: str, what: str) -> int:
    """A decimal in 0..2**63-1 without sign, spaces or leading zeros (ValueError)."""
    return decode_decimal(text, what, ValueError)


def parse_lookup_query(query: str) -> tuple[int, list[bytes]]:
    """``cursor=N`` (at most once) and ``keyid=<8 lowercase hex>`` (repeatable), nothing else."""
    cursor: int | None = None
    key_ids: list[bytes] = []
    for part in query.split("&") if query else ():
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"query parameter {name[:20]!r} has no value")
        if name == "cursor":
            if cursor is not None:
                raise ValueError("cursor given twice")
            cursor = parse_decimal(value, "cursor")
        elif name == "keyid":
            if len(value) != 8 or not _KEY_ID_HEX.issuperset(value):
                raise ValueError("keyid must be 8 lowercase hex digits (a C2SP key ID)")
            key_id = bytes.fromhex(value)
            if key_id not in key_ids:
                key_ids.append(key_id)
            if len(key_ids) > MAX_LOOKUP_KEY_IDS:
                raise ValueError(f"at most {MAX_LOOKUP_KEY_IDS} keyid parameters")
        else:
            raise ValueError(f"unknown query parameter {name[:20]!r}")
    return cursor or 0, key_ids


class HttpApi:
    """The HTTP endpoints, over a :class:`Backend` (in this process or another)."""

    def __init__(self, backend: Backend, options: ServerOptions) -> None:
        self.backend = backend
        self.options = options
        self.closing = False
        self._errors = RateLimitedLog(log)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Route one request (aiohttp's low-level server: no router, no middleware).

        The write path is the hot path; routing by hand costs a fraction of
        aiohttp's application router and middleware chain. Routes match the
        request target exactly as sent: no percent-decoding, no dot-segment
        folding, so one resource has one name.
        """
        path, _, query = request.raw_path.partition("?")
        method = request.method
        if "%" in path:
            return _error(404, "not found (percent-encoded path)")
        try:
            if path == "/add":
                if method != "POST":
                    return _error(405, "use POST")
                return await self.post_add(request, query)
            if path == "/add-bundle":
                if method != "POST":
                    return _error(405, "use POST")
                return await self.post_add_bundle(request)
            if method not in ("GET", "HEAD"):
                return _error(405, "use GET") if _known(path) else _error(404, "not found")
            if path == "/checkpoint":
                return await self.get_checkpoint()
            if path.startswith("/tile/"):
                return await self.get_tile(path[1:])
            if path.startswith("/proof/"):
                return await self.get_proof(path[len("/proof/") :])
            if path.startswith("/lookup/sha256/"):
                return await self.get_lookup_subject(path[len("/lookup/sha256/") :], query)
            if path.startswith("/lookup/leaf/"):
                return await self.get_lookup_leaf(path[len("/lookup/leaf/") :])
            if path.startswith("/lookup/package/"):
                return await self.get_lookup_package(path[len("/lookup/package/") :], query)
            if path == "/status":
                return _json(await self.backend.status())
            return _error(404, "not found")
        except (LogBusyError, LogClosingError) as e:
            return _error(503, str(e))
        except StorageError as e:
            self._errors.error("%s %s: %s", method, path, e)
            return _error(503, "log storage unavailable")

    async def get_checkpoint(self) -> web.Response:
        note = await self.backend.published_note()
        if not note:
            return _error(404, "no checkpoint published yet")
        return web.Response(
            body=note,
            content_type="text/plain",
            charset="utf-8",
            headers={"Cache-Control": NO_CACHE},
        )

    async def get_tile(self, rel: str) -> web.Response:
        try:
            tile = parse_tile_path(rel)
        except VerifyError:
            return _error(404, "not a tile path")

        def width(size: int) -> int:
            try:
                return tile_for(size, tile.level, tile.n).width
            except VerifyError:
                return 0

        # Never serve beyond the committed tree (leftovers of a crashed batch
        # are deleted at start, but a tile is only meaningful under a checkpoint).
        if width(await self.backend.committed_size(fresh=False)) < tile.width and (
            width(await self.backend.committed_size(fresh=True)) < tile.width
        ):
            return _error(404, "tile is beyond the log's current size")
        path = self.backend.tile_dir / tile.path()
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, NotADirectoryError):
            return _error(404, "tile not found (a partial tile may have been replaced)")
        resp = web.Response(
            body=data,
            content_type="application/octet-stream",
            headers={"Cache-Control": SHORT_LIVED if tile.is_partial else IMMUTABLE},
        )
        if tile.level == ENTRIES and tile.width == TILE_WIDTH:
            resp.enable_compression()
        return resp

    async def post_add_bundle(self, request: web.BaseRequest) -> web.Response:
        """Add up to 256 entries at once, framed as a tlog-tiles entry bundle.

        For bulk submitters: one request, one response, every entry checked
        first (any bad entry refuses the whole request, nothing is queued).
        """
        if self.closing:
            return _error(503, "log server is shutting down")
        body = await read_body(request, MAX_BUNDLE_BYTES, self.options.limits.body_timeout)
        if body is None:
            return _error(413, f"bundle larger than {MAX_BUNDLE_BYTES} bytes")
        entries: list[Pending] = []
        pos = 0
        try:
            while pos < len(body):
                if len(entries) == TILE_WIDTH:
                    return _error(400, f"a bundle holds at most {TILE_WIDTH} entries")
                if pos + 2 > len(body):
                    return _error(400, "bundle truncated in a length prefix")
                n = int.from_bytes(body[pos : pos + 2], "big")
                entry = body[pos + 2 : pos + 2 + n]
                if len(entry) != n:
                    return _error(400, "bundle truncated in an entry")
                pos += 2 + n
                keys = check_entry(entry).index_keys
                entries.append(Pending(entry, merkle.leaf_hash(entry), keys))
        except EntryError as e:
            return _error(400, f"entry {len(entries)}: {e}")
        if not entries:
            return _error(400, "empty bundle")
        first = await self.backend.submit(entries)
        return _json(
            {
                "entries": [
                    {"index": first + i, "leaf_hash": p.leaf.hex()} for i, p in enumerate(entries)
                ]
            }
        )

    async def post_add(self, request: web.BaseRequest, query: str) -> web.Response:
        if self.closing:
            return _error(503, "log server is shutting down")
        if query not in _ADD_QUERIES:
            return _error(400, "the only query parameter of /add is wait=1")
        body = await read_body(request, MAX_ENTRY_SIZE, self.options.limits.body_timeout)
        if body is None:
            return _error(413, f"entry larger than {MAX_ENTRY_SIZE} bytes")
        try:
            info = check_entry(body)
        except EntryTooLargeError as e:
            return _error(413, str(e))
        except EntryError as e:
            return _error(400, str(e))
        leaf = merkle.leaf_hash(body)
        index = await self.backend.submit([Pending(body, leaf, info.index_keys)])
        if not query:
            # the hot path: format the small answer directly
            return web.Response(
                body=b'{"index": %d, "leaf_hash": "%s"}' % (index, leaf.hex().encode()),
                content_type="application/json",
                headers=_NO_CACHE_HEADERS,
            )
        doc: dict[str, object] = {"index": index, "leaf_hash": leaf.hex()}
        if query in _ADD_WAIT:
            timeout = min(self.options.wait_timeout, MAX_WAIT_SECONDS)
            if not await self.backend.wait_published(index + 1, timeout):
                doc["error"] = "entry is sequenced but no checkpoint covering it was published yet"
                return _json(doc, 202)
            proof = await self.backend.proof_text(index)
            if proof is not None:
                doc["proof"] = proof
        return _json(doc)

    async def get_proof(self, text: str) -> web.Response:
        try:
            index = parse_decimal(text, "index")
        except ValueError as e:
            return _error(400, str(e))
        proof = await self.backend.proof_text(index)
        if proof is None:
            return _error(404, "no published checkpoint covers this index yet")
        return web.Response(
            text=proof, content_type="text/plain", headers={"Cache-Control": NO_CACHE}
        )

    async def get_lookup_subject(self, text: str, query: str) -> web.Response:
        digest = _digest(text)
        if digest is None:
            return _error(400, "digest must be 64 lowercase hex digits")
        try:
            cursor, key_ids = parse_lookup_query(query)
        except ValueError as e:
            return _error(400, str(e))
        indexes, next_cursor = await self.backend.lookup_subject(digest, key_ids, cursor)
        return _json({"sha256": digest.hex(), "indexes": indexes, "next_cursor": next_cursor})

    async def get_lookup_package(self, name: str, query: str) -> web.Response:
        if not PACKAGE_NAME.fullmatch(name):
            return _error(400, "package name must be 1-200 of A-Z a-z 0-9 . _ + ~ -")
        try:
            cursor, key_ids = parse_lookup_query(query)
        except ValueError as e:
            return _error(400, str(e))
        if key_ids:
            return _error(400, "keyid filters apply to /lookup/sha256 only")
        indexes, next_cursor = await self.backend.lookup_subject(package_key(name), [], cursor)
        return _json({"package": name, "indexes": indexes, "next_cursor": next_cursor})

    async def get_lookup_leaf(self, text: str) -> web.Response:
        digest = _digest(text)
        if digest is None:
            return _error(400, "leaf hash must be 64 lowercase hex digits")
        index = await self.backend.lookup_leaf(digest)
        if index is None:
            return _error(404, "no entry with this leaf hash")
        return _json({"leaf_hash": digest.hex(), "index": index})


def install_uvloop() -> bool:
    """Use uvloop when it is installed: it roughly triples aiohttp's request rate."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True
