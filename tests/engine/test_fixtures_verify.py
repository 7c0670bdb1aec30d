"""The fixtures rebuilt for real: Docker engine, pinned images, git repositories.

The phar and the wheel must reproduce bit for bit; the clock-embedding phar
must be a mismatch that names the entry; every hostile build must be
contained and reported ``failed``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rebuild.engine.plan import BuildPlan
from rebuild.hashing import sha256_file
from rebuild.keystore import generate_key_files
from tests.engine.conftest import verify_fixture
from verify.intoto import REBUILD_PREDICATE_TYPE, RebuildPredicate, verify_statement

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_envs")]


def test_fixture_wheel_reproduces_and_attestation_verifies(tmp_path: Path) -> None:
    key, pub = generate_key_files("rebuilder.test", tmp_path / "rebuilder.key", None)
    r = verify_fixture("python-wheel", tmp_path, key=key)
    assert r.verdict == "reproduced", r.message
    assert r.exit_code == 0
    assert r.rebuilt_sha256 == r.upstream_sha256
    assert r.upstream_sha256 == sha256_file(
        Path(__file__).parents[2]
        / "fixtures/python-wheel/published/hello_wheel-0.1.0-py3-none-any.whl"
    )
    assert r.build_log is not None and Path(r.build_log).is_file()
    # The signed attestation says exactly that, about exactly these bytes.
    assert r.attestation is not None
    vs = verify_statement(
        Path(r.attestation).read_bytes(),
        [key.verifier_key()],
        predicate_type=REBUILD_PREDICATE_TYPE,
    )
    pred = vs.statement.predicate
    assert isinstance(pred, RebuildPredicate)
    assert pred.verdict == "reproduced"
    assert pred.rebuilt_sha256 == vs.statement.subjects[0].sha256 == r.upstream_sha256
    assert pred.environment.name == "python-3.11"
    assert pred.environment.lock_sha256 == r.environment_lock
    doc = json.loads((tmp_path / "report" / "result.json").read_text())
    assert doc["verdict"] == "reproduced"
    assert pub.is_file()


def test_fixture_phar_reproduces(tmp_path: Path) -> None:
    r = verify_fixture("php-phar", tmp_path)
    assert r.verdict == "reproduced", r.message
    assert r.source["tag"] == "v1.0.0"
    assert [s.name for s in r.steps][:4] == ["fetch", "environment", "build", "compare"]


def test_clock_embedding_build_is_a_mismatch_naming_the_entry(tmp_path: Path) -> None:
    r = verify_fixture("php-nonrepro", tmp_path)
    assert r.verdict == "mismatch"
    assert r.exit_code == 1
    assert r.rebuilt_sha256 != r.upstream_sha256
    assert "content:build-info.txt" in r.causes
    assert r.diff_report is not None and Path(r.diff_report).is_file()
    assert r.diff_report_sha256 == sha256_file(r.diff_report)
    # The compare row of a mismatch never reads "ok".
    assert {s.name: s.status for s in r.steps}["compare"] == "differs"


def test_evil_build_reaching_the_network_is_contained_and_failed(tmp_path: Path) -> None:
    r = verify_fixture("evil", tmp_path, variant="network")
    assert r.verdict == "failed"
    log = Path(str(r.build_log)).read_text()
    assert "Network is unreachable" in log
    assert "ESCAPED" not in log
    assert not (tmp_path / "report" / "rebuilt" / "evil.bin").exists()


def test_evil_build_writing_outside_its_output_is_contained_and_failed(tmp_path: Path) -> None:
    r = verify_fixture("evil", tmp_path, variant="write", keep_work=True)
    assert r.verdict == "failed"
    log = Path(str(r.build_log)).read_text()
    assert "Read-only file system: '/etc/evil'" in log
    assert "Read-only file system: '/src/evil'" in log
    assert "ESCAPED" not in log
    # The source the build was given (the exported tree, kept on the host) is untouched.
    tree = tmp_path / "report" / "work" / "git" / "tree"
    assert sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*")) == ["evil.py"]
    fixture = Path(__file__).parents[2] / "fixtures" / "evil" / "src" / "evil.py"
    assert (tree / "evil.py").read_bytes() == fixture.read_bytes()


def test_evil_build_running_forever_is_killed_at_the_timeout(tmp_path: Path) -> None:
    r = verify_fixture("evil", tmp_path, variant="forever", timeout=3.0)
    assert r.verdict == "failed"
    assert "timeout" in r.message
    build = next(s for s in r.steps if s.name == "build")
    assert build.seconds < 30


def test_plan_is_a_frozen_value() -> None:
    assert BuildPlan.__dataclass_params__.frozen  # type: ignore[attr-defined]
