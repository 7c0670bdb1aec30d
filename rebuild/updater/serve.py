"""``rebuild mirror serve``: a tiny static HTTP(S) server for a mirror directory.

Any web server can serve a mirror (the layout is static files); this one
exists for the demo and the tests. It serves regular files under the root
only: no directory listings, no symlinks followed, no dot-files (the publish
lock, temporary files of an atomic write in progress).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from rebuild.errors import UsageError


def resolve(root: Path, rel: str) -> Path | None:
    """The regular file ``rel`` names under ``root``, or None (dot-files, symlinks, dirs)."""
    parts = rel.split("/")
    if not rel or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    path = root.joinpath(*parts)
    for p in [path, *path.parents]:
        if p == root:
            break
        if p.is_symlink():
            return None
    return path if path.is_file() else None


def make_app(root: Path) -> web.Application:
    root = root.resolve()

    async def get(request: web.Request) -> web.StreamResponse:
        path = resolve(root, request.match_info["path"])
        if path is None:
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    app = web.Application()
    app.router.add_get("/{path:.*}", get)
    return app


@dataclass
class RunningMirror:
    runner: web.AppRunner
    url: str

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start(
    root: Path, host: str, port: int, tls: ssl.SSLContext | None = None
) -> RunningMirror:
    if not root.is_dir():
        raise UsageError(f"{root}: no such directory")
    runner = web.AppRunner(make_app(root), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=tls)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    bound = int(runner.addresses[0][1]) if runner.addresses else port
    shown = f"[{host}]" if ":" in host else host
    return RunningMirror(runner, f"{'https' if tls else 'http'}://{shown}:{bound}")


async def serve_forever(
    root: Path,
    host: str,
    port: int,
    tls: ssl.SSLContext | None,
    on_ready: Callable[[str], None],
) -> None:
    running = await start(root, host, port, tls)
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
