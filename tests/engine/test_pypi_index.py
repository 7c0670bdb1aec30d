"""The index seam against a real PEP 691 index served on 127.0.0.1.

The server is a real HTTP server (http.server in a thread); it stands in for
pip's configured index, which this test must not depend on.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rebuild.errors import InputError, TransportError, UsageError
from rebuild.sources.pypi import PackageIndex, latest_before, locate_release, pip_config

FILES = {
    "demo-1.0.tar.gz": b"sdist bytes",
    "demo-1.0-py3-none-any.whl": b"pure wheel bytes",
    "demo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl": b"binary wheel",
    "demo-0.9-py3-none-any.whl": b"old wheel",
    "demo-1.1-py310-none-any.whl": b"new wheel for 3.10",
    "demo-1.1-py3-none-any.whl": b"new wheel",
    "demo-1.1-py311-none-any.whl": b"new wheel for 3.11",
    "demo-1.1.tar.gz": b"new sdist",
}
TAMPERED = "demo-1.0.tar.gz"


def _page(base: str, tamper: bool) -> bytes:
    times = {
        "0.9": "2024-01-01T00:00:00Z",
        "1.0": "2024-06-01T00:00:00Z",
        "1.1": "2024-09-01T00:00:00Z",
    }
    files = []
    for name, data in FILES.items():
        digest = hashlib.sha256(data).hexdigest()
        if tamper and name == TAMPERED:
            digest = hashlib.sha256(b"what the index vouched for").hexdigest()
        version = name.split("-")[1].removesuffix(".tar.gz")
        files.append(
            {
                "filename": name,
                "url": f"{base}/files/{name}",
                "hashes": {"sha256": digest},
                "upload-time": times[version],
                "yanked": False,
            }
        )
    return json.dumps({"meta": {"api-version": "1.1"}, "name": "demo", "files": files}).encode()


@pytest.fixture
def index() -> Iterator[tuple[str, dict[str, bool]]]:
    state = {"tamper": False, "html": False}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            base = f"http://127.0.0.1:{self.server.server_port}"  # type: ignore[attr-defined]
            if self.path == "/simple/demo/":
                body = b"<html></html>" if state["html"] else _page(base, state["tamper"])
                ctype = "text/html" if state["html"] else "application/vnd.pypi.simple.v1+json"
            elif self.path.startswith("/files/") and self.path[7:] in FILES:
                body, ctype = FILES[self.path[7:]], "application/octet-stream"
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple", state
    finally:
        server.shutdown()
        server.server_close()


def test_release_files_are_the_sdist_and_the_pure_wheel(index: tuple[str, dict[str, bool]]) -> None:
    rel = locate_release(PackageIndex(index[0]), "Demo", "1.0")
    assert rel.sdist.filename == "demo-1.0.tar.gz"
    assert rel.wheel.filename == "demo-1.0-py3-none-any.whl"


def test_of_several_pure_wheels_the_one_the_build_python_makes_is_chosen(
    index: tuple[str, dict[str, bool]],
) -> None:
    """backrefs 8.3.1 publishes py310 ... py315 wheels; the python-3.11 environment
    builds the py311 one, so that is the one to compare with (then a py3 one)."""
    rel = locate_release(PackageIndex(index[0]), "demo", "1.1")
    assert rel.wheel.filename == "demo-1.1-py311-none-any.whl"


def test_download_keeps_only_bytes_matching_the_index_digest(
    index: tuple[str, dict[str, bool]], tmp_path: Path
) -> None:
    url, state = index
    rel = locate_release(PackageIndex(url), "demo", "1.0")
    got = PackageIndex(url).download(rel.wheel, tmp_path)
    assert got.read_bytes() == FILES["demo-1.0-py3-none-any.whl"]
    state["tamper"] = True
    tampered = locate_release(PackageIndex(url), "demo", "1.0").sdist
    with pytest.raises(InputError, match="not the expected"):
        PackageIndex(url).download(tampered, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo-1.0-py3-none-any.whl"]


def test_latest_before_ignores_releases_after_the_cutoff(
    index: tuple[str, dict[str, bool]],
) -> None:
    idx = PackageIndex(index[0])
    assert str(latest_before(idx, "demo", datetime(2024, 7, 1, tzinfo=UTC))) == "1.0"
    assert str(latest_before(idx, "demo", datetime(2025, 1, 1, tzinfo=UTC))) == "1.1"
    assert latest_before(idx, "demo", datetime(2023, 1, 1, tzinfo=UTC)) is None


def test_index_without_the_json_api_is_refused(index: tuple[str, dict[str, bool]]) -> None:
    url, state = index
    state["html"] = True
    with pytest.raises(TransportError, match="PEP 691"):
        PackageIndex(url).files("demo")


def test_unknown_project_and_missing_release_are_input_errors(
    index: tuple[str, dict[str, bool]],
) -> None:
    with pytest.raises(InputError, match="not found"):
        PackageIndex(index[0]).files("nothing-here")
    with pytest.raises(InputError, match="no pure-Python wheel"):
        locate_release(PackageIndex(index[0]), "demo", "2.0")


def test_plain_http_to_a_remote_host_is_refused() -> None:
    with pytest.raises(UsageError, match="plain HTTP"):
        PackageIndex("http://index.invalid/simple")
    with pytest.raises(UsageError, match="scheme"):
        PackageIndex("ftp://index.invalid/simple")


def test_index_comes_from_the_override_or_pips_configuration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REBUILD_INDEX_URL", "http://127.0.0.1:9/simple/")
    assert pip_config().index_url == "http://127.0.0.1:9/simple"
    monkeypatch.delenv("REBUILD_INDEX_URL")
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.invalid/simple")
    assert pip_config().index_url == "https://mirror.invalid/simple"
