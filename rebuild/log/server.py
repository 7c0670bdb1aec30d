"""The log's HTTP server: write, proof and lookup endpoints, and the tile API.

Requests to ``POST /add`` are checked (a bounded DSSE envelope), queued and
integrated by one sequencer task in batches on a single storage thread
(:class:`rebuild.log.store.LogStore`); a request is answered only after the
batch holding its entry is durable. A publisher task then gets the newest
signed checkpoint cosigned by the policy's witnesses (when there is a
policy) and publishes it as ``checkpoint``. The read API is C2SP tlog-tiles,
served from the same files a static web server would serve, with the
caching the spec asks for. This module never decides what is trusted and
never serves a tile beyond the committed tree.

Endpoints::

    GET  /checkpoint                       published checkpoint (no-cache)
    GET  /tile/<L>/<N>[.p/<W>]             hash tiles (full: immutable)
    GET  /tile/entries/<N>[.p/<W>]         entry bundles (full: immutable)
    POST /add[?wait=1]                     add a DSSE envelope -> JSON
    POST /add-bundle                       add up to 256 envelopes (entry-bundle framing)
    GET  /proof/<index>                    tlog-proof@v1 against the published checkpoint
    GET  /lookup/sha256/<hex>              JSON indexes of entries with that subject
    GET  /lookup/leaf/<hex>                JSON index of the entry with that leaf hash
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from rebuild.errors import StorageError
from rebuild.log.entry import MAX_ENTRY_SIZE, EntryError, EntryTooLargeError, check_entry
from rebuild.log.store import MAX_BATCH, LogStore, Pending, Sequenced
from rebuild.log.witnessing import WitnessPool
from verify import merkle
from verify.errors import VerifyError
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


@dataclass(frozen=True)
class ServerOptions:
    batch_ms: float = 0.0
    wait_timeout: float = 30.0


_NO_CACHE_HEADERS: Final = {"Cache-Control": NO_CACHE}
_ROUTES: Final = ("/add", "/add-bundle", "/checkpoint", "/tile/", "/proof/", "/lookup/")


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


class LogServer:
    """One log directory served over HTTP; owns the sequencer and publisher."""

    def __init__(
        self, store: LogStore, witnesses: WitnessPool | None, options: ServerOptions
    ) -> None:
        self.store = store
        self.witnesses = witnesses
        self.options = options
        self._queue: list[tuple[Pending, asyncio.Future[Sequenced]]] = []
        self._queued_bytes = 0
        self._wakeup = asyncio.Event()
        self._committed = asyncio.Event()
        self._published = asyncio.Event()
        self._storage = ThreadPoolExecutor(1, thread_name_prefix="log-storage")
        self._tasks: list[asyncio.Task[None]] = []
        self._published_size = store.published_size
        self._published_note = b""
        self._closing = False

    # --- lifecycle --------------------------------------------------------

    async def start(self) -> None:
        """Publish what is committed (when no witnesses gate it), start the tasks."""
        loop = asyncio.get_running_loop()
        if self.witnesses is None:
            latest = self.store.latest
            await loop.run_in_executor(self._storage, self.store.publish, latest.note, latest.size)
        self._refresh_published()
        self._tasks.append(asyncio.create_task(self._sequencer()))
        self._tasks.append(asyncio.create_task(self._publisher()))
        self._committed.set()

    async def close(self) -> None:
        """Stop after the batch in flight; fail whatever is still queued."""
        self._closing = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for _, fut in self._queue:
            if not fut.done():
                fut.set_exception(StorageError("log server is shutting down"))
        self._queue.clear()
        if self.witnesses is not None:
            await self.witnesses.close()
        self._storage.shutdown(wait=True)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Route one request (aiohttp's low-level server: no router, no middleware).

        The write path is the hot path; routing by hand costs a fraction of
        aiohttp's application router and middleware chain.
        """
        path, method = request.path, request.method
        try:
            if path == "/add":
                if method != "POST":
                    return _error(405, "use POST")
                return await self.post_add(request)
            if path == "/add-bundle":
                if method != "POST":
                    return _error(405, "use POST")
                return await self.post_add_bundle(request)
            if method not in ("GET", "HEAD"):
                return _error(405, "use GET") if _known(path) else _error(404, "not found")
            if path == "/checkpoint":
                return await self.get_checkpoint(request)
            if path.startswith("/tile/"):
                return await self.get_tile(path[1:])
            if path.startswith("/proof/"):
                return await self.get_proof(path[len("/proof/") :])
            if path.startswith("/lookup/sha256/"):
                return await self.get_lookup_subject(path[len("/lookup/sha256/") :])
            if path.startswith("/lookup/leaf/"):
                return await self.get_lookup_leaf(path[len("/lookup/leaf/") :])
            return _error(404, "not found")
        except StorageError as e:
            log.error("%s %s: %s", method, path, e)
            return _error(503, "log storage unavailable")

    def _refresh_published(self) -> None:
        with contextlib.suppress(StorageError):
            self._published_note = self.store.published_note()
        self._published_size = self.store.published_size
        self._published.set()
        self._published = asyncio.Event()

    # --- sequencing -------------------------------------------------------

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
            except Exception as e:
                if not isinstance(e, StorageError):
                    log.exception("internal error integrating a batch")
                    e = StorageError(f"internal error: {type(e).__name__}")
                log.error("batch of %d entries not integrated: %s", len(batch), e)
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for (_, fut), r in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(r)
            if self.witnesses is None:
                self._refresh_published()
            else:
                self._committed.set()

    def _integrate(self, batch: list[Pending]) -> list[Sequenced]:
        """On the storage thread: integrate, then publish when no witnesses gate it."""
        results = self.store.integrate(batch)
        if self.witnesses is None:
            latest = self.store.latest
            if latest.size > self.store.published_size:
                self.store.publish(latest.note, latest.size)
        return results

    # --- witnessing -------------------------------------------------------

    async def _publisher(self) -> None:
        if self.witnesses is None:
            return
        loop = asyncio.get_running_loop()
        while True:
            await self._committed.wait()
            self._committed.clear()
            signed = self.store.latest
            if signed.size <= self._published_size and self._published_note:
                continue

            async def proof(old: int, new: int) -> list[bytes]:
                return await asyncio.to_thread(self.store.tile_hashes(new).consistency_proof, old)

            cosigned = await self.witnesses.collect(signed.size, signed.note, proof)
            if not cosigned.quorum_met:
                log.warning(
                    "checkpoint %d: witness quorum not met (cosigned by %s); retrying",
                    signed.size,
                    ", ".join(cosigned.witnesses) or "none",
                )
                await asyncio.sleep(WITNESS_RETRY_SECONDS)
                self._committed.set()
                continue

            try:
                await loop.run_in_executor(
                    self._storage, self._persist_cosigned, signed.size, cosigned.note
                )
            except StorageError as e:
                log.error("publishing checkpoint %d failed: %s", signed.size, e)
                await asyncio.sleep(WITNESS_RETRY_SECONDS)
                self._committed.set()
                continue
            log.info("published checkpoint %d cosigned by %s", signed.size, cosigned.witnesses)
            self._refresh_published()

    def _persist_cosigned(self, size: int, note: str) -> None:
        self.store.record_cosigned(size, note)
        self.store.publish(note, size)

    async def _wait_published(self, size: int, timeout: float) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout
        while self._published_size < size:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._published.wait(), remaining)
        return True

    async def _proof_text(self, index: int) -> str | None:
        size, note = self._published_size, self._published_note
        if index >= size:
            return None
        hashes = await asyncio.to_thread(
            lambda: self.store.tile_hashes(size).inclusion_proof(index)
        )
        return TlogProof(index, tuple(hashes), note.decode()).encode()

    # --- handlers ---------------------------------------------------------

    async def get_checkpoint(self, _request: web.BaseRequest) -> web.Response:
        if not self._published_note:
            return _error(404, "no checkpoint published yet")
        return web.Response(
            body=self._published_note,
            content_type="text/plain",
            charset="utf-8",
            headers={"Cache-Control": NO_CACHE},
        )

    async def get_tile(self, rel: str) -> web.Response:
        try:
            tile = parse_tile_path(rel)
        except VerifyError:
            return _error(404, "not a tile path")
        size = self.store.size
        try:
            have = tile_for(size, tile.level, tile.n).width
        except VerifyError:
            have = 0
        # Never serve beyond the committed tree (leftovers of a crashed batch
        # are deleted at start, but a tile is only meaningful under a checkpoint).
        if have < tile.width:
            return _error(404, "tile is beyond the log's current size")
        path = self.store.dir / tile.path()
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

    @staticmethod
    async def _read_body(request: web.BaseRequest, limit: int) -> bytes | None:
        """The request body, or None when it is larger than ``limit`` (never read past it)."""
        if request.content_length is not None and request.content_length > limit:
            return None
        body = await request.content.read(limit + 1)
        while len(body) <= limit and not request.content.at_eof():
            body += await request.content.read(limit + 1 - len(body))
        return None if len(body) > limit else body

    def _enqueue(
        self, entries: list[tuple[bytes, tuple[bytes, ...]]]
    ) -> list[asyncio.Future[Sequenced]]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Sequenced]] = []
        for body, subjects in entries:
            fut: asyncio.Future[Sequenced] = loop.create_future()
            self._queue.append((Pending(body, merkle.leaf_hash(body), subjects), fut))
            self._queued_bytes += len(body)
            futures.append(fut)
        self._wakeup.set()
        return futures

    async def post_add_bundle(self, request: web.BaseRequest) -> web.Response:
        """Add up to 256 entries at once, framed as a tlog-tiles entry bundle.

        For bulk submitters: one request, one response, every entry checked
        first (any bad entry refuses the whole request, nothing is queued).
        """
        if self._closing:
            return _error(503, "log server is shutting down")
        body = await self._read_body(request, MAX_BUNDLE_BYTES)
        if body is None:
            return _error(413, f"bundle larger than {MAX_BUNDLE_BYTES} bytes")
        entries: list[tuple[bytes, tuple[bytes, ...]]] = []
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
                entries.append((entry, check_entry(entry).subjects))
        except EntryError as e:
            return _error(400, f"entry {len(entries)}: {e}")
        if not entries:
            return _error(400, "empty bundle")
        if self._queued_bytes + len(body) > MAX_QUEUED_BYTES:
            return _error(503, "log is overloaded; retry later")
        results = await asyncio.gather(*self._enqueue(entries), return_exceptions=True)
        done: list[Sequenced] = []
        for r in results:
            if isinstance(r, BaseException):
                raise r
            done.append(r)
        return _json({"entries": [{"index": d.index, "leaf_hash": d.leaf.hex()} for d in done]})

    async def post_add(self, request: web.BaseRequest) -> web.Response:
        if self._closing:
            return _error(503, "log server is shutting down")
        body = await self._read_body(request, MAX_ENTRY_SIZE)
        if body is None:
            return _error(413, f"entry larger than {MAX_ENTRY_SIZE} bytes")
        try:
            info = check_entry(body)
        except EntryTooLargeError as e:
            return _error(413, str(e))
        except EntryError as e:
            return _error(400, str(e))
        if self._queued_bytes + len(body) > MAX_QUEUED_BYTES:
            return _error(503, "log is overloaded; retry later")
        (fut,) = self._enqueue([(body, info.subjects)])
        seq = await fut
        if not request.query_string:
            # the hot path: format the small answer directly
            return web.Response(
                body=b'{"index": %d, "leaf_hash": "%s"}' % (seq.index, seq.leaf.hex().encode()),
                content_type="application/json",
                headers=_NO_CACHE_HEADERS,
            )
        doc: dict[str, object] = {
            "index": seq.index,
            "leaf_hash": seq.leaf.hex(),
        }
        if request.query.get("wait") in ("1", "true"):
            timeout = min(self.options.wait_timeout, MAX_WAIT_SECONDS)
            if not await self._wait_published(seq.index + 1, timeout):
                doc["error"] = "entry is sequenced but no checkpoint covering it was published yet"
                return _json(doc, 202)
            proof = await self._proof_text(seq.index)
            if proof is not None:
                doc["proof"] = proof
        return _json(doc)

    async def get_proof(self, text: str) -> web.Response:
        if not text.isdigit() or len(text) > 19:
            return _error(400, "index must be a decimal number")
        proof = await self._proof_text(int(text))
        if proof is None:
            return _error(404, "no published checkpoint covers this index yet")
        return web.Response(
            text=proof, content_type="text/plain", headers={"Cache-Control": NO_CACHE}
        )

    @staticmethod
    def _digest(text: str) -> bytes | None:
        if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
            return None
        return bytes.fromhex(text)

    async def get_lookup_subject(self, text: str) -> web.Response:
        digest = self._digest(text)
        if digest is None:
            return _error(400, "digest must be 64 lowercase hex digits")
        return _json({"sha256": digest.hex(), "indexes": self.store.lookup_subject(digest)})

    async def get_lookup_leaf(self, text: str) -> web.Response:
        digest = self._digest(text)
        if digest is None:
            return _error(400, "leaf hash must be 64 lowercase hex digits")
        index = self.store.lookup_leaf(digest)
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


async def serve(
    server: LogServer,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT; then finish the requests in flight and stop."""
    loop = asyncio.get_running_loop()
    await server.start()
    http = web.Server(server.handle, access_log=None)
    try:
        listener = await loop.create_server(http, host, port, ssl=ssl_context, backlog=1024)
    except OSError as e:
        await server.close()
        raise StorageError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        bound = listener.sockets[0].getsockname()[1] if listener.sockets else port
        shown = f"[{host}]" if ":" in host else host
        ready(f"{'https' if ssl_context else 'http'}://{shown}:{bound}")
    try:
        await stop.wait()
    finally:
        listener.close()
        # answer what is in flight (its batch completes), then stop the tasks
        await http.shutdown(timeout=30)
        await server.close()
