"""``rebuild verify`` from the command line: targets, exit codes, attestation, log."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rebuild.engine.pipeline import StatementTarget, VerifyOptions, run_verification
from rebuild.keystore import generate_key_files
from rebuild.recipe import load_recipe
from rebuild.release import release_statement, sign_release
from tests import clijson
from tests.engine.conftest import make_fixture
from tests.logutil import make_key, run_cli, start_log
from verify.dsse import Envelope


def _signed_release(tmp_path: Path, signer: str) -> tuple[Path, Path]:
    made = make_fixture("python-wheel", tmp_path)
    key, _ = generate_key_files(signer, tmp_path / f"{signer}.key", None)
    stmt = release_statement([made.artifact], load_recipe(made.recipe))
    envelope = tmp_path / "release.dsse.json"
    envelope.write_bytes(sign_release(stmt, key))
    return envelope, made.artifact


def test_release_signed_by_an_untrusted_key_is_refused_before_fetching(tmp_path: Path) -> None:
    envelope, artifact = _signed_release(tmp_path, "mallory.test")
    _, trusted_pub = generate_key_files("maintainer.test", tmp_path / "maintainer.key", None)
    r = run_verification(
        StatementTarget(envelope, artifact, (trusted_pub,)),
        VerifyOptions(report_dir=tmp_path / "report"),
    )
    assert r.verdict == "failed"
    assert r.exit_code == 1
    assert "refused" in r.message
    assert [s.name for s in r.steps if s.status != "skipped"] == ["fetch"]


def test_artifact_not_covered_by_the_release_is_refused(tmp_path: Path) -> None:
    envelope, _ = _signed_release(tmp_path, "maintainer.test")
    other = tmp_path / "hello_wheel-0.1.0-py3-none-any.whl"
    other.write_bytes(b"a trojaned wheel")
    r = run_verification(StatementTarget(envelope, other), VerifyOptions(report_dir=tmp_path / "r"))
    assert r.verdict == "failed"
    assert "not an artifact" in r.message


@pytest.mark.docker
@pytest.mark.usefixtures("docker_envs")
def test_release_signed_by_the_maintainer_rebuilds_bit_for_bit(tmp_path: Path) -> None:
    envelope, artifact = _signed_release(tmp_path, "maintainer.test")
    pub = tmp_path / "maintainer.test.key.pub"
    r = run_verification(
        StatementTarget(envelope, artifact, (pub,)),
        VerifyOptions(report_dir=tmp_path / "report"),
    )
    assert r.verdict == "reproduced", r.message
    assert "maintainer signature by maintainer.test verified" in r.steps[0].detail


def test_malformed_target_is_a_usage_error_with_exit_2(tmp_path: Path) -> None:
    p = run_cli("verify", "pypi:attrs", "--json", "--report-dir", str(tmp_path))
    assert p.returncode == 2
    doc = json.loads(p.stdout)
    assert "pypi:NAME==VERSION" in doc["error"]["message"]
    assert "Traceback" not in p.stderr


@pytest.mark.docker
@pytest.mark.usefixtures("docker_envs")
def test_cli_attests_and_publishes_to_a_real_log(tmp_path: Path) -> None:
    log_key = make_key(tmp_path, "log.test")
    rebuilder = make_key(tmp_path, "rebuilder.test")
    server = start_log(tmp_path / "log", log_key, tmp_path / "server.log")
    try:
        p = run_cli(
            "verify",
            "--fixture",
            "python-wheel",
            "--key",
            str(rebuilder),
            "--log",
            server.url,
            "--report-dir",
            str(tmp_path / "report"),
            "--json",
            timeout=300,
        )
    finally:
        server.stop()
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)  # exactly one JSON document
    assert doc["verdict"] == "reproduced"
    assert doc["log_entry"]["index"] == 0
    assert doc["log_entry"]["proof"].startswith("c2sp.org/tlog-proof@v1")
    envelope = Envelope.parse(Path(doc["attestation"]).read_bytes())
    assert envelope.signatures
    assert [s["name"] for s in doc["steps"]] == [
        "fetch",
        "environment",
        "build",
        "compare",
        "attest",
        "publish",
    ]
    assert all(s["status"] == "ok" for s in doc["steps"])


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.usefixtures("docker_envs", "package_index")
def test_pypi_attrs_24_2_0_reproduces_bit_for_bit(tmp_path: Path) -> None:
    p = run_cli(
        "verify",
        "pypi:attrs==24.2.0",
        "--json",
        "--report-dir",
        str(tmp_path / "r"),
        timeout=600,
    )
    doc = json.loads(p.stdout)
    assert doc["verdict"] == "reproduced", doc.get("message")
    assert doc["rebuilt_sha256"] == (
        "81921eb96de3191c8258c199618104dd27ac608d9366f5e35d011eae1867ede2"
    )
    assert doc["upstream_sha256"] == doc["rebuilt_sha256"]
    assert p.returncode == 0
    assert os.path.isfile(doc["build_log"])


def test_log_without_a_key_is_a_usage_error(tmp_path: Path) -> None:
    p = run_cli("verify", "--fixture", "python-wheel", "--log", "http://127.0.0.1:9", "--json")
    assert p.returncode == 2
    assert "--key" in json.loads(p.stdout)["error"]["message"]


@pytest.mark.docker
@pytest.mark.usefixtures("docker_envs")
def test_relative_report_dir_works_from_any_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """scripts/setup passes a relative --report-dir; git and the runner work
    elsewhere, so it must be made absolute before anything uses it."""
    from rebuild.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["verify", "--fixture", "python-wheel", "--report-dir", "rel", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0, doc
    assert doc["verdict"] == "reproduced"
    assert doc["report_dir"] == str(tmp_path / "rel")
    assert (tmp_path / "rel" / "build.log").is_file()


@pytest.mark.docker
@pytest.mark.usefixtures("docker_envs")
def test_a_log_that_refuses_the_connection_keeps_the_reproduced_verdict(tmp_path: Path) -> None:
    """The build reproduced and the attestation is signed; the log is down. The
    verdict is a fact about the build and stays; the failed publish is exit 2
    with an error saying how to publish the kept attestation later."""
    rebuilder = make_key(tmp_path, "rebuilder.test")
    report = tmp_path / "report"
    p = run_cli(
        "verify", "--fixture", "php-phar", "--key", str(rebuilder),
        "--log", "http://127.0.0.1:1", "--report-dir", str(report), "--json",
        timeout=300,
    )  # fmt: skip
    assert p.returncode == 2, p.stderr
    doc = clijson.envelope(p.stdout, 2, "verify")
    assert doc["verdict"] == "reproduced"
    assert doc["rebuilt_sha256"] == doc["upstream_sha256"] is not None
    assert (report / "rebuilt" / "hello.phar").is_file()
    saved = json.loads((report / "result.json").read_text())
    assert saved["verdict"] == "reproduced" and saved["rebuilt_sha256"] == doc["rebuilt_sha256"]
    assert doc["error"]["kind"] == "PublishError"
    assert "127.0.0.1:1" in doc["error"]["message"]
    assert doc["error"]["hint"].startswith("publish it later: rebuild log add --log")
    assert doc["attestation"] in doc["error"]["hint"]
    steps = {s["name"]: s["status"] for s in doc["steps"]}
    assert steps["compare"] == "ok" and steps["attest"] == "ok" and steps["publish"] == "error"

    human = run_cli(
        "verify", "--fixture", "php-phar", "--key", str(rebuilder),
        "--log", "http://127.0.0.1:1", "--report-dir", str(tmp_path / "r2"),
        timeout=300,
    )  # fmt: skip
    assert human.returncode == 2
    assert "verdict: reproduced" in human.stdout
    assert "None" not in human.stdout
    assert "publish it later: rebuild log add" in human.stderr
