"""The one seam to the Docker engine: a client, and engine errors made typed.

Everything that talks to Docker goes through :func:`client` and wraps what
the SDK raises with :func:`engine_errors`, so callers only ever see
:class:`rebuild.errors.ToolError`. The SDK negotiates the API version, since
the engine here is older than current clients.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import requests

from rebuild.errors import ToolError

_lock = threading.Lock()
_client: Any = None

DEFAULT_TIMEOUT_S = 120


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def client() -> Any:
    """A shared, version-negotiated Docker client; ToolError when no engine answers."""
    global _client  # noqa: PLW0603 - one client per process: it pools connections
    with _lock:
        if _client is None:
            _probe_unix_socket()
            try:
                _client = docker.from_env(version="auto", timeout=DEFAULT_TIMEOUT_S)
            except (docker.errors.DockerException, requests.RequestException) as e:
                raise ToolError(
                    f"no Docker engine answers at {engine_address()}; run scripts/setup "
                    f"(or start dockerd) [{type(e).__name__}: {e}]"
                ) from None
        return _client


def _probe_unix_socket() -> None:
    """Fail early, and cleanly, when the engine's unix socket does not answer.

    The SDK negotiates the API version inside its constructor; when that
    connection fails it leaks the socket, so the common case (no dockerd)
    is caught here with a socket we close ourselves.
    """
    address = engine_address()
    if not address.startswith("unix://"):
        return
    path = address.removeprefix("unix://")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        try:
            s.connect(path)
        except OSError as e:
            raise ToolError(
                f"no Docker engine answers at {address}; run scripts/setup "
                f"(or start dockerd) [{e.strerror or e}]"
            ) from None


@contextlib.contextmanager
def engine_errors(what: str) -> Iterator[None]:
    """Turn Docker SDK and transport errors raised inside into ToolError."""
    try:
        yield
    except docker.errors.ImageNotFound as e:
        raise ToolError(f"{what}: image not found ({e.explanation or e})") from None
    except docker.errors.APIError as e:
        raise ToolError(f"{what}: the Docker engine refused: {e.explanation or e}") from None
    except docker.errors.DockerException as e:
        raise ToolError(f"{what}: Docker failed: {e}") from None
    except requests.RequestException as e:
        raise ToolError(
            f"{what}: lost the Docker engine at {engine_address()} "
            f"[{type(e).__name__}: {e}]; is dockerd running? (scripts/setup starts it)"
        ) from None
