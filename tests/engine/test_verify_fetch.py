"""``rebuild verify STATEMENT``: the artifact is fetched from the statement's download
location (a real web server on 127.0.0.1), checked by digest, and rebuilt."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import clijson
from tests.engine.conftest import make_fixture
from tests.logutil import make_key, run_cli
from tests.staticweb import serve_directory


@pytest.mark.docker
@pytest.mark.usefixtures("docker_envs")
def test_verify_a_statement_alone_fetches_the_artifact_and_reproduces_it(tmp_path: Path) -> None:
    made = make_fixture("php-phar", tmp_path)
    maint = make_key(tmp_path, "maint.fetch.test")
    site = tmp_path / "site"
    site.mkdir()
    (site / made.artifact.name).write_bytes(made.artifact.read_bytes())
    with serve_directory(site) as (url, seen):
        statement = tmp_path / "release.json"
        r = run_cli(
            "release", "sign", str(made.artifact), "--recipe", str(made.recipe), "--key",
            str(maint), "--url", url, "--out", str(statement),
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        report = tmp_path / "report"
        r = run_cli(
            "verify", str(statement), "--maintainer-key", f"{maint}.pub",
            "--report-dir", str(report), "--json", timeout=300,
        )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = clijson.envelope(r.stdout, 0, "verify")
    assert doc["verdict"] == "reproduced"
    assert (report / "upstream" / made.artifact.name).read_bytes() == made.artifact.read_bytes()
    assert seen == [f"/{made.artifact.name}"]
    fetch_step = next(s for s in doc["steps"] if s["name"] == "fetch")
    assert f"fetched {made.artifact.name} from {url}" in fetch_step["detail"]
