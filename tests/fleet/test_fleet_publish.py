"""The publisher adds each (artifact, recipe, key) to the log exactly once.

Real Redis, the real ``rebuild fleet publish`` process and the real log; the
results are sent to the broker as a worker would send them (no build is
needed to prove what the publisher does with them). Its Prometheus endpoint
is scraped for real.
"""

from __future__ import annotations

import hashlib
import re
import urllib.request
from pathlib import Path

from rebuild.fleet.broker import PUBLISH_ACTOR, PUBLISH_QUEUE, BrokerConfig, Fleet
from rebuild.fleet.jobs import Artifact, JobResult
from tests.fleet.conftest import FleetRig
from tests.fleet.conftest import Keys as KeyFiles
from tests.fleet.fleetutil import attestations, status, wait_for
from verify.intoto import GitSource

ARTIFACT = hashlib.sha256(b"the released artifact").hexdigest()


def _result(recipe: str, worker: str = "w:1") -> JobResult:
    return JobResult(
        job_key=f"{ARTIFACT}-{recipe}",
        label="demo 1.0 (demo-1.0.phar)",
        package="demo",
        version="1.0",
        artifact=Artifact("demo-1.0.phar", ARTIFACT),
        verdict="reproduced",
        source=GitSource("https://git.example.invalid/demo.git", "v1.0", "a" * 40),
        recipe_sha256=recipe,
        rebuilt_sha256=ARTIFACT,
        environment="php-8.2",
        environment_lock="b" * 64,
        tool_version="rebuild/test",
        started_at=1_700_000_000,
        finished_at=1_700_000_010,
        diff_report_sha256=None,
        causes=(),
        attempts=1,
        worker=worker,
    )


def _published(rig: FleetRig) -> bool:
    q = status(rig.broker)["queues"]["publish"]
    return bool(q["waiting"] == q["in_flight"] == q["delayed"] == 0)


def test_replayed_and_redelivered_results_never_make_a_second_log_entry(
    rig: FleetRig, keys: KeyFiles, tmp_path: Path
) -> None:
    recipe = hashlib.sha256(b"recipe one").hexdigest()
    fleet = Fleet(BrokerConfig(url=rig.broker))
    try:
        # The same result twice (a redelivered job), and a second worker's
        # result for the same artifact and recipe.
        for worker in ("w:1", "w:1", "w:2"):
            fleet.send(PUBLISH_QUEUE, PUBLISH_ACTOR, _result(recipe, worker).to_json())
        pub = rig.publisher()
        wait_for("the publish queue to drain", lambda: _published(rig), timeout=120)
        ours = attestations(rig.log_url, keys.log, keys.rebuilder, ARTIFACT)
        assert len(ours) == 1

        # The publisher's local record is lost (a new machine): the log's
        # lookup finds the entry, and nothing is added.
        pub.stop()
        rig.processes.remove(pub)
        rig.tmp = tmp_path / "second"
        rig.tmp.mkdir()
        rig.publisher()
        fleet.send(PUBLISH_QUEUE, PUBLISH_ACTOR, _result(recipe, "w:3").to_json())
        wait_for("the publish queue to drain", lambda: _published(rig), timeout=120)
        assert len(attestations(rig.log_url, keys.log, keys.rebuilder, ARTIFACT)) == 1
        assert "found-in-log" in rig.processes[-1].text()

        # Another recipe for the same artifact is another attestation.
        other = hashlib.sha256(b"recipe two").hexdigest()
        fleet.send(PUBLISH_QUEUE, PUBLISH_ACTOR, _result(other).to_json())
        wait_for(
            "the second recipe's attestation",
            lambda: len(attestations(rig.log_url, keys.log, keys.rebuilder, ARTIFACT)) == 2,
            timeout=120,
        )
    finally:
        fleet.close()

    found = attestations(rig.log_url, keys.log, keys.rebuilder, ARTIFACT)
    assert sorted(p.recipe_sha256 for _, p in found) == sorted([recipe, other])
    assert status(rig.broker)["verdicts"]["reproduced"] == 2


def test_publisher_metrics_count_actions_and_queue_depth(rig: FleetRig, keys: KeyFiles) -> None:
    recipe = hashlib.sha256(b"recipe three").hexdigest()
    pub = rig.publisher("--metrics", "127.0.0.1:0")
    m = re.search(r"metrics on (http://\S+)", pub.text())
    assert m is not None
    fleet = Fleet(BrokerConfig(url=rig.broker))
    try:
        for _ in range(2):
            fleet.send(PUBLISH_QUEUE, PUBLISH_ACTOR, _result(recipe).to_json())
    finally:
        fleet.close()
    wait_for("the publish queue to drain", lambda: _published(rig), timeout=120)
    text = urllib.request.urlopen(m.group(1), timeout=30).read().decode()
    assert 'rebuild_fleet_attestations_total{action="added",verdict="reproduced"} 1.0' in text
    assert (
        'rebuild_fleet_attestations_total{action="already-recorded",verdict="reproduced"} 1.0'
        in text
    )
    assert 'rebuild_fleet_queue_depth{queue="build",state="waiting"} 0.0' in text
