"""``rebuild fetch`` and ``rebuild verify STATEMENT``: artifacts by URL, kept only by digest.

The mirrors are real HTTP servers on 127.0.0.1 (Python's http.server over a
directory); one of them serves a trojaned file under the right name. The
rebuild of a fetched artifact is in tests/engine/test_verify_fetch.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests import clijson
from tests.logutil import RECIPE, make_key, run_cli
from tests.staticweb import serve_directory

REPO = Path(__file__).resolve().parent.parent


def _sign(tmp: Path, *extra: str) -> tuple[Path, Path, bytes]:
    maint = make_key(tmp, "maint.fetch.test")
    work = tmp / "maintainer"
    work.mkdir()
    artifact = work / "hello.phar"
    content = b"<?php echo 'the real release';\n"
    artifact.write_bytes(content)
    r = run_cli(
        "release", "sign", str(artifact), "--recipe", str(RECIPE), "--key", str(maint), *extra
    )
    assert r.returncode == 0, r.stderr
    return maint, work / "hello.phar.release.json", content


def test_fetch_keeps_the_artifact_from_the_statement_s_download_location(tmp_path: Path) -> None:
    served = tmp_path / "site"
    served.mkdir()
    with serve_directory(served) as (url, seen):
        maint, statement, content = _sign(tmp_path, "--url", url)
        (served / "hello.phar").write_bytes(content)
        out = tmp_path / "got"
        r = run_cli(
            "fetch", str(statement), "--out", str(out), "--maintainer-key", f"{maint}.pub",
            "--json",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        doc = clijson.envelope(r.stdout, 0, "fetch")
        assert (out / "hello.phar").read_bytes() == content
        assert doc["artifacts"] == [
            {
                "name": "hello.phar",
                "path": str(out / "hello.phar"),
                "sha256": hashlib.sha256(content).hexdigest(),
                "url": url + "hello.phar",
            }
        ]
        assert doc["signature_checked"] is True
        # Already there with the right digest: nothing is downloaded again.
        before = len(seen)
        again = run_cli("fetch", str(statement), "--out", str(out), "--json")
        assert clijson.envelope(again.stdout, 0, "fetch")["artifacts"][0]["url"] is None
        assert len(seen) == before


def test_a_mirror_serving_other_bytes_is_never_kept_and_the_next_one_is_tried(
    tmp_path: Path,
) -> None:
    _, statement, content = _sign(tmp_path)
    evil, good = tmp_path / "evil", tmp_path / "good"
    evil.mkdir()
    good.mkdir()
    (evil / "hello.phar").write_bytes(b"<?php system($_GET['c']);\n")
    (good / "hello.phar").write_bytes(content)
    out = tmp_path / "got"
    with serve_directory(evil) as (evil_url, _), serve_directory(good) as (good_url, _):
        alone = run_cli("fetch", str(statement), "--url", evil_url, "--out", str(out), "--json")
        assert alone.returncode == 2
        doc = clijson.envelope(alone.stdout, 2, "fetch")
        assert "not the expected" in doc["error"]["message"]
        assert not (out / "hello.phar").exists()
        assert [p.name for p in out.iterdir()] == []  # no temporary file left behind
        both = run_cli(
            "fetch", str(statement), "--url", evil_url, "--url", good_url, "--out", str(out)
        )
    assert both.returncode == 0, both.stderr
    assert (out / "hello.phar").read_bytes() == content


def test_an_untrusted_statement_contacts_no_url(tmp_path: Path) -> None:
    _, statement, content = _sign(tmp_path)
    other = make_key(tmp_path, "someone-else.fetch.test")
    site = tmp_path / "site"
    site.mkdir()
    (site / "hello.phar").write_bytes(content)
    with serve_directory(site) as (url, seen):
        r = run_cli(
            "fetch", str(statement), "--url", url, "--out", str(tmp_path / "got"),
            "--maintainer-key", f"{other}.pub", "--json",
        )  # fmt: skip
    assert r.returncode == 1, r.stderr
    doc = clijson.envelope(r.stdout, 1, "fetch")
    assert doc["verdict"] == "untrusted"
    assert seen == []


def test_a_statement_without_a_download_location_asks_for_url(tmp_path: Path) -> None:
    _, statement, _ = _sign(tmp_path)
    r = run_cli("fetch", str(statement), "--out", str(tmp_path / "got"), "--json")
    doc = clijson.envelope(r.stdout, 2, "fetch")
    assert "gives no downloadLocation" in doc["error"]["message"]
    assert "--url" in doc["error"]["hint"]


def test_plain_http_off_loopback_is_refused_at_signing(tmp_path: Path) -> None:
    maint = make_key(tmp_path, "maint.fetch.test")
    artifact = tmp_path / "hello.phar"
    artifact.write_bytes(b"x")
    r = run_cli(
        "release", "sign", str(artifact), "--recipe", str(RECIPE), "--key", str(maint),
        "--url", "http://mirror.example.org/", "--json",
    )  # fmt: skip
    doc = clijson.envelope(r.stdout, 2, "release sign")
    assert "plain http" in doc["error"]["message"]
