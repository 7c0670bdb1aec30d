"""One flipped byte in a tile or entry bundle is found, by the server, fsck and monitors.

The damage is real: a byte of a file under ``D/tile`` is flipped on disk
(bit rot, a bad restore, an operator's mistake). The server must refuse to
start over damaged recent tiles, ``rebuild log fsck`` must find damage
anywhere and exit 1, and ``rebuild log follow`` must not accept a log whose
tiles are not the tree its checkpoint signs, on first contact or as it grows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rebuild.keystore import load_signing_key
from rebuild.log.store import LogStore, Pending
from tests import clijson
from tests.logutil import envelope, make_key, run_cli, start_log
from verify import merkle

ORIGIN = "damaged.log.test"


def _populate(directory: Path, key: Path, tags: list[str]) -> None:
    with LogStore.open(directory, load_signing_key(key), ORIGIN) as store:
        entries = [envelope(t) for t in tags]
        store.integrate([Pending(e, merkle.leaf_hash(e)) for e in entries])


def _flip(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


def _fsck(directory: Path) -> tuple[int, dict[str, object]]:
    r = run_cli("log", "fsck", "--dir", str(directory), "--json")
    assert "Traceback" not in r.stderr
    doc = clijson.envelope(r.stdout, r.returncode, "log fsck")
    assert doc["verdict"] == ("intact" if r.returncode == 0 else "damaged"), doc
    return r.returncode, doc


def _follow(url: str, state: Path, key: Path) -> tuple[int, dict[str, object]]:
    r = run_cli(
        "log", "follow", "--log", url, "--state", str(state), "--log-key", f"{key}.pub",
        "--once", "--json",
    )  # fmt: skip
    return r.returncode, clijson.envelope(r.stdout, r.returncode, "log follow")


# 300 entries: full tile/entries/000 and tile/0/000, partials 001.p/44, tile/1/000.p/1
DAMAGE = [
    "tile/entries/000",
    "tile/0/000",
    "tile/entries/001.p/44",
    "tile/0/001.p/44",
    "tile/1/000.p/1",
]


def test_fsck_of_an_intact_log_reports_ok(tmp_path: Path) -> None:
    key = make_key(tmp_path, ORIGIN)
    _populate(tmp_path / "log", key, [f"e{i}" for i in range(300)])
    _populate(tmp_path / "log", key, [f"more{i}" for i in range(10)])
    code, doc = _fsck(tmp_path / "log")
    assert code == 0, doc
    assert doc["ok"] is True and doc["size"] == 310 and doc["entries_checked"] == 310
    assert doc["checkpoints_checked"] == 3  # sizes 0, 300, 310
    human = run_cli("log", "fsck", "--dir", str(tmp_path / "log"))
    assert human.returncode == 0 and human.stdout.startswith("ok:")


@pytest.mark.parametrize("damaged", DAMAGE)
def test_flipped_byte_stops_a_restart_and_fsck_finds_it(tmp_path: Path, damaged: str) -> None:
    key = make_key(tmp_path, ORIGIN)
    log_dir = tmp_path / "log"
    _populate(log_dir, key, [f"e{i}" for i in range(300)])
    _flip(log_dir / damaged)

    code, doc = _fsck(log_dir)
    assert code == 1 and doc["ok"] is False, doc
    problems = doc["problems"]
    assert isinstance(problems, list) and problems
    r = run_cli("log", "fsck", "--dir", str(log_dir))
    assert r.returncode == 1 and "damaged" in r.stdout

    r = run_cli(
        "log", "serve", "--dir", str(log_dir), "--key", str(key), "--listen", "127.0.0.1:0",
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert ("damaged tiles" in r.stderr or "do not match" in r.stderr) and "fsck" in r.stderr


def test_fsck_finds_damage_far_from_the_right_edge(tmp_path: Path) -> None:
    """A restart checks only the tiles it reads; fsck checks every one."""
    key = make_key(tmp_path, ORIGIN)
    log_dir = tmp_path / "log"
    _populate(log_dir, key, [f"e{i}" for i in range(300)])
    for b in range(2):
        _populate(log_dir, key, [f"b{b}-{i}" for i in range(4000)])
    _flip(log_dir / "tile/entries/000")
    server = start_log(log_dir, key, tmp_path / "s.log")  # recent tiles are intact
    server.stop()
    code, doc = _fsck(log_dir)
    assert code == 1 and any("tile/entries/000" in str(p) for p in doc["problems"])  # type: ignore[attr-defined]


def test_fsck_finds_a_published_checkpoint_that_does_not_verify(tmp_path: Path) -> None:
    key = make_key(tmp_path, ORIGIN)
    log_dir = tmp_path / "log"
    _populate(log_dir, key, ["a", "b"])
    server = start_log(log_dir, key, tmp_path / "s.log")
    server.stop()
    assert _fsck(log_dir)[0] == 0
    note = (log_dir / "checkpoint").read_text().split("\n")
    note[1] = "3"
    (log_dir / "checkpoint").write_text("\n".join(note))
    code, doc = _fsck(log_dir)
    assert code == 1 and "published checkpoint" in str(doc["problems"])


def test_fsck_of_a_directory_that_is_not_a_log_is_a_usage_error(tmp_path: Path) -> None:
    r = run_cli("log", "fsck", "--dir", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "Traceback" not in r.stderr


@pytest.mark.parametrize("damaged", ["tile/entries/000", "tile/0/000"])
def test_monitor_on_first_contact_refuses_a_log_serving_damaged_tiles(
    tmp_path: Path, damaged: str
) -> None:
    key = make_key(tmp_path, ORIGIN)
    log_dir = tmp_path / "log"
    _populate(log_dir, key, [f"e{i}" for i in range(300)])
    server = start_log(log_dir, key, tmp_path / "s.log")
    try:
        _flip(log_dir / damaged)  # damaged under the running server, which serves it
        code, doc = _follow(server.url, tmp_path / "mon", key)
    finally:
        server.stop()
    assert code == 1, doc
    assert doc["verdict"] == "fork" and "do not reproduce" in str(doc["reason"])
    assert not (tmp_path / "mon" / "checkpoint.json").exists()


def test_monitor_refuses_damage_in_what_the_log_grew_by(tmp_path: Path) -> None:
    key = make_key(tmp_path, ORIGIN)
    log_dir = tmp_path / "log"
    _populate(log_dir, key, [f"e{i}" for i in range(100)])
    state = tmp_path / "mon"
    server = start_log(log_dir, key, tmp_path / "s1.log")
    try:
        assert _follow(server.url, state, key)[0] == 0
    finally:
        server.stop()
    _populate(log_dir, key, [f"more{i}" for i in range(300)])
    server = start_log(log_dir, key, tmp_path / "s2.log")
    try:
        _flip(log_dir / "tile/entries/001.p/144", 1000)  # entries 256..399: new since 100
        code, doc = _follow(server.url, state, key)
    finally:
        server.stop()
    assert code == 1, doc
    saved = json.loads((state / "checkpoint.json").read_text())
    assert saved["checkpoint"].split("\n")[1] == "100"
