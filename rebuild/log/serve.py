"""Run a log: the sequencer, and HTTP in this process or in front-end processes.

With ``workers=0`` one process does everything. With ``workers=N`` this
process only sequences (store, key, witnesses) and N front-end processes
(:mod:`rebuild.log.frontend`) each accept HTTP on their own listening
socket bound to the same address (``SO_REUSEPORT``: the kernel spreads
connections across them), check entries and forward them here over a
socket pair (:mod:`rebuild.log.ipc`). Python runs one thread of bytecode per
process, so this is how HTTP parsing and entry checks use every core.

A front-end that dies is restarted on the same listening socket (at most
MAX_RESTARTS a minute; beyond that the server stops with exit status 2
rather than crash-loop); front-ends die with this process (SIGKILL
included), so a restart never finds a stale one holding the port. This module never
decides what is trusted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final

from rebuild.errors import StorageError
from rebuild.httpserve import LISTEN_BACKLOG, GuardedListener, GuardedServer
from rebuild.listen import listen_sockets
from rebuild.log import ipc
from rebuild.log.server import HttpApi, LogBusyError, LogClosingError, Sequencer
from rebuild.log.store import Pending

log = logging.getLogger(__name__)

READY_SECONDS: Final = 60.0
SHUTDOWN_SECONDS: Final = 35.0
MAX_CALLS_IN_FLIGHT: Final = 1024
# A front-end that dies is restarted, at most this often; beyond, the server
# stops (exit 2) rather than crash-loop.
MAX_RESTARTS: Final = 5
RESTART_WINDOW_SECONDS: Final = 60.0


def default_workers() -> int:
    """One front-end per core; none on a single core (the IPC would only cost)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    n = cores or 1
    return 0 if n < 2 else min(n, 16)


class FrontendLink:
    """This process's end of the socket pair to one front-end process."""

    def __init__(
        self,
        number: int,
        sequencer: Sequencer,
        process: subprocess.Popen[bytes],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.number = number
        self.process = process
        self._sequencer = sequencer
        self._reader = reader
        self._writer = writer
        self._results = bytearray()
        self._flush_scheduled = False
        self._calls: set[asyncio.Task[None]] = set()
        self._state = (-1, -1)
        self.ready = asyncio.Event()
        self.stopping = False

    async def run(self) -> None:
        """Serve the front-end's frames until it goes away (raises IpcError then)."""
        while True:
            kind, payload = await ipc.read_frame(self._reader)
            if kind == ipc.ADD:
                for request_id, entries in ipc.decode_add(payload):
                    self._add(request_id, entries)
            elif kind == ipc.CALL:
                request_id, call, argument = ipc.decode_call(payload)
                if len(self._calls) >= MAX_CALLS_IN_FLIGHT:
                    # busy, not broken: that front-end answers 503 to this one
                    self._reply(request_id, ipc.FAILED, b"")
                    continue
                task = asyncio.create_task(self._answer(request_id, call, argument))
                self._calls.add(task)
                task.add_done_callback(self._calls.discard)
            elif kind == ipc.READY:
                self.ready.set()
            else:
                raise ipc.IpcError(f"unexpected frame kind {kind}")

    def _add(self, request_id: int, entries: list[Pending]) -> None:
        def done(result: int | StorageError) -> None:
            if isinstance(result, StorageError):
                self._result(request_id, ipc.FAILED)
            else:
                self._result(request_id, ipc.OK, result)

        try:
            self._sequencer.add(entries, done)
        except LogBusyError:
            self._result(request_id, ipc.BUSY)
        except LogClosingError:
            self._result(request_id, ipc.CLOSING)

    def _result(self, request_id: int, status: int, first: int = 0) -> None:
        self._results += ipc.encode_result(request_id, status, first)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._results and not self._writer.is_closing():
            self._writer.write(ipc.frame(ipc.RESULT, self._results))
        self._results = bytearray()

    async def _answer(self, request_id: int, kind: int, argument: bytes) -> None:
        seq = self._sequencer
        status, body = ipc.OK, b""
        try:
            if kind == ipc.CALL_PROOF and len(argument) == 8:
                proof = await seq.proof_text(ipc.decode_u64s(argument)[0])
                body = b"" if proof is None else proof.encode()
            elif kind == ipc.CALL_LOOKUP_SUBJECT:
                digest, cursor, key_ids = ipc.decode_lookup(argument)
                body = ipc.encode_page(*await seq.lookup_subject(digest, key_ids, cursor))
            elif kind == ipc.CALL_LOOKUP_LEAF and len(argument) == 32:
                index = await seq.lookup_leaf(argument)
                body = b"" if index is None else ipc.encode_u64s([index])
            elif kind == ipc.CALL_SIZE:
                body = ipc.encode_u64s([await seq.committed_size(fresh=True)])
            elif kind == ipc.CALL_STATUS and not argument:
                body = json.dumps(await seq.status()).encode()
            else:
                status = ipc.FAILED
        except StorageError as e:
            log.error("front-end %d: call %d failed: %s", self.number, kind, e)
            status = ipc.FAILED
        self._reply(request_id, status, body)

    def _reply(self, request_id: int, status: int, body: bytes) -> None:
        if not self._writer.is_closing():
            self._writer.write(ipc.frame(ipc.REPLY, ipc.encode_reply(request_id, status, body)))

    def state(self, committed: int, published: int) -> None:
        """Tell the front-end the sizes changed (before the adds they cover complete)."""
        if (committed, published) != self._state and not self._writer.is_closing():
            self._state = (committed, published)
            self._writer.write(ipc.frame(ipc.STATE, ipc.encode_state(committed, published)))

    def stop(self) -> None:
        self.stopping = True
        if not self._writer.is_closing():
            self._writer.write(ipc.frame(ipc.STOP))

    def close(self) -> None:
        self._writer.close()


async def _spawn(
    number: int,
    sequencer: Sequencer,
    listener: socket.socket,
    tls: tuple[Path, Path] | None,
) -> FrontendLink:
    ours, theirs = socket.socketpair()
    command = [
        sys.executable,
        "-m",
        "rebuild.log.frontend",
        "--listen-fd",
        str(listener.fileno()),
        "--ipc-fd",
        str(theirs.fileno()),
        "--dir",
        str(sequencer.tile_dir),
        "--number",
        str(number),
        "--parent",
        str(os.getpid()),
        "--wait-timeout",
        str(sequencer.options.wait_timeout),
        *sequencer.options.limits.args(),
    ]
    if tls is not None:
        command += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    try:
        process = subprocess.Popen(
            command, pass_fds=(listener.fileno(), theirs.fileno()), stdin=subprocess.DEVNULL
        )
    except OSError as e:
        ours.close()
        raise StorageError(f"cannot start a front-end process: {e.strerror}") from None
    finally:
        theirs.close()
    reader, writer = await asyncio.open_connection(sock=ours)
    link = FrontendLink(number, sequencer, process, reader, writer)
    sequencer.on_state(link.state)
    return link


async def serve(
    sequencer: Sequencer,
    host: str,
    port: int,
    *,
    tls: tuple[Path, Path] | None,
    ssl_context: ssl.SSLContext | None,
    workers: int,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT; then finish the requests in flight and stop.

    Raises UsageError when it cannot listen, StorageError when a front-end
    process failed (after stopping the rest cleanly).
    """
    loop = asyncio.get_running_loop()
    await sequencer.start()
    run = _Serving(sequencer, tls, loop)
    try:
        run.socks = listen_sockets(host, port, max(workers, 1), LISTEN_BACKLOG)
        if workers == 0:
            await run.start_in_process(ssl_context)
        else:
            await run.start_frontends()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, run.stop.set)
        if ready is not None:
            bound = run.socks[0].getsockname()[1]
            shown = f"[{host}]" if ":" in host else host
            ready(f"{'https' if ssl_context else 'http'}://{shown}:{bound}")
        await run.stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await run.shut_down()
    if run.failure:
        raise StorageError(run.failure[0])


class _Serving:
    """What :func:`serve` runs: its sockets, front-end processes (or in-process API) and stop."""

    def __init__(
        self,
        sequencer: Sequencer,
        tls: tuple[Path, Path] | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.sequencer = sequencer
        self.tls = tls
        self.loop = loop
        self.socks: list[socket.socket] = []
        self.links: list[FrontendLink] = []
        self.failure: list[str] = []
        self.stop = asyncio.Event()
        self.http: GuardedServer | None = None
        self.api: HttpApi | None = None
        self.listener: GuardedListener | None = None
        self.watchers: list[asyncio.Task[None]] = []
        self.restarts: collections.deque[float] = collections.deque()

    async def start_in_process(self, ssl_context: ssl.SSLContext | None) -> None:
        """``--workers 0``: the HTTP API in this process, on the one socket."""
        self.api = HttpApi(self.sequencer, self.sequencer.options)
        self.http = GuardedServer(self.api.handle, self.sequencer.options.limits)
        self.listener = GuardedListener(self.http, self.socks[:1], ssl_context)

    async def start_frontends(self) -> None:
        """One front-end process per socket, each watched; wait until all are ready.

        Raises StorageError when one did not start within READY_SECONDS or failed.
        """
        for n, sock in enumerate(self.socks):
            self.links.append(await _spawn(n, self.sequencer, sock, self.tls))
            self.watchers.append(asyncio.create_task(self.watch(n)))
        deadline = self.loop.time() + READY_SECONDS
        for link in self.links:
            started = asyncio.create_task(link.ready.wait())
            stopped = asyncio.create_task(self.stop.wait())
            await asyncio.wait(
                (started, stopped),
                timeout=max(0.0, deadline - self.loop.time()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            started.cancel()
            stopped.cancel()
            if self.stop.is_set():
                break
            if not link.ready.is_set():
                self.failure.append(f"front-end process {link.number} did not start in time")
                break
        if self.failure:
            raise StorageError(self.failure[0])

    async def watch(self, n: int) -> None:
        """Serve front-end ``n``'s frames; restart it when it dies (bounded)."""
        while True:
            link = self.links[n]
            try:
                await link.run()
            except ipc.IpcError as e:
                if link.stopping or self.stop.is_set():
                    return
                if not await self._restart(n, link, e):
                    return

    async def _restart(self, n: int, link: FrontendLink, e: ipc.IpcError) -> bool:
        """Replace dead front-end ``n``; False (and stop) past MAX_RESTARTS or on failure."""
        code = await asyncio.to_thread(link.process.wait)
        link.close()
        self.sequencer.off_state(link.state)
        now = self.loop.time()
        while self.restarts and now - self.restarts[0] > RESTART_WINDOW_SECONDS:
            self.restarts.popleft()
        what = f"front-end process {n} exited ({code}): {e}"
        if len(self.restarts) >= MAX_RESTARTS:
            self.failure.append(
                f"{what}; {len(self.restarts)} restarts in {RESTART_WINDOW_SECONDS:g} s "
                "already, giving up"
            )
            log.error("%s", self.failure[-1])
            self.stop.set()
            return False
        self.restarts.append(now)
        log.error("%s; restarting it", what)
        try:
            self.links[n] = await _spawn(n, self.sequencer, self.socks[n], self.tls)
        except StorageError as spawn_error:
            self.failure.append(f"{what}; cannot restart it: {spawn_error}")
            self.stop.set()
            return False
        return True

    async def shut_down(self) -> None:
        """Finish the requests in flight, stop every process and task, close the sequencer."""
        if self.listener is not None:
            await self.listener.close()
        if self.api is not None and self.http is not None:
            self.api.closing = True
            # answer what is in flight (its batch completes), then stop the tasks
            await self.http.drain(timeout=30)
        # Front-ends finish their requests in flight while the sequencer still runs.
        for link in self.links:
            link.stop()
        for link in self.links:
            try:
                await asyncio.wait_for(asyncio.to_thread(link.process.wait), SHUTDOWN_SECONDS)
            except TimeoutError:
                link.process.kill()
                await asyncio.to_thread(link.process.wait)
            link.close()
        for w in self.watchers:
            w.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await w
        for s in self.socks:
            s.close()
        await self.sequencer.close()
