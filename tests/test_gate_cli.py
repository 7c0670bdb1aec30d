"""``rebuild gate`` exit codes: 0 accepted, 1 rejected, 2 the updater's own inputs unusable.

The bundles here are built in memory (tests/gatesim.py) because only the
CLI's mapping is under test; real logs and rebuilds are in
tests/test_gate_attacks.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.gatesim import write_gate_inputs
from tests.logutil import run_cli


@pytest.fixture
def setup(tmp_path: Path) -> Path:
    write_gate_inputs(tmp_path, b"<?php echo 'cli';\n")
    return tmp_path


def _gate(d: Path, *extra: str, artifact: str = "hello.phar") -> tuple[int, Any, str]:
    r = run_cli(
        "gate",
        str(d / artifact),
        "--bundle",
        str(d / "b.json"),
        "--policy",
        str(d / "policy.toml"),
        "--state",
        str(d / "state"),
        "--json",
        *extra,
    )
    assert "Traceback" not in r.stderr
    return r.returncode, json.loads(r.stdout), r.stderr


def test_accepted_is_0_and_commits_the_state(setup: Path) -> None:
    code, doc, _ = _gate(setup)
    assert code == 0 and doc["decision"] == "accepted"
    assert doc["state"] == {"dir": str(setup / "state"), "committed": "installed"}
    assert json.loads((setup / "state" / "state.json").read_text())["installed"]["hello-phar"]


def test_rejected_is_1_and_changes_nothing(setup: Path) -> None:
    (setup / "evil.phar").write_bytes(b"evil")
    code, doc, _ = _gate(setup, artifact="evil.phar")
    assert code == 1 and doc["decision"] == "rejected" and doc["exit_code"] == 1
    assert doc["failures"][0]["code"] == "subject-mismatch"
    assert doc["state"]["committed"] == "nothing"
    assert not (setup / "state" / "state.json").exists()


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda d: (d / "policy.toml").write_text("format = 1\n"), "policy.toml"),
        (lambda d: (d / "tlog.policy").unlink(), "tlog.policy: no such file"),
        (lambda d: (d / "b.json").unlink(), "b.json: no such file"),
        (lambda d: (d / "hello.phar").unlink(), "hello.phar: no such file"),
        (
            lambda d: ((d / "state").mkdir(), (d / "state" / "state.json").write_text("{")),
            "refusing to reset it",
        ),
    ],
)
def test_unusable_policy_state_or_files_are_2(setup: Path, break_it: object, message: str) -> None:
    break_it(setup)  # type: ignore[operator]
    code, doc, err = _gate(setup)
    assert code == 2, doc
    assert message in err
    assert doc["exit_code"] == 2 and doc["error"]["kind"]


def test_help_lists_the_steps_and_exit_codes() -> None:
    r = run_cli("gate", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for phrase in (
        "1 the bundle",
        "4 every envelope used is in the log",
        "Exit 0 accepted, 1 rejected, 2 error",
    ):
        assert phrase in text
