"""Real web servers on 127.0.0.1 for tests: any handler, or a static directory."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class _Quiet(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, format: str, *args: Any) -> None:
        type(self).requests.append(self.path)


@contextmanager
def serving(handler: Callable[..., http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 answering with ``handler``; yields its URL (no slash)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def serve_directory(directory: Path) -> Iterator[tuple[str, list[str]]]:
    """A static web server over ``directory``: its base URL and the paths asked for."""
    seen: list[str] = []
    handler = type("Handler", (_Quiet,), {"requests": seen})
    with serving(functools.partial(handler, directory=str(directory))) as url:
        yield f"{url}/", seen
