"""HTTP serving that a flood of idle or hostile connections cannot take down.

Shared by ``rebuild log serve`` (each front-end) and ``rebuild witness
serve``, both built on aiohttp's low-level server. What it decides:

1. **Connection caps.** At most ``max_connections`` open connections per
   process (default: below the open-file limit, so ``accept`` never fails
   with "Too many open files"), and at most ``max_per_client`` from one
   address (127.0.0.2 and 127.0.0.3 are different addresses). A connection
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
import logging
import resource
import signal
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from rebuild.errors import UsageError

log = logging.getLogger(__name__)

# File descriptors kept free for everything that is not a client connection
# (tiles, SQLite, the socket pair, the listening socket, TLS, logs, the
# witness's state files), plus one accept burst: asyncio accepts up to the
# listen backlog (256 for the witness) in one turn of the loop before the
# connections it refuses or evicts are closed, so at the cap those sockets
# must not take the descriptors a state write needs (a witness flooded at
# its file limit answered an honest cosign request 500 once).
ACCEPT_BURST: Final = 256
RESERVED_FDS: Final = 128 + ACCEPT_BURST
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

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if self._per_client[client] >= self.limits.max_per_client:
            self._refuse(transport, f"more than {self.limits.max_per_client} from {client}")
            return
        if len(self._recent) >= self.max_connections and not self._evict_idle():
            self._refuse(transport, f"{self.max_connections} connections, none idle")
            return
        self._recent[transport] = client
        self._per_client[client] += 1

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        transport = self._connections.get(handler)
        super().connection_lost(handler, exc)
        if transport is None:
            return
        client = self._recent.pop(transport, None)
        if client is not None:
            self._per_client[client] -= 1
            if self._per_client[client] <= 0:
                del self._per_client[client]
        self._busy.pop(transport, None)

    def _evict_idle(self) -> bool:
        for transport in self._recent:
            if transport not in self._busy:
                self.evicted += 1
                self._report()
                client = self._recent.pop(transport)
                self._per_client[client] -= 1
                if self._per_client[client] <= 0:
                    del self._per_client[client]
                transport.abort()
                return True
        return False

    def _refuse(self, transport: asyncio.Transport, why: str) -> None:
        self.refused += 1
        self._report(why)
        transport.abort()

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

    @property
    def open_connections(self) -> int:
        return len(self._recent)


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

    server: asyncio.Server
    http: GuardedServer
    url: str

    async def stop(self) -> None:
        self.server.close()
        await self.http.shutdown(timeout=10)
        await self.server.wait_closed()


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
    site = web.TCPSite(runner, host, port, ssl_context=tls, backlog=ACCEPT_BURST)
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
    """Start serving ``handler`` with the module's bounds; returns once the socket listens."""
    http = GuardedServer(handler, limits)
    try:
        server = await asyncio.get_running_loop().create_server(
            http, host, port, ssl=tls, backlog=ACCEPT_BURST
        )
    except OSError as e:
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    bound = int(server.sockets[0].getsockname()[1]) if server.sockets else port
    return RunningGuarded(server, http, _url(host, bound, tls))


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
