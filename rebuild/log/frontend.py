"""A front-end process of ``rebuild log serve``: HTTP in, checked entries to the sequencer.

Started by :func:`rebuild.log.serve.serve` (never by hand) with a listening
socket and one end of a socket pair. It parses HTTP, checks and hashes
entries, and forwards them to the sequencer process, which makes them
durable and answers with their indexes; tiles and the checkpoint it serves
straight from the log directory (they are immutable or replaced atomically),
and proofs and lookups it asks the sequencer for. It holds no key and writes
nothing. It exits when told to, on SIGTERM or SIGINT (after finishing the
requests in flight), and at once when the sequencer goes away: an entry is
only ever acknowledged with an index the sequencer made durable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from rebuild.errors import OperationalError, StorageError
from rebuild.httpserve import ConnectionLimits, GuardedListener, GuardedServer
from rebuild.log import ipc
from rebuild.log.server import (
    HttpApi,
    LogBusyError,
    LogClosingError,
    ServerOptions,
    install_uvloop,
)
from rebuild.log.store import Pending
from rebuild.log.urls import server_ssl_context

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
MAX_CALLS_IN_FLIGHT: Final = 64  # proofs and lookups this process asks the sequencer at once


class SequencerGoneError(StorageError):
    """The sequencer process closed the socket pair (it stopped or crashed)."""


class RemoteBackend:
    """:class:`rebuild.log.server.Backend` over the socket pair to the sequencer."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tile_dir: Path
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._tile_dir = tile_dir
        self._next_id = 0
        self._adds: dict[int, asyncio.Future[int]] = {}
        self._calls: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self._out = bytearray()
        self._flush_scheduled = False
        self._committed = 0
        self._published = -1
        self._published_event = asyncio.Event()
        self._gone: StorageError | None = None
        self.stop_requested = asyncio.Event()
        self._call_slots = asyncio.Semaphore(MAX_CALLS_IN_FLIGHT)

    @property
    def tile_dir(self) -> Path:
        return self._tile_dir

    @property
    def published_size(self) -> int:
        return self._published

    def _new_id(self) -> int:
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        return self._next_id

    # --- the socket pair ------------------------------------------------------

    async def run(self) -> None:
        """Read the sequencer's frames until it goes away or says stop."""
        try:
            while True:
                kind, payload = await ipc.read_frame(self._reader)
                if kind == ipc.RESULT:
                    self._results(payload)
                elif kind == ipc.REPLY:
                    request_id, status, body = ipc.decode_reply(payload)
                    call = self._calls.pop(request_id, None)
                    if call is not None and not call.done():
                        call.set_result((status, body))
                elif kind == ipc.STATE:
                    self._committed, published = ipc.decode_state(payload)
                    if published != self._published:
                        self._published = published
                        self._published_event.set()
                        self._published_event = asyncio.Event()
                elif kind == ipc.STOP:
                    self.stop_requested.set()
                else:
                    raise ipc.IpcError(f"unexpected frame kind {kind}")
        except ipc.IpcError as e:
            self._lost(SequencerGoneError(f"log sequencer went away ({e})"))

    def _lost(self, error: StorageError) -> None:
        self._gone = error
        futures: list[asyncio.Future[int]] | list[asyncio.Future[tuple[int, bytes]]]
        for futures in (list(self._adds.values()), list(self._calls.values())):
            for fut in futures:
                if not fut.done():
                    fut.set_exception(error)
        self._adds.clear()
        self._calls.clear()
        self._published_event.set()
        self.stop_requested.set()

    @property
    def gone(self) -> bool:
        return self._gone is not None

    def _results(self, payload: bytes) -> None:
        for request_id, status, first in ipc.decode_results(payload):
            fut = self._adds.pop(request_id, None)
            if fut is None or fut.done():
                continue
            if status == ipc.OK:
                fut.set_result(first)
            elif status == ipc.BUSY:
                fut.set_exception(LogBusyError("log is overloaded; retry later"))
            elif status == ipc.CLOSING:
                fut.set_exception(LogClosingError("log server is shutting down"))
            else:
                fut.set_exception(StorageError("the sequencer could not store the entries"))

    def _send(self, kind: int, record: bytes) -> None:
        """Queue a record; all records of one loop iteration go in one frame per kind."""
        if kind == ipc.ADD:
            self._out += record
            if not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
        else:
            self._writer.write(ipc.frame(kind, record))

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and not self._writer.is_closing():
            self._writer.write(ipc.frame(ipc.ADD, self._out))
        self._out = bytearray()

    # --- Backend ----------------------------------------------------------------

    def submit(self, entries: Sequence[Pending]) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if self._gone is not None:
            fut.set_exception(self._gone)
            return fut
        request_id = self._new_id()
        self._adds[request_id] = fut
        self._send(ipc.ADD, ipc.encode_add(request_id, entries))
        return fut

    async def _call(self, kind: int, argument: bytes) -> bytes:
        async with self._call_slots:  # more wait here rather than flood the sequencer
            return await self._call_now(kind, argument)

    async def _call_now(self, kind: int, argument: bytes) -> bytes:
        if self._gone is not None:
            raise self._gone
        request_id = self._new_id()
        fut: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._calls[request_id] = fut
        self._send(ipc.CALL, ipc.encode_call(request_id, kind, argument))
        status, body = await fut
        if status != ipc.OK:
            raise StorageError("the sequencer could not answer")
        return body

    async def committed_size(self, fresh: bool) -> int:
        if fresh:
            (self._committed,) = ipc.decode_u64s(await self._call(ipc.CALL_SIZE, b""))
        return self._committed

    async def published_note(self) -> bytes:
        # Replaced atomically by the sequencer; served as a static server would.
        try:
            return await asyncio.to_thread((self._tile_dir / "checkpoint").read_bytes)
        except FileNotFoundError:
            return b""

    async def wait_published(self, size: int, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._published < size:
            if self._gone is not None:
                raise self._gone
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._published_event.wait(), remaining)
        return True

    async def proof_text(self, index: int) -> str | None:
        body = await self._call(ipc.CALL_PROOF, ipc.encode_u64s([index]))
        return body.decode() if body else None

    async def lookup_subject(
        self, digest: bytes, key_ids: Sequence[bytes], cursor: int
    ) -> tuple[list[int], int | None]:
        argument = ipc.encode_lookup(digest, cursor, key_ids)
        return ipc.decode_page(await self._call(ipc.CALL_LOOKUP_SUBJECT, argument))

    async def lookup_leaf(self, digest: bytes) -> int | None:
        body = await self._call(ipc.CALL_LOOKUP_LEAF, digest)
        return ipc.decode_u64s(body)[0] if body else None

    async def status(self) -> dict[str, object]:
        doc = json.loads(await self._call(ipc.CALL_STATUS, b""))
        if not isinstance(doc, dict):
            raise StorageError("the sequencer's status is not a JSON object")
        return doc


async def _serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    listener_sock = socket.socket(fileno=args.listen_fd)
    pair = socket.socket(fileno=args.ipc_fd)
    reader, writer = await asyncio.open_connection(sock=pair)
    backend = RemoteBackend(reader, writer, args.dir)
    limits = ConnectionLimits(
        args.max_connections, args.max_per_client, args.header_timeout, args.body_timeout
    )
    api = HttpApi(backend, ServerOptions(wait_timeout=args.wait_timeout, limits=limits))
    tls = server_ssl_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    http = GuardedServer(api.handle, limits)
    listener = GuardedListener(http, [listener_sock], tls)
    # Ctrl-C reaches the whole process group: the sequencer process handles
    # it and tells each front-end to stop, in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    loop.add_signal_handler(signal.SIGTERM, backend.stop_requested.set)
    reading = asyncio.create_task(backend.run())
    writer.write(ipc.frame(ipc.READY))
    await backend.stop_requested.wait()
    await listener.close()
    api.closing = True
    # Finish what is in flight (its entries are already with the sequencer),
    # unless the sequencer is gone: then nothing more can be acknowledged.
    await http.drain(timeout=1.0 if backend.gone else 30.0)
    writer.close()
    reading.cancel()
    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
        await reading


def _die_with_parent(parent: int) -> None:
    """Linux: get SIGKILL when the sequencer process dies, however it dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        sys.exit(1)  # it died before prctl took effect


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rebuild-log-frontend", description=__doc__)
    p.add_argument("--listen-fd", type=int, required=True)
    p.add_argument("--ipc-fd", type=int, required=True)
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--number", type=int, required=True)
    p.add_argument("--parent", type=int, required=True)
    p.add_argument("--wait-timeout", type=float, default=30.0)
    p.add_argument("--max-connections", type=int, default=0)
    p.add_argument("--max-per-client", type=int, default=1024)
    p.add_argument("--header-timeout", type=float, default=15.0)
    p.add_argument("--body-timeout", type=float, default=30.0)
    p.add_argument("--tls-cert", type=Path)
    p.add_argument("--tls-key", type=Path)
    args = p.parse_args(argv)
    _die_with_parent(args.parent)
    logging.basicConfig(
        level=logging.DEBUG if os.environ.get("REBUILD_LOG_DEBUG") else logging.INFO,
        stream=sys.stderr,
        format=f"rebuild log serve (front-end {args.number}): %(message)s",
    )
    install_uvloop()
    try:
        asyncio.run(_serve(args))
    except (OperationalError, OSError) as e:
        log.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
