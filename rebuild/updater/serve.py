"""``rebuild mirror serve``: a tiny static HTTP(S) server for a mirror directory.

Any web server can serve a mirror (the layout is static files); this one
exists for the demo and the tests. It serves regular files under the root
only: no directory listings, no symlinks followed, no dot-files (the publish
lock, temporary files of an atomic write in progress).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from rebuild.errors import UsageError
from rebuild.httpserve import Running, serve_until_signalled, start_app


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


async def start(root: Path, host: str, port: int, tls: ssl.SSLContext | None = None) -> Running:
    """Serve the mirror at ``root``; returns once the socket listens (port 0: any)."""
    if not root.is_dir():
        raise UsageError(f"{root}: no such directory")
    return await start_app(make_app(root), host, port, tls)


async def serve_forever(
    root: Path,
    host: str,
    port: int,
    tls: ssl.SSLContext | None,
    on_ready: Callable[[str], None],
) -> None:
    await serve_until_signalled(await start(root, host, port, tls), on_ready)
