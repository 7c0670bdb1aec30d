"""``rebuild demo`` end to end: every expected outcome, asserted by name.

The demo is run the way a newcomer runs it, as a real ``rebuild demo --json``
process: a real log with three real witnesses, real HTTPS mirrors, the real
updater daemon, three ``rebuild verify`` rebuilders in the pinned php-8.2
environment (Docker). Each attack must be refused with the gate's own reason
for it, and each honest release installed byte for byte; if any component
stops doing its job (say the gate's rebuilder quorum or witness quorum is
disabled) the matching outcome fails and so does this test.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import clijson
from tests.logutil import run_cli

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# outcome -> the gate's failure code that must be among its reasons (None: an honest step)
EXPECTED: dict[str, str | None] = {
    "rebuilders-reproduce-1.0.0": None,
    "tampered-phar-refused": "subject-mismatch",
    "update-installs-1.0.0": None,
    "rebuilders-reproduce-1.1.0": None,
    "forked-log-refused": "fork",
    "unwitnessed-checkpoint-refused": "witness-quorum",
    "update-installs-1.1.0": None,
    "backdoored-build-refused": "threshold-not-met",
    "downgrade-refused": "downgrade",
}


def _run_demo(*args: str) -> tuple[int, dict[str, Any], str]:
    r = run_cli("demo", *args, "--json", timeout=900)
    try:
        doc = clijson.envelope(r.stdout, r.returncode, "demo")
    except ValueError as e:
        raise AssertionError(f"not one JSON document (exit {r.returncode}): {r.stdout}") from e
    assert isinstance(doc, dict)
    return r.returncode, doc, r.stderr


@pytest.fixture
def demo_dir() -> Iterator[Path]:
    """A directory other users can reach (pytest's own is private to root), removed after."""
    d = Path(tempfile.mkdtemp(prefix="rebuild-demo-test-"))
    d.chmod(0o755)
    try:
        yield d / "demo"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_the_demo_installs_each_honest_release_and_refuses_every_attack_with_the_gates_reason(
    demo_dir: Path,
) -> None:
    keep = demo_dir
    code, doc, err = _run_demo("--keep", str(keep))
    outcomes = {o["name"]: o for o in doc.get("outcomes", [])}
    assert doc.get("error") is None, f"the demo could not run: {doc.get('error')}\n{err[-3000:]}"
    assert list(outcomes) == list(EXPECTED), f"outcomes: {list(outcomes)}"
    for name, code_expected in EXPECTED.items():
        o = outcomes[name]
        assert o["ok"] is True, f"{name}: {o['observed']}"
        assert o["attack_succeeded"] is False, f"{name}: {o['observed']}"
        if code_expected is not None:
            assert o["kind"] == "attack"
            codes = {g["code"] for g in o["gate"]}
            assert code_expected in codes, f"{name}: the gate said {sorted(codes)}"
        else:
            assert o["kind"] == "flow"
    assert code == 0
    assert (doc["format"], doc["command"], doc["exit_code"], doc["ok"], doc["verdict"]) == (
        "rebuild-output/v1",
        "demo",
        0,
        True,
        "expected",
    )
    assert doc["unexpected"] == [] and doc["attacks_succeeded"] == []
    # The attacks that reach the daemon change nothing installed: 1.1.0, the maintainer's bytes.
    installed = keep / "updater" / "install" / "current" / "hello.phar"
    assert installed.read_bytes() == (keep / "maintainer" / "1.1.0" / "hello.phar").read_bytes()
    # The web side ran as an unprivileged user when the demo ran as root.
    if os.geteuid() == 0:
        assert (doc["users"]["daemon"], doc["users"]["web"]) == ("root", "nobody"), doc["users"]
    # Every step is timed (bench_demo.py and docs/benchmarks.md read these).
    assert doc["steps"] and all(s["seconds"] >= 0 for s in doc["steps"])
    assert doc["seconds"] >= sum(s["seconds"] for s in doc["steps"]) * 0.99


def test_a_demo_directory_that_is_not_empty_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("mine\n")
    code, doc, _ = _run_demo("--keep", str(tmp_path))
    assert code == 2
    assert doc["exit_code"] == 2 and doc["ok"] is False
    assert doc["error"]["kind"] == "InputError" and "not empty" in doc["error"]["message"]
    assert doc["outcomes"] == []
    assert [p.name for p in tmp_path.iterdir()] == ["precious.txt"]
