"""A full disk: the log refuses while full, resumes by itself, loses and duplicates nothing.

The fault is real: the log directory is on a small tmpfs mounted by the test
(it needs root, as the test suite runs), and a filler file takes every free
byte while writers keep adding entries. Each writer retries a 503 until it
gets its index, exactly as a client should. The disk is filled several
times, leaving 0 bytes to a few hundred KiB free, so the failure strikes at
different places (tile writes, the log's commit, the lookup index's commit,
the checkpoint's publication). A 503 must mean "not in the log" (a retry
must not duplicate it), an acknowledgement must never be lost, and once the
filler is deleted the log must go on without a restart.
"""

from __future__ import annotations

import errno
import http.client
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.logutil import envelope, http_request, make_key, run_cli, start_log
from verify import merkle

WRITERS = 6
PER_WRITER = 150


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


PAGE = 4096


def _fill(directory: Path) -> list[Path]:
    """Take every free byte of the filesystem, in page-sized files (to give back one by one)."""
    directory.mkdir(exist_ok=True)
    pages: list[Path] = []
    page = b"f" * PAGE
    while True:
        path = directory / f"{len(pages)}"
        try:
            with path.open("wb", buffering=0) as f:
                f.write(page)
        except OSError as e:
            assert e.errno == errno.ENOSPC
            path.unlink(missing_ok=True)
            break
        pages.append(path)
    return pages


class Writer(threading.Thread):
    def __init__(self, url: str, tag: str) -> None:
        super().__init__()
        self.url = url
        self.tag = tag
        self.acked: dict[int, bytes] = {}
        self.refused = 0
        self.errors: list[str] = []

    def run(self) -> None:
        parts = urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
        try:
            for i in range(PER_WRITER):
                body = envelope(f"{self.tag}-{i}")
                deadline = time.monotonic() + 120
                while True:
                    conn.request("POST", "/add", body=body)
                    resp = conn.getresponse()
                    data = resp.read()
                    if resp.status == 200:
                        self.acked[json.loads(data)["index"]] = body
                        break
                    if resp.status != 503 or time.monotonic() > deadline:
                        self.errors.append(f"{resp.status} {data[:200]!r}")
                        return
                    self.refused += 1
                    time.sleep(0.02)
        except (OSError, http.client.HTTPException) as e:
            self.errors.append(repr(e))
        finally:
            conn.close()


def test_full_disk_refuses_then_resumes_without_losing_or_duplicating(
    tmp_path: Path, small_disk: Path
) -> None:
    key = make_key(tmp_path, "full.log.test")
    log_dir = small_disk / "log"
    server = start_log(log_dir, key, tmp_path / "server.log")
    filler = small_disk / "filler"  # a directory of page-sized files
    try:
        writers = [Writer(server.url, f"w{n}") for n in range(WRITERS)]
        for w in writers:
            w.start()

        def acked() -> int:
            return sum(len(w.acked) for w in writers)

        for cycle in range(3):
            goal = (cycle + 1) * WRITERS * PER_WRITER // 4
            deadline = time.monotonic() + 60
            while acked() < goal and any(w.is_alive() for w in writers):
                assert time.monotonic() < deadline, f"cycle {cycle}: the log did not resume"
                time.sleep(0.02)
            pages = _fill(filler)
            # Give space back a page at a time, so each write of a batch (tiles,
            # the commit, the index, the checkpoint) in turn finds the disk full.
            for page in pages[:150]:
                page.unlink()
                time.sleep(0.01)
            shutil.rmtree(filler)  # the space comes back; nobody restarts anything
        for w in writers:
            w.join(timeout=240)
            assert not w.is_alive(), "a writer never got its entries in"
            assert not w.errors, w.errors
        assert sum(w.refused for w in writers) > 0, "the disk never filled: this proves nothing"

        # every entry was acknowledged exactly once, and the log holds exactly those
        every = {i: b for w in writers for i, b in w.acked.items()}
        assert len(every) == WRITERS * PER_WRITER
        assert sorted(every) == list(range(len(every))), "an index is missing or reused"
        deadline = time.monotonic() + 30
        while True:  # the checkpoint covering everything gets published (retried if it failed)
            status, note = http_request(server.url, "GET", "/checkpoint")
            if status == 200 and int(note.split(b"\n")[1]) == len(every):
                break
            assert time.monotonic() < deadline, "the checkpoint was never republished"
            time.sleep(0.1)
        for index, body in list(every.items())[:: max(1, len(every) // 50)]:
            status, data = http_request(
                server.url, "GET", f"/lookup/leaf/{merkle.leaf_hash(body).hex()}"
            )
            assert status == 200 and json.loads(data)["index"] == index
    finally:
        shutil.rmtree(filler, ignore_errors=True)
        server.stop()
    assert server.proc.returncode == 0
    # a full disk is not a log flood: failures are rate limited per process
    lines = server.log.read_text().splitlines()
    assert len(lines) < 400, f"{len(lines)} lines of server log"
    r = run_cli("log", "fsck", "--dir", str(log_dir), "--json")
    assert r.returncode == 0, r.stdout
    assert json.loads(r.stdout)["size"] == WRITERS * PER_WRITER
