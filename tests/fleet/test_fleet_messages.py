"""Broker messages are input: a forged or broken one is refused before anything is signed.

Anyone who can write to the broker can put a message there; the publisher
signs what results say. These tests prove the checks that stand between a
message and a signature, and that the status page shows hostile text as
text (rendered by a real headless Chromium).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from rebuild.fleet.jobs import (
    Artifact,
    IndexFileRef,
    Job,
    JobResult,
    MessageError,
    ReportLink,
    pypi_job,
)
from rebuild.fleet.status import render_html
from tests.compare.test_html_report import _chromium, _Dom, needs_chromium
from verify.intoto import GitSource, Normalization

A = hashlib.sha256(b"artifact").hexdigest()
B = hashlib.sha256(b"other").hexdigest()
SOURCE = GitSource("https://git.example.invalid/x.git", "v1", "c" * 40)


def _result(**changes: Any) -> JobResult:
    base = JobResult(
        job_key=f"{A}-{B}", label="x 1 (x.phar)", package="x", version="1",
        artifact=Artifact("x.phar", A), verdict="reproduced", source=SOURCE, recipe_sha256=B,
        rebuilt_sha256=A, environment="php-8.2", environment_lock=B, tool_version="rebuild/t",
        started_at=1, finished_at=2, diff_report_sha256=None, causes=(), attempts=1, worker="w:1",
    )  # fmt: skip
    return replace(base, **changes) if changes else base


def test_forged_reproduced_result_without_equal_digests_is_refused() -> None:
    good = _result()
    assert JobResult.from_json(good.to_json()) == good
    doc = good.to_json()
    doc["rebuilt_sha256"] = B  # "reproduced", but the bytes differ
    with pytest.raises(MessageError, match="reproduced"):
        JobResult.from_json(doc)
    doc = good.to_json() | {"verdict": "mismatch"}  # mismatch with equal digests
    with pytest.raises(MessageError, match="mismatch"):
        JobResult.from_json(doc)


def test_equivalent_result_needs_different_digests_and_its_normalization() -> None:
    """An equivalent result is signed as an equivalent attestation: the message must
    carry what the attestation records, and never pass off equal bytes as equivalent."""
    norm = Normalization(("zip-entry-times",), "e" * 64, "e" * 64)
    good = _result(verdict="equivalent", rebuilt_sha256=B, diff_report_sha256=B, normalization=norm)
    assert JobResult.from_json(good.to_json()) == good
    assert "normalization" not in _result().to_json()  # other verdicts keep the v1 shape
    doc = good.to_json()
    del doc["normalization"]
    with pytest.raises(MessageError, match="normalization"):
        JobResult.from_json(doc)
    with pytest.raises(MessageError, match="equivalent without two different digests"):
        JobResult.from_json(good.to_json() | {"rebuilt_sha256": A})
    forged = good.to_json()
    forged["normalization"]["rebuiltDigest"]["sha256"] = "f" * 64
    with pytest.raises(MessageError, match="normalized digests differ"):
        JobResult.from_json(forged)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("verdict", "probably-fine"),
        ("attempts", 0),
        ("recipe_sha256", "A" * 64),
        ("causes", ["x" * 201]),
        ("label", "two\nlines"),
        ("extra", 1),
    ],
)
def test_malformed_result_fields_are_refused(field: str, value: object) -> None:
    doc = _result().to_json() | {field: value}
    with pytest.raises(MessageError):
        JobResult.from_json(doc)


def test_oversized_or_inconsistent_jobs_are_refused() -> None:
    wheel = IndexFileRef("x-1-py3-none-any.whl", "https://i.invalid/x.whl", A)
    sdist = IndexFileRef("x-1.tar.gz", "https://i.invalid/x.tar.gz", B)
    job = pypi_job("x", "1", wheel, sdist)
    assert Job.from_json(job.to_json()) == job
    # A recipe key that is not the sdist's would let one target pose as another.
    with pytest.raises(MessageError, match="recipe_key"):
        Job.from_json(job.to_json() | {"recipe_key": B})
    release = Job(
        kind="release", package="x", version="1", artifact=Artifact("x.phar", A),
        recipe_key=B, source=SOURCE, statement=b"{}", artifact_sources=("/srv/a",),
    )  # fmt: skip
    assert Job.from_json(release.to_json()) == release
    big = release.to_json() | {"statement": base64.b64encode(b"x" * 70_000).decode()}
    with pytest.raises(MessageError):
        Job.from_json(big)
    with pytest.raises(MessageError):
        Job.from_json(release.to_json() | {"artifact": {"name": "../x.phar", "sha256": A}})


@needs_chromium
def test_status_page_shows_hostile_names_as_text_and_drops_script_links(tmp_path: Path) -> None:
    evil = '<script>alert("x")</script>'
    doc = {
        "broker": "redis://127.0.0.1:6379/0",
        "generated_at": 1_700_000_000,
        "verdicts": {"reproduced": 0, "mismatch": 1, "failed": 0, "error": 0},
        "attestations": 1,
        "targets_enqueued": 1,
        "queues": {"build": {"waiting": 0, "in_flight": 0, "delayed": 0, "dead": 0}},
        "workers": [],
        "running": [],
        "latest": [
            {
                "package": evil, "version": "1", "verdict": "mismatch", "causes": [evil],
                "log_index": 3, "attempts": 1, "finished_at": 1_700_000_000,
                "reports": [
                    ReportLink("comparison", "javascript:alert(1)").to_json(),
                    ReportLink("build log", "file:///srv/reports/build.log").to_json(),
                ],
            }
        ],
    }  # fmt: skip
    page = tmp_path / "index.html"
    page.write_text(render_html(doc))
    dom = _Dom()
    dom.feed(_chromium(tmp_path, "--dump-dom", page.as_uri()).stdout.decode())
    assert dom.scripts == 0
    [row] = dom.rows["latest"][1:]
    assert row[0] == evil and row[3] == evil
    assert dom.links == ["file:///srv/reports/build.log"]
