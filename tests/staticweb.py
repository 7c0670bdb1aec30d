"""A real static web server on 127.0.0.1 over a directory (a mirror, a download site)."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class _Quiet(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, format: str, *args: Any) -> None:
        type(self).requests.append(self.path)


@contextmanager
def serve_directory(directory: Path) -> Iterator[tuple[str, list[str]]]:
    """A static web server over ``directory``: its base URL and the paths asked for."""
    seen: list[str] = []
    handler = type("Handler", (_Quiet,), {"requests": seen})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(directory))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)
