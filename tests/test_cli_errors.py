"""Errors a new user meets say what was being reached or looked for, and what to try.

Refused connections are real (a port nothing listens on); the hint is in the
JSON envelope's ``error.hint`` and on the second line of stderr.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests import clijson
from tests.logutil import PYTHON, RECIPE, cli_env, free_port, make_key, run_cli

REPO = Path(__file__).resolve().parent.parent


def test_a_broker_that_refuses_says_which_and_how_to_start_one() -> None:
    broker = f"redis://127.0.0.1:{free_port()}/0"
    r = run_cli("fleet", "status", "--broker", broker, "--json")
    doc = clijson.envelope(r.stdout, 2, "fleet status")
    assert doc["error"]["message"].startswith(f"cannot reach the broker at {broker}")
    assert "is Redis running there?" in doc["error"]["hint"]
    assert "hint: is Redis running there?" in r.stderr


def test_a_mirror_that_refuses_says_which_url(tmp_path: Path) -> None:
    maint = make_key(tmp_path, "maint.errors.test")
    artifact = tmp_path / "hello.phar"
    artifact.write_bytes(b"x")
    assert (
        run_cli(
            "release", "sign", str(artifact), "--recipe", str(RECIPE), "--key", str(maint)
        ).returncode
        == 0
    )
    url = f"http://127.0.0.1:{free_port()}/"
    r = run_cli(
        "fetch", str(tmp_path / "hello.phar.release.json"), "--url", url,
        "--out", str(tmp_path / "got"), "--json",
    )  # fmt: skip
    doc = clijson.envelope(r.stdout, 2, "fetch")
    assert f"cannot reach {url}hello.phar: connection refused" in doc["error"]["message"]


def test_an_unknown_environment_points_at_env_list() -> None:
    r = run_cli("env", "check", "no-such-environment", "--json")
    doc = clijson.envelope(r.stdout, 2, "env check")
    assert "unknown environment 'no-such-environment'" in doc["error"]["message"]
    assert doc["error"]["hint"] == "the environments there are: rebuild env list"


def test_a_reader_that_goes_away_gets_no_traceback(tmp_path: Path) -> None:
    """``rebuild ... --json | head -c0``: the pipe closes before the envelope is written."""
    key = make_key(tmp_path, "w.pipe.test")
    read, write = os.pipe()
    os.close(read)  # nobody will ever read: the first write fails with EPIPE
    try:
        proc = subprocess.run(
            [PYTHON, "-m", "rebuild", "witness", "vkey", "--key", str(key), "--json"],
            env=cli_env(),
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
