"""HTTP serving that a flood of idle or hostile connections cannot take down.

Shared by ``rebuild log serve`` (each front-end) and ``rebuild witness
serve``, both built on aiohttp's low-level server. What it decides:

1. **Connection caps.** At most ``max_connections`` open connections per
   process (default: below the open-file limit, so ``accept`` never fails
   with "Too many open files"), and at most ``max_per_client`` from one
   address (127.0.0.2 and 127.0.0.3 are different addresses), decided the
   moment a connection is accepted (:class:`GuardedListener`). A connection
   beyond the per-address cap is closed at once. At the process cap the
   connection idle for longest (no request in progress) is closed to make
   room; if none is idle the new one is closed.
2. **Timeouts.** A connection must deliver a request's headers within
   ``header_timeout`` seconds of opening or of its previous response
   (aiohttp's keep-alive timer, which also fires on partial headers), and a
   body within ``body_timeout`` (:func:`read_body`; then 408 and close).
3. **Closing instead of draining.** A response sent before the request body
   was read (413, 400, ...) closes the connection: aiohttp would otherwise
   keep reading and discarding the body.
4. **HTTP/0.9** requests are not answered; the connection is closed.
5. **One line per malformed request**, rate limited: aiohttp logs each with
   a traceback (a log-flooding vector).

Also the starting and stopping every server here shares: bind HOST:PORT
(HTTP or HTTPS; port 0 picks a free port and the URL bound is reported),
serve until SIGINT or SIGTERM, shut down cleanly. :func:`start_guarded`
serves a low-level handler with the bounds above (the witness);
:func:`start_app` an aiohttp application (the static mirror).

It decides nothing about trust and reads no files.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import functools
import logging
import resource
import signal
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from rebuild.errors import UsageError
from rebuild.listen import listen_sockets

log = logging.getLogger(__name__)

# A connection is admitted or closed the moment it is accepted
# (:class:`GuardedListener`), at most ACCEPT_BURST per turn of the event loop.
# The descriptors kept free for everything that is not a client connection
# (tiles, SQLite, the socket pair, the listening socket, TLS, logs, the
# witness's state files) include one burst: an evicted connection's socket
# is closed by asyncio on the next turn, so up to one burst of them is still
# open beyond the cap.
ACCEPT_BURST: Final = 64
LISTEN_BACKLOG: Final = 1024
RESERVED_FDS: Final = 128 + ACCEPT_BURST
# Out of descriptors or memory at accept(): stop accepting for this long.
ACCEPT_PAUSE: Final = 0.1
DEFAULT_MAX_CONNECTIONS: Final = 16384
DEFAULT_MAX_PER_CLIENT: Final = 1024
DEFAULT_HEADER_TIMEOUT: Final = 15.0
DEFAULT_BODY_TIMEOUT: Final = 30.0

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class ConnectionLimits:
    """Per-process bounds on client connections (0 for max_connections: from the fd limit)."""

    max_connections: int = 0
    max_per_client: int = DEFAULT_MAX_PER_CLIENT
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT

    def effective_max_connections(self) -> int:
        """The cap, never above what the open-file limit allows (raised to its maximum)."""
        soft = raise_fd_limit()
        room = max(16, soft - RESERVED_FDS)
        wanted = self.max_connections or DEFAULT_MAX_CONNECTIONS
        return min(wanted, room)

    def args(self) -> list[str]:
        """The same limits as command-line options (for front-end processes)."""
        return [
            "--max-connections", str(self.max_connections),
            "--max-per-client", str(self.max_per_client),
            "--header-timeout", str(self.header_timeout),
            "--body-timeout", str(self.body_timeout),
        ]  # fmt: skip


def raise_fd_limit() -> int:
    """Raise the soft open-file limit to the hard one; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


class BodyTimeoutError(Exception):
    """The client did not send the request body in time (HTTP 408)."""


async def read_body(request: web.BaseRequest, limit: int, timeout: float) -> bytes | None:
    """The request body, None when larger than ``limit`` (never read past it).

    Raises BodyTimeoutError when it does not arrive within ``timeout`` seconds.
    """
    try:
        async with asyncio.timeout(timeout):
            length = request.content_length
            if length is not None:
                if length > limit:
                    return None
                try:
                    return await request.content.readexactly(length)
                except asyncio.IncompleteReadError as e:
                    return e.partial  # the client went away; refused as truncated
            body = await request.content.read(limit + 1)
            while len(body) <= limit and not request.content.at_eof():
                body += await request.content.read(limit + 1 - len(body))
            return None if len(body) > limit else body
    except TimeoutError:
        raise BodyTimeoutError(f"request body not received within {timeout:g} s") from None


class RateLimit:
    """At most ``per_minute`` lines; then one line saying how many were dropped."""

    def __init__(self, per_minute: int = 30) -> None:
        self._per_minute = per_minute
        self._window = 0.0
        self._count = 0
        self._suppressed = 0

    def allow(self) -> bool:
        now = time.monotonic()
        if now - self._window >= 60.0:
            self._window, self._count = now, 0
        self._count += 1
        if self._count > self._per_minute:
            self._suppressed += 1
            return False
        return True

    def suffix(self) -> str:
        """`` (N similar lines suppressed)`` once after lines were dropped, else ''."""
        if not self._suppressed:
            return ""
        n, self._suppressed = self._suppressed, 0
        return f" ({n} similar lines suppressed)"


class RateLimitedLog:
    """A logger that writes at most ``per_minute`` error lines (a full disk, a flood)."""

    def __init__(self, logger: logging.Logger, per_minute: int = 30) -> None:
        self._logger = logger
        self._limit = RateLimit(per_minute)

    def error(self, message: str, *args: object) -> None:
        if self._limit.allow():
            self._logger.error(message + self._limit.suffix(), *args)


class OneLineErrors(logging.Filter):
    """Turn aiohttp's per-request tracebacks into one rate-limited line."""

    def __init__(self, per_minute: int = 30) -> None:
        super().__init__()
        self._limit = RateLimit(per_minute)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._limit.allow():
            return False
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            detail = str(exc).splitlines()[0] if str(exc) else ""
            message = f"{message}: {type(exc).__name__}: {detail}"
        message += self._limit.suffix()
        record.msg, record.args = message[:300], ()
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def quiet_aiohttp_errors() -> None:
    """Install :class:`OneLineErrors` on aiohttp's server logger (once per process)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, OneLineErrors) for f in logger.filters):
        logger.addFilter(OneLineErrors())


def _uncount(counter: collections.Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


def _client(addr: object) -> str:
    """The address part of a peer name (``?`` when there is none)."""
    return str(addr[0]) if isinstance(addr, tuple) and addr else "?"


class GuardedServer(web.Server):
    """aiohttp's low-level server with the bounds of the module docstring."""

    def __init__(self, handler: Handler, limits: ConnectionLimits, **kwargs: Any) -> None:
        quiet_aiohttp_errors()
        self.limits = limits
        self.max_connections = limits.effective_max_connections()
        super().__init__(
            self._guard(handler),
            keepalive_timeout=limits.header_timeout,
            # aiohttp reads and discards an unread body for up to this long
            # (1 GB in 0.9 s): never, the connection is closed instead.
            lingering_time=0,
            access_log=None,
            **kwargs,
        )
        # Open connections, least recently active first (for eviction).
        self._recent: collections.OrderedDict[asyncio.Transport, str] = collections.OrderedDict()
        self._busy: collections.Counter[asyncio.Transport] = collections.Counter()
        self._per_client: collections.Counter[str] = collections.Counter()
        # Admitted at accept(), transport not made yet (a TLS handshake, a
        # turn), oldest first, and how many of those per client.
        self._accepting: collections.OrderedDict[asyncio.Task[None], str] = (
            collections.OrderedDict()
        )
        self._pending: collections.Counter[str] = collections.Counter()
        self.refused = 0
        self.evicted = 0
        self._last_report = 0.0

    def _guard(self, handler: Handler) -> Handler:
        async def guarded(request: web.BaseRequest) -> web.StreamResponse:
            transport = request.transport
            if request.version < (1, 0):
                # HTTP/0.9 has no status line to answer with: close, say nothing.
                if transport is not None:
                    transport.abort()
                refused = web.Response(status=400)
                refused.force_close()
                return refused
            if transport is not None:
                self._busy[transport] += 1
            try:
                response: web.StreamResponse
                try:
                    response = await handler(request)
                except BodyTimeoutError as e:
                    response = web.Response(status=408, text=f"{e}\n")
                if not request.content.at_eof():
                    # Answered before the body was read (413, 400, 408...):
                    # close rather than read and discard the rest.
                    response.force_close()
                return response
            finally:
                if transport is not None:
                    self._busy[transport] -= 1
                    if self._busy[transport] <= 0:
                        del self._busy[transport]
                    if transport in self._recent:
                        self._recent.move_to_end(transport)

        return guarded

    def admit(self, client: str) -> bool:
        """Whether a connection just accepted from ``client`` may stay (False: close it now).

        Called by :class:`GuardedListener` before the connection has a
        transport; it then reports the connection with :meth:`accepted`.
        """
        if self._per_client[client] + self._pending[client] >= self.limits.max_per_client:
            self._refuse(f"more than {self.limits.max_per_client} from {client}")
            return False
        opened = len(self._recent) + len(self._accepting)
        if opened >= self.max_connections and not self._evict_idle():
            self._refuse(f"{self.max_connections} connections, none idle")
            return False
        return True

    def accepted(self, task: asyncio.Task[None], client: str) -> None:
        """``task`` gives an admitted connection its transport (a TLS handshake, a turn)."""
        self._accepting[task] = client
        self._pending[client] += 1

    def settle(self, task: asyncio.Task[None]) -> None:
        """``task`` ended: its connection is counted by its transport now, or is gone."""
        client = self._accepting.pop(task, None)
        if client is not None:
            _uncount(self._pending, client)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        client = _client(transport.get_extra_info("peername"))
        self._recent[transport] = client
        self._per_client[client] += 1

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        transport = self._connections.get(handler)
        super().connection_lost(handler, exc)
        if transport is None:
            return
        client = self._recent.pop(transport, None)
        if client is not None:
            _uncount(self._per_client, client)
        self._busy.pop(transport, None)

    def _evict_idle(self) -> bool:
        """Close the connection idle for longest, else the oldest still handshaking."""
        for transport in self._recent:
            if transport not in self._busy:
                self.evicted += 1
                self._report()
                _uncount(self._per_client, self._recent.pop(transport))
                transport.abort()
                return True
        for task in self._accepting:
            self.evicted += 1
            self._report()
            _uncount(self._pending, self._accepting.pop(task))
            task.cancel()
            return True
        return False

    def _refuse(self, why: str) -> None:
        self.refused += 1
        self._report(why)

    def _report(self, why: str = "") -> None:
        now = time.monotonic()
        if now - self._last_report >= 10.0:
            self._last_report = now
            log.warning(
                "connection limits: %d refused, %d idle evicted so far%s",
                self.refused,
                self.evicted,
                f" (last: {why})" if why else "",
            )

    async def drain(self, timeout: float) -> None:
        """Close idle connections at once; give requests in flight ``timeout`` seconds.

        ``shutdown`` alone waited the full ``timeout`` for a keep-alive
        connection that was between requests: a client holding one open
        kept ``witness serve`` from stopping for 10 s.
        """
        self.pre_shutdown()
        await self.shutdown(timeout)

    @property
    def open_connections(self) -> int:
        return len(self._recent)


_OUT_OF_RESOURCES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class GuardedListener:
    """Accepts connections for a :class:`GuardedServer` on listening sockets.

    Each connection is admitted or closed the moment it is accepted, at most
    :data:`ACCEPT_BURST` per turn of the event loop. asyncio's own accept
    loop takes up to a listen backlog per turn and makes the transports a
    turn later, so the connections a flood gets refused were still open
    turns after the cap: at the open-file limit accept() failed with
    "Too many open files", asyncio stopped accepting for a second (honest
    clients waited out SYN retries) and the witness's state writes could
    fail. Closes the sockets it was given on :meth:`close`.
    """

    def __init__(
        self, http: GuardedServer, socks: Sequence[socket.socket], tls: ssl.SSLContext | None
    ) -> None:
        self.http = http
        self.socks = list(socks)
        self.tls = tls
        self._loop = asyncio.get_running_loop()
        self._connecting: set[asyncio.Task[None]] = set()
        self._errors = RateLimitedLog(log, per_minute=6)
        self._closed = False
        for sock in self.socks:
            sock.setblocking(False)
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BURST):
            try:
                conn, addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as e:
                self._pause(sock, e)
                return
            client = _client(addr)
            if not self.http.admit(client):
                conn.close()
                continue
            conn.setblocking(False)
            task = self._loop.create_task(self._connect(conn))
            self._connecting.add(task)
            self.http.accepted(task, client)
            task.add_done_callback(functools.partial(self._connected, conn))

    def _pause(self, sock: socket.socket, e: OSError) -> None:
        """accept() failed: stop accepting on ``sock`` for :data:`ACCEPT_PAUSE` seconds."""
        why = "out of resources" if e.errno in _OUT_OF_RESOURCES else "failed"
        self._errors.error("accept() %s (%s); pausing %g s", why, e.strerror, ACCEPT_PAUSE)
        self._loop.remove_reader(sock.fileno())
        self._loop.call_later(ACCEPT_PAUSE, self._resume, sock)

    def _resume(self, sock: socket.socket) -> None:
        if not self._closed:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    async def _connect(self, conn: socket.socket) -> None:
        await self._loop.connect_accepted_socket(
            self.http,
            conn,
            ssl=self.tls,
            ssl_handshake_timeout=self.http.limits.header_timeout if self.tls else None,
        )

    def _connected(self, conn: socket.socket, task: asyncio.Task[None]) -> None:
        """The connection has its transport, or failed or was evicted (closed here)."""
        self._connecting.discard(task)
        self.http.settle(task)
        if task.cancelled() or task.exception() is not None:
            conn.close()  # the client went away, or its TLS handshake failed or timed out

    async def close(self, grace: float = 1.0) -> None:
        """Stop accepting, close the listening sockets, and settle the connections accepted.

        A connection accepted just before is given ``grace`` seconds to get
        its transport (a TLS handshake), so that the server's shutdown sees
        it; then it is dropped. Open connections stay (``http.drain`` ends them).
        """
        self._closed = True
        for sock in self.socks:
            if sock.fileno() >= 0:
                self._loop.remove_reader(sock.fileno())
                sock.close()
        if self._connecting:
            await asyncio.wait(set(self._connecting), timeout=grace)
        for task in set(self._connecting):
            task.cancel()
        if self._connecting:
            await asyncio.wait(set(self._connecting))


# --- starting and stopping ------------------------------------------------------


class Stoppable(Protocol):
    url: str

    async def stop(self) -> None: ...


@dataclass
class Running:
    """An aiohttp application being served (:func:`start_app`)."""

    runner: web.AppRunner
    url: str

    async def stop(self) -> None:
        await self.runner.cleanup()


@dataclass
class RunningGuarded:
    """A :class:`GuardedServer` being served (:func:`start_guarded`)."""

    listener: GuardedListener
    http: GuardedServer
    url: str

    async def stop(self) -> None:
        await self.listener.close()
        await self.http.drain(timeout=10)


def _url(host: str, port: int, tls: ssl.SSLContext | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}"


async def start_app(
    app: web.Application,
    host: str,
    port: int,
    tls: ssl.SSLContext | None = None,
    *,
    access_log: logging.Logger | None = None,
) -> Running:
    """Start serving ``app``; returns once the socket listens."""
    runner = web.AppRunner(app, access_log=access_log)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=tls, backlog=LISTEN_BACKLOG)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    bound = int(runner.addresses[0][1]) if runner.addresses else port
    return Running(runner, _url(host, bound, tls))


async def start_guarded(
    handler: Handler,
    limits: ConnectionLimits,
    host: str,
    port: int,
    tls: ssl.SSLContext | None = None,
) -> RunningGuarded:
    """Start serving ``handler`` with the module's bounds; returns once the socket listens.

    Raises UsageError when ``host:port`` cannot be bound.
    """
    http = GuardedServer(handler, limits)
    socks = listen_sockets(host, port, 1, LISTEN_BACKLOG)
    bound = int(socks[0].getsockname()[1])
    return RunningGuarded(GuardedListener(http, socks, tls), http, _url(host, bound, tls))


async def serve_until_signalled(running: Stoppable, on_ready: Callable[[str], None]) -> None:
    """Report the URL, then serve until SIGINT or SIGTERM; always shut down cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        on_ready(running.url)
        await stop.wait()
    finally:
        await running.stop()
