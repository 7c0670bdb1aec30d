"""Serving an aiohttp application on HOST:PORT (HTTP or HTTPS) until SIGINT/SIGTERM.

Shared by the small servers (the witness, the static mirror). Decides
nothing; it binds, reports the URL actually bound (port 0 picks a free
one) and shuts down cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from rebuild.errors import UsageError


@dataclass
class Running:
    runner: web.AppRunner
    url: str

    async def stop(self) -> None:
        await self.runner.cleanup()


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
    site = web.TCPSite(runner, host, port, ssl_context=tls, backlog=256)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    bound = int(runner.addresses[0][1]) if runner.addresses else port
    scheme = "https" if tls else "http"
    shown = f"[{host}]" if ":" in host else host
    return Running(runner, f"{scheme}://{shown}:{bound}")


async def serve_until_signalled(running: Running, on_ready: Callable[[str], None]) -> None:
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
