"""``rebuild log follow`` catches forks; the log serves HTTPS to a verifying client.

The forked log is real: two directories signed with the same log key but
holding different entries, each served by ``rebuild log serve`` in turn at
the monitor's URL, exactly what a log showing different views to different
users would do.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import trustme

from rebuild.keystore import load_signing_key
from rebuild.log.store import LogStore, Pending
from tests.logutil import Server, envelope, make_key, run_cli, start_log
from verify import merkle

ORIGIN = "follow.log.test"


def _populate(directory: Path, key_file: Path, tags: list[str]) -> None:
    with LogStore.open(directory, load_signing_key(key_file), ORIGIN) as store:
        entries = [envelope(t) for t in tags]
        store.integrate([Pending(e, merkle.leaf_hash(e)) for e in entries])


@contextmanager
def _serving(directory: Path, key_file: Path, log: Path, *extra: str) -> Iterator[Server]:
    server = start_log(directory, key_file, log, *extra)
    try:
        yield server
    finally:
        server.stop()


def _follow(url: str, state: Path, key_file: Path) -> tuple[int, dict[str, object]]:
    r = run_cli(
        "log",
        "follow",
        "--log",
        url,
        "--state",
        str(state),
        "--log-key",
        f"{key_file}.pub",
        "--once",
        "--json",
    )
    return r.returncode, json.loads(r.stdout)


def test_monitor_accepts_honest_growth(tmp_path: Path) -> None:
    key = make_key(tmp_path, ORIGIN)
    _populate(tmp_path / "log", key, ["a0", "a1", "a2"])
    state = tmp_path / "mon"
    with _serving(tmp_path / "log", key, tmp_path / "s1.log") as s:
        code, doc = _follow(s.url, state, key)
        assert (code, doc["status"], doc["size"]) == (0, "initial", 3)
        for i in range(3):
            entry = tmp_path / f"e{i}.json"
            entry.write_bytes(envelope(f"more-{i}"))
            assert run_cli("log", "add", "--log", s.url, str(entry)).returncode == 0
        code, doc = _follow(s.url, state, key)
        assert (code, doc["status"], doc["previous_size"], doc["size"]) == (0, "grew", 3, 6)
        code, doc = _follow(s.url, state, key)
        assert (code, doc["status"]) == (0, "unchanged")


def test_monitor_reports_a_forked_log_as_a_security_error(tmp_path: Path) -> None:
    key = make_key(tmp_path, ORIGIN)
    _populate(tmp_path / "honest", key, ["a0", "a1", "a2"])
    _populate(tmp_path / "forked", key, ["a0", "b1", "b2", "b3", "b4"])
    state = tmp_path / "mon"
    with _serving(tmp_path / "honest", key, tmp_path / "s1.log") as s:
        assert _follow(s.url, state, key)[0] == 0
    with _serving(tmp_path / "forked", key, tmp_path / "s2.log") as s:
        code, doc = _follow(s.url, state, key)
    assert code == 1
    error = doc["reason"]
    assert isinstance(error, dict) and error["kind"] == "ForkError"
    assert "not consistent" in str(error["message"])
    assert list(state.glob("fork-evidence-*.txt"))
    # the monitor still holds the checkpoint it accepted, not the forked one
    saved = json.loads((state / "checkpoint.json").read_text())
    assert saved["checkpoint"].split("\n")[1] == "3"


def test_monitor_reports_two_roots_for_one_size(tmp_path: Path) -> None:
    key = make_key(tmp_path, ORIGIN)
    _populate(tmp_path / "honest", key, ["a0", "a1"])
    _populate(tmp_path / "forked", key, ["a0", "evil"])
    state = tmp_path / "mon"
    with _serving(tmp_path / "honest", key, tmp_path / "s1.log") as s:
        assert _follow(s.url, state, key)[0] == 0
    with _serving(tmp_path / "forked", key, tmp_path / "s2.log") as s:
        code, doc = _follow(s.url, state, key)
    assert code == 1 and "two different roots" in str(doc["reason"])


def test_monitor_rejects_tiles_that_do_not_match_the_signed_root(tmp_path: Path) -> None:
    key = make_key(tmp_path, ORIGIN)
    _populate(tmp_path / "log", key, ["a0", "a1", "a2"])
    with _serving(tmp_path / "log", key, tmp_path / "s.log") as s:
        (tmp_path / "log/tile/0/000.p/3").write_bytes(bytes(96))
        code, doc = _follow(s.url, tmp_path / "mon", key)
    assert code == 1 and "do not reproduce" in str(doc["reason"])


def test_monitor_refuses_a_checkpoint_signed_by_another_key(tmp_path: Path) -> None:
    key = make_key(tmp_path, ORIGIN)
    (tmp_path / "other").mkdir()
    other = make_key(tmp_path / "other", ORIGIN)  # same name, another key
    _populate(tmp_path / "log", key, ["a0"])
    with _serving(tmp_path / "log", key, tmp_path / "s.log") as s:
        code, _ = _follow(s.url, tmp_path / "mon", other)
    assert code == 1


def test_log_over_https_with_a_ca_bundle(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    key = make_key(tmp_path, ORIGIN)
    entry = tmp_path / "entry.json"
    entry.write_bytes(envelope("tls"))
    with _serving(
        tmp_path / "log",
        key,
        tmp_path / "s.log",
        "--tls-cert",
        str(tmp_path / "server.pem"),
        "--tls-key",
        str(tmp_path / "server.pem"),
    ) as s:
        assert s.url.startswith("https://")
        r = run_cli(
            "log",
            "add",
            "--log",
            s.url,
            str(entry),
            "--log-ca-bundle",
            str(tmp_path / "ca.pem"),
            "--wait",
            "--json",
        )
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["proof"].startswith("c2sp.org/tlog-proof@v1\n")
        # without the CA the client refuses the untrusted certificate
        r = run_cli("log", "add", "--log", s.url, str(entry))
        assert r.returncode == 2 and "TLS" in r.stderr


def test_monitor_reports_a_lagging_mirror_as_stale_and_keeps_its_newer_state(
    tmp_path: Path,
) -> None:
    """A static mirror still serving an older checkpoint is stale, not a fork, not adopted.

    The mirror is a real static web server (Python's http.server) over a copy
    of the log directory, the layout tlog-tiles says any such server can serve.
    """
    key = make_key(tmp_path, ORIGIN)
    _populate(tmp_path / "log", key, ["a0", "a1", "a2"])
    state = tmp_path / "mon"
    with _serving(tmp_path / "log", key, tmp_path / "s1.log") as s:
        assert _follow(s.url, state, key)[1]["size"] == 3
        old_checkpoint = (tmp_path / "log" / "checkpoint").read_bytes()
        # 300 more: past a full tile, so the newer tree has tiles the older lacks
        body = b"".join(
            len(e).to_bytes(2, "big") + e for e in (envelope(f"more-{i}") for i in range(150))
        )
        for _ in range(2):
            status, _ = _post(s.url, "/add-bundle", body)
            assert status == 200
        code, doc = _follow(s.url, state, key)
        assert (code, doc["status"], doc["size"]) == (0, "grew", 303)
    mirror = tmp_path / "mirror"
    shutil.copytree(tmp_path / "log", mirror, ignore=shutil.ignore_patterns("state"))
    (mirror / "checkpoint").write_bytes(old_checkpoint)
    static = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "0"],
        cwd=mirror,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert static.stdout is not None
        port = re.search(r"port (\d+)", static.stdout.readline())
        assert port is not None
        code, doc = _follow(f"http://127.0.0.1:{port.group(1)}", state, key)
        assert (code, doc["status"], doc["previous_size"], doc["size"]) == (0, "stale", 303, 3)
    finally:
        static.terminate()
        static.wait(timeout=30)
        if static.stdout is not None:
            static.stdout.close()
    # not adopted: against the log itself the monitor is still at 303
    with _serving(tmp_path / "log", key, tmp_path / "s2.log") as s:
        code, doc = _follow(s.url, state, key)
        assert (code, doc["status"], doc["size"]) == (0, "unchanged", 303)


def _post(url: str, path: str, body: bytes) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.request("POST", path, body=body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()
