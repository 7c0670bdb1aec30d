"""``rebuild log serve --workers N``: front-end processes around one sequencer.

Real processes on 127.0.0.1. The faults: a front-end dying, the sequencer
dying under load (its front-ends must not outlive it holding the port, and
nothing acknowledged may be lost), a client reading a tile through another
front-end right after its entry was acknowledged, Ctrl-C reaching the whole
process group, and malformed frames between the processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rebuild.log import ipc
from rebuild.log.store import Pending
from tests.logutil import (
    PYTHON,
    Server,
    cli_env,
    envelope,
    http_request,
    make_key,
    run_cli,
    start_log,
)
from verify import merkle
from verify.tiles import ENTRIES, tile_for


def _front_ends(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    return sorted(kids)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _serve_args(tmp_path: Path, key: Path, port: str, workers: str | None = None) -> list[str]:
    args = ["log", "serve", "--dir", str(tmp_path / "log"), "--key", str(key)]
    args += ["--listen", f"127.0.0.1:{port}"]
    return args if workers is None else [*args, "--workers", workers]


def _wait_gone(pids: list[int], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def _add_many(url: str, tag: str, n: int) -> dict[int, bytes]:
    """Add n entries from 4 threads; return index -> entry for every acknowledged one."""

    def one(i: int) -> tuple[int, bytes] | None:
        body = envelope(f"{tag}-{i}")
        try:
            status, data = http_request(url, "POST", "/add", body)
        except OSError:
            return None
        return (json.loads(data)["index"], body) if status == 200 else None

    with ThreadPoolExecutor(4) as pool:
        return dict(r for r in pool.map(one, range(n)) if r is not None)


def test_front_ends_run_as_children_and_share_one_sequence(tmp_path: Path) -> None:
    """Two front-ends, many connections: indexes are unique and dense."""
    key = make_key(tmp_path, "fe.log.test")
    server = start_log(tmp_path / "log", key, tmp_path / "server.log", "--workers", "2")
    try:
        assert len(_front_ends(server.proc.pid)) == 2
        acked = _add_many(server.url, "dense", 200)
        assert sorted(acked) == list(range(200))
    finally:
        server.stop()
    assert server.proc.returncode == 0


def test_tile_of_a_just_acknowledged_entry_is_served_through_any_front_end(
    tmp_path: Path,
) -> None:
    """Read-your-writes across processes: the bundle tile is there on a new connection."""
    key = make_key(tmp_path, "fe.log.test")
    server = start_log(tmp_path / "log", key, tmp_path / "server.log", "--workers", "2")
    try:
        for i in range(60):
            status, data = http_request(server.url, "POST", "/add", envelope(f"ryw-{i}"))
            assert status == 200
            index = json.loads(data)["index"]
            tile = tile_for(index + 1, ENTRIES, index // 256)
            status, bundle = http_request(server.url, "GET", "/" + tile.path())
            assert status == 200, (index, tile.path(), bundle)
    finally:
        server.stop()


def test_front_end_that_dies_is_replaced_and_loses_nothing(tmp_path: Path) -> None:
    key = make_key(tmp_path, "fe.log.test")
    server = start_log(tmp_path / "log", key, tmp_path / "server.log", "--workers", "2")
    try:
        acked = _add_many(server.url, "before", 50)
        victim, other = _front_ends(server.proc.pid)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while len(kids := _front_ends(server.proc.pid)) != 2 or victim in kids:
            assert time.monotonic() < deadline, "the dead front-end was not replaced"
            time.sleep(0.05)
        assert other in kids and server.proc.poll() is None
        acked.update(_add_many(server.url, "after", 50))
        _assert_all_there(server.url, acked)  # everything acknowledged, at its index
    finally:
        server.stop()
    assert server.proc.returncode == 0
    assert "restarting it" in server.log.read_text()


def _checkpoint_size(url: str) -> int:
    status, note = http_request(url, "GET", "/checkpoint")
    return int(note.split(b"\n")[1]) if status == 200 else 0


def _assert_all_there(url: str, acked: dict[int, bytes]) -> None:
    """Every acknowledged entry is in the log at the index it was given."""
    assert acked
    for index, body in acked.items():
        leaf = merkle.leaf_hash(body).hex()
        status, data = http_request(url, "GET", f"/lookup/leaf/{leaf}")
        assert status == 200 and json.loads(data)["index"] == index


def test_killed_sequencer_takes_its_front_ends_and_keeps_acknowledged_entries(
    tmp_path: Path,
) -> None:
    """SIGKILL under load: no orphan front-end keeps the port; restart on the same port."""
    key = make_key(tmp_path, "fe.log.test")
    server = start_log(tmp_path / "log", key, tmp_path / "server.log", "--workers", "2")
    port = urlsplit(server.url).port
    kids = _front_ends(server.proc.pid)
    with ThreadPoolExecutor(1) as pool:
        load = pool.submit(_add_many, server.url, "load", 400)
        # Kill it under load, once entries are being acknowledged (the published
        # checkpoint has grown) and while more are on the way.
        deadline = time.monotonic() + 60
        while _checkpoint_size(server.url) < 20 and not load.done():
            assert time.monotonic() < deadline, "no entry was committed"
            time.sleep(0.02)
        server.kill()
        acked = load.result()
    assert _wait_gone(kids), "front-ends outlived their sequencer"
    again = Server(
        _serve_args(tmp_path, key, str(port), "2"),
        tmp_path / "again.log",
    )
    try:
        _assert_all_there(again.url, acked)
    finally:
        again.stop()


def test_ctrl_c_to_the_process_group_shuts_down_in_order(tmp_path: Path) -> None:
    key = make_key(tmp_path, "fe.log.test")
    out = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [PYTHON, "-m", "rebuild", *_serve_args(tmp_path, key, "0", "2")],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=cli_env(),
    )
    try:
        deadline = time.monotonic() + 30
        while "listening on" not in (tmp_path / "server.log").read_text():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        kids = _front_ends(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 0, (tmp_path / "server.log").read_text()
        assert _wait_gone(kids)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()


def test_bad_worker_counts_are_usage_errors(tmp_path: Path) -> None:
    key = make_key(tmp_path, "fe.log.test")
    for bad in ("-1", "65", "two", ""):
        r = run_cli(
            "log", "serve", "--dir", str(tmp_path / "log"), "--key", str(key),
            "--listen", "127.0.0.1:0", "--workers", bad,
        )  # fmt: skip
        assert r.returncode == 2
        assert "--workers" in r.stderr
        assert "Traceback" not in r.stderr


def test_add_frames_round_trip() -> None:
    entries = [
        Pending(b"x" * n, bytes([n % 256]) * 32, tuple(bytes([i]) * 32 for i in range(n % 3)))
        for n in (1, 7, 300)
    ]
    blob = ipc.encode_add(1, entries[:1]) + ipc.encode_add(0xFFFFFFFF, entries)
    assert list(ipc.decode_add(blob)) == [(1, entries[:1]), (0xFFFFFFFF, entries)]


@pytest.mark.parametrize("cut", [1, 5, 6, 10, 41, 42, 80])
def test_truncated_add_frame_is_an_ipc_error(cut: int) -> None:
    blob = ipc.encode_add(3, [Pending(b"entry", b"L" * 32, (b"S" * 32,))])
    with pytest.raises(ipc.IpcError):
        list(ipc.decode_add(blob[:-cut]))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_frames_only_ever_raise_ipc_error(data: bytes) -> None:
    for decode in (
        lambda: list(ipc.decode_add(data)),
        lambda: list(ipc.decode_results(data)),
        lambda: ipc.decode_state(data),
        lambda: ipc.decode_call(data),
        lambda: ipc.decode_u64s(data),
    ):
        with contextlib.suppress(ipc.IpcError):
            decode()


def test_auto_workers_follow_the_cores_the_server_may_use(tmp_path: Path) -> None:
    """One core: no front-ends (the IPC would only cost); two: one per core."""
    key = make_key(tmp_path, "fe.log.test")
    for cores, shape in (("0", "one process"), ("0,1", "2 front-end processes")):
        out = tmp_path / f"server-{cores}.log"
        server = Server(
            _serve_args(tmp_path, key, "0"),
            out,
            prefix=["taskset", "-c", cores],
        )
        try:
            assert f"({shape})" in out.read_text()
            assert len(_front_ends(server.proc.pid)) == (0 if cores == "0" else 2)
        finally:
            server.stop()


def test_a_flood_of_lookups_is_answered_and_never_stops_the_server(tmp_path: Path) -> None:
    """400 concurrent lookups and proofs through the front-ends: all answered, server up."""
    key = make_key(tmp_path, "fe.log.test")
    server = start_log(tmp_path / "log", key, tmp_path / "server.log", "--workers", "2")
    try:
        acked = _add_many(server.url, "flood", 20)

        async def flood() -> list[int]:
            conn = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=conn) as session:

                async def one(i: int) -> int:
                    index = i % len(acked)
                    path = (
                        f"/lookup/leaf/{merkle.leaf_hash(acked[index]).hex()}"
                        if i % 2
                        else f"/proof/{index}"
                    )
                    async with session.get(server.url + path) as resp:
                        await resp.read()
                        return resp.status

                return await asyncio.gather(*(one(i) for i in range(400)))

        assert set(asyncio.run(flood())) == {200}
        assert server.proc.poll() is None
        assert _add_many(server.url, "after-flood", 4)
    finally:
        server.stop()
    assert server.proc.returncode == 0
