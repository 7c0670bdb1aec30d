"""``fleet watch --pypi``: new versions on the index are enqueued once.

The first test serves a real PEP 691 JSON index on loopback and points
pip's configuration at it (``PIP_INDEX_URL`` is pip's own environment
setting, which ``pip config list`` reports and rebuild reads, exactly as for
a configured mirror): the stand-in is the index, not pip's configuration.
The second asks the real index pip is configured with on this machine.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rebuild.fleet.broker import NAMESPACE
from tests.fleet.fleetutil import RedisServer, run_fleet
from tests.logutil import PYTHON, cli_env


class _Index:
    """A PEP 691 index: ``/simple/<project>/`` as application/vnd.pypi.simple.v1+json."""

    def __init__(self) -> None:
        self.files: dict[str, list[dict[str, Any]]] = {}
        index = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                project = self.path.strip("/").split("/")[-1]
                if project not in index.files:
                    self.send_error(404)
                    return
                body = json.dumps(
                    {"meta": {"api-version": "1.1"}, "name": project, "files": index.files[project]}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/vnd.pypi.simple.v1+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def release(self, project: str, version: str, *, yanked: bool = False) -> None:
        stem = project.replace("-", "_")  # wheel and PEP 625 sdist names
        for name in (f"{stem}-{version}-py3-none-any.whl", f"{stem}-{version}.tar.gz"):
            self.files.setdefault(project, []).append(
                {
                    "filename": name,
                    "url": f"{self.url}/../files/{name}",
                    "hashes": {"sha256": hashlib.sha256(name.encode()).hexdigest()},
                    "upload-time": "2024-01-01T00:00:00Z",
                    "yanked": yanked,
                }
            )


@pytest.fixture
def index() -> Iterator[_Index]:
    i = _Index()
    try:
        yield i
    finally:
        i.server.shutdown()
        i.server.server_close()


def _watch(broker: str, state: Path, index_url: str, *projects: str) -> dict[str, Any]:
    args = [PYTHON, "-m", "rebuild", "fleet", "watch", "--broker", broker, "--once", "--json"]
    args += ["--state", str(state)]
    for p in projects:
        args += ["--pypi", p]
    r = subprocess.run(
        args,
        env={**cli_env(), "PIP_INDEX_URL": index_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc


def _labels(doc: dict[str, Any]) -> list[str]:
    return [e["label"] for e in doc["enqueued"]]


def test_new_index_versions_are_enqueued_once_across_restarts(
    tmp_path: Path, redis_server: RedisServer, index: _Index
) -> None:
    for v in ("1.0", "1.1", "1.2"):
        index.release("demo-pkg", v)
    index.release("demo-pkg", "1.3", yanked=True)
    state = tmp_path / "watch"
    # First sight: the newest version only (--backfill 1), yanked ones never.
    first = _watch(redis_server.url, state, index.url, "demo-pkg")
    assert _labels(first) == ["pypi:demo-pkg==1.2"]
    assert first["index"]["demo-pkg"]["versions"] == 3

    index.release("demo-pkg", "2.0")
    second = _watch(redis_server.url, state, index.url, "demo-pkg")
    assert _labels(second) == ["pypi:demo-pkg==2.0"]

    # Restarted, and with its local state lost: nothing twice.
    assert _labels(_watch(redis_server.url, state, index.url, "demo-pkg")) == []
    fresh = _watch(redis_server.url, tmp_path / "fresh", index.url, "demo-pkg")
    assert _labels(fresh) == [] and fresh["already_known"] == 1
    queued = redis_server.client().llen(f"{NAMESPACE}:build")
    assert queued == 2

    # The job carries the files the index listed, for a worker elsewhere.
    [raw] = redis_server.client().hvals(f"{NAMESPACE}:build.msgs")[:1]
    job = json.loads(raw)["args"][0]
    assert job["kind"] == "pypi" and job["sdist"]["filename"].endswith(".tar.gz")


def test_real_index_newest_release_is_enqueued(tmp_path: Path, redis_server: RedisServer) -> None:
    """Against the index pip is configured with here (no override)."""
    r = run_fleet(
        "watch", "--broker", redis_server.url, "--once", "--json", "--pypi", "attrs",
        "--state", str(tmp_path / "watch"),
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    [label] = _labels(doc)
    assert label.startswith("pypi:attrs==")
    assert doc["index"]["attrs"]["versions"] > 20  # attrs has many releases with wheels
