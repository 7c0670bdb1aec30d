"""Helpers for tests that run ``rebuild log serve`` (and witnesses) as real subprocesses."""

from __future__ import annotations

import base64
import errno
import hashlib
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
# The sample recipe (its build names its output hello.phar).
RECIPE = ROOT / "fixtures" / "recipes" / "hello-phar.recipe.toml"
PYTHON = sys.executable


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_cli(
    *args: str, check: bool = False, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "rebuild", *args],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


def make_key(directory: Path, name: str) -> Path:
    out = directory / name
    run_cli("key", "generate", name, "--out", str(out), check=True)
    return out


class Server:
    """A CLI server subprocess; its URL is read from its 'listening on' line."""

    def __init__(
        self, args: list[str], log: Path, timeout: float = 30.0, prefix: Sequence[str] = ()
    ) -> None:
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            [*prefix, PYTHON, "-m", "rebuild", *args],
            env=cli_env(),
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        try:
            self.url = self.wait_for(r"listening on (https?://\S+)", timeout=timeout)[0].group(1)
        except AssertionError as e:
            self.stop()
            raise RuntimeError(f"server did not start: {e}") from None

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 30.0) -> list[re.Match[str]]:
        """The first ``count`` matches of ``pattern`` in the server's output, waiting for them."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log.read_text(errors="replace")
            found = list(re.finditer(pattern, text))
            if len(found) >= count:
                return found[:count]
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} x{count} not in the server's output: {text}")
            time.sleep(0.02)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)
        self._out.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._out.close()


def envelope(tag: str, subject: bytes | None = None) -> bytes:
    """A DSSE envelope around an in-toto statement whose subject is ``subject``."""
    digest = hashlib.sha256(subject if subject is not None else tag.encode()).hexdigest()
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": tag, "digest": {"sha256": digest}}],
        "predicateType": "https://example.org/test/v1",
        "predicate": {"tag": tag},
    }
    return json.dumps(
        {
            "payloadType": "application/vnd.in-toto+json",
            "payload": base64.b64encode(json.dumps(statement).encode()).decode(),
            "signatures": [{"keyid": "test", "sig": base64.b64encode(b"x" * 64).decode()}],
        }
    ).encode()


def start_log(directory: Path | str, key: Path | str, output: Path, *extra: str) -> Server:
    """``rebuild log serve`` on 127.0.0.1 (any port) for ``directory`` and ``key``."""
    args = ["log", "serve", "--dir", str(directory), "--key", str(key)]
    return Server([*args, "--listen", "127.0.0.1:0", *extra], output)


def http_request(
    url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    timeout: float = 30.0,
    source: str | None = None,
) -> tuple[int, bytes]:
    """One request on a new connection (from ``source``, an address to bind, if given)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(
        parts.hostname or "",
        parts.port,
        timeout=timeout,
        source_address=None if source is None else (source, 0),
    )
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def open_idle(host: str, port: int, sources: Sequence[str], n: int) -> list[socket.socket]:
    """``n`` connections spread over ``sources`` that never send a byte (non-blocking)."""
    socks: list[socket.socket] = []
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((sources[i % len(sources)], 0))
        s.setblocking(False)
        err = s.connect_ex((host, port))
        if err not in (0, errno.EINPROGRESS):
            s.close()
            raise OSError(err, f"connect from {sources[i % len(sources)]} failed")
        socks.append(s)
    return socks


def free_port() -> int:
    """A loopback port nothing listens on: free to bind, and a connection to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
