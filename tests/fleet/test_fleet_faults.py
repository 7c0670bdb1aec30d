"""The fleet under faults: real Redis, real workers (separate processes), the real log.

Each test starts ``redis-server`` on a free loopback port with its
append-only file, ``rebuild log serve``, and ``rebuild fleet`` processes,
adds real fixture releases (signed statements) to the log and lets the
fleet rebuild them on the Docker engine. Assertions read the log itself
(through its tiles, signatures checked), never the fleet's own word.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from rebuild.envs import _docker
from rebuild.envs.runner import RUN_LABEL
from rebuild.fleet.broker import BrokerConfig, Fleet, Keys
from tests.fleet.conftest import FleetRig
from tests.fleet.conftest import Keys as KeyFiles
from tests.fleet.fleetutil import (
    RedisServer,
    add_release,
    attestations,
    run_fleet,
    status,
    wait_for,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PHAR_COMMAND = ["php", "-d", "phar.readonly=0", "build.php", "/out/hello.phar"]


def _settled(broker: str) -> dict[str, Any] | None:
    """The status once nothing is queued, in flight, delayed or running."""
    doc = status(broker)
    busy = any(q[k] for q in doc["queues"].values() for k in ("waiting", "in_flight", "delayed"))
    return None if busy or doc["running"] else doc


def _building(redis_server: RedisServer) -> list[dict[str, Any]]:
    """The running records in the build step, read straight from Redis.

    ``fleet status`` is a process start per look, seconds on a loaded
    machine: slow enough to miss every few-second build step.
    """
    records = [json.loads(v) for v in redis_server.client().hvals(Keys.running)]
    return [r for r in records if r.get("step") == "build"]


def _attested(rig: FleetRig, keys: KeyFiles, sha256: str, recipe: str) -> list[Any]:
    return [
        p
        for _, p in attestations(rig.log_url, keys.log, keys.rebuilder, sha256)
        if p.recipe_sha256 == recipe
    ]


def test_worker_killed_mid_build_job_is_redelivered_and_attested_exactly_once(
    rig: FleetRig, keys: KeyFiles, tmp_path: Path, build_images: None
) -> None:
    slow = ["sh", "-c", "sleep 6; exec " + " ".join(PHAR_COMMAND)]  # to be killed mid-build
    rel = add_release(tmp_path, "php-phar", keys.maintainer, rig.log_url, command=slow)
    a = rig.worker("a")
    rig.publisher()
    assert len(rig.watch_once([rel.artifacts])["enqueued"]) == 1

    def building_on_a() -> bool:
        running = status(rig.broker)["running"]
        return any(r["step"] == "build" and r["worker"].endswith(f":{a.proc.pid}") for r in running)

    wait_for("worker a to be building", building_on_a, timeout=120)
    a.kill()
    b = rig.worker("b")

    attested = wait_for(
        "the redelivered job's attestation",
        lambda: _attested(rig, keys, rel.sha256, rel.recipe_sha256),
        timeout=240,
    )
    settled = wait_for("the fleet to settle", lambda: _settled(rig.broker), timeout=120)
    # Exactly one entry, by worker b, after a second delivery.
    assert len(_attested(rig, keys, rel.sha256, rel.recipe_sha256)) == 1
    assert attested[0].verdict == "reproduced"
    latest = settled["latest"][0]
    assert latest["attempts"] == 2
    assert latest["worker"].endswith(f":{b.proc.pid}")
    assert settled["verdicts"]["reproduced"] == 1

    # The killed worker comes back on its report directory and removes the
    # build container it left behind.
    rig.worker("a")
    root = str(tmp_path / "reports-a") + "/"
    left = [
        c
        for c in _docker.client().containers.list(all=True, filters={"label": RUN_LABEL})
        if any(str(m.get("Source", "")).startswith(root) for m in c.attrs.get("Mounts") or [])
    ]
    assert left == []


def test_broker_killed_while_jobs_are_queued_loses_none(
    rig: FleetRig,
    keys: KeyFiles,
    tmp_path: Path,
    redis_server: RedisServer,
    build_images: None,
) -> None:
    slow = ["sh", "-c", "sleep 4; exec " + " ".join(PHAR_COMMAND)]  # to be caught in flight
    releases = [
        add_release(tmp_path, "php-phar", keys.maintainer, rig.log_url, tag=f"r{i}", command=slow)
        for i in range(3)
    ]
    report = rig.watch_once([r.artifacts for r in releases])
    assert len(report["enqueued"]) == 3
    # SIGKILL: no shutdown save, only the append-only file brings the jobs back.
    redis_server.kill()
    redis_server.start()
    assert status(rig.broker)["queues"]["build"]["waiting"] == 3

    rig.worker("a")
    rig.worker("b")
    rig.publisher()
    building = wait_for("a job building", lambda: _building(redis_server), timeout=120)
    # Again, with jobs in flight and workers connected; the broker stays down
    # until that build ended, so its worker's writes after it (the step
    # record, the hand-over, the acknowledgement) all meet the outage.
    redis_server.kill()
    result = Path(building[0]["report_dir"]) / "report" / "result.json"
    wait_for("the build to end while the broker is down", result.is_file, timeout=240)
    redis_server.start()

    for rel in releases:
        wait_for(
            f"attestation for {rel.recipe_sha256[:12]}",
            lambda rel=rel: _attested(rig, keys, rel.sha256, rel.recipe_sha256),  # type: ignore[misc]
            timeout=300,
        )
    wait_for("the fleet to settle", lambda: _settled(rig.broker), timeout=180)
    for rel in releases:
        found = _attested(rig, keys, rel.sha256, rel.recipe_sha256)
        assert [p.verdict for p in found] == ["reproduced"]


def test_restarted_watcher_enqueues_nothing_twice(
    rig: FleetRig, keys: KeyFiles, tmp_path: Path
) -> None:
    rels = [
        add_release(tmp_path, "php-phar", keys.maintainer, rig.log_url, tag=f"w{i}")
        for i in range(2)
    ]
    sources = [r.artifacts for r in rels]
    first = rig.watch_once(sources)
    assert len(first["enqueued"]) == 2
    assert first["log"]["next"] == 2

    again = rig.watch_once(sources)
    assert again["enqueued"] == [] and again["log"]["from"] == 2

    # The local state is lost: the log is read from the start, the broker's
    # record of what was enqueued stops every duplicate.
    fresh = rig.watch_once(sources, state="watch-fresh")
    assert fresh["enqueued"] == [] and fresh["already_known"] == 2
    assert status(rig.broker)["queues"]["build"]["waiting"] == 2

    # A new release after the restart is enqueued, once.
    new = add_release(tmp_path, "php-phar", keys.maintainer, rig.log_url, tag="w2")
    later = rig.watch_once([*sources, new.artifacts])
    assert [e["label"] for e in later["enqueued"]] == ["hello-phar 1.0.0 (hello.phar)"]
    assert status(rig.broker)["queues"]["build"]["waiting"] == 3


def test_poison_job_ends_as_one_failed_attestation_after_bounded_attempts(
    rig: FleetRig, keys: KeyFiles, tmp_path: Path, redis_server: RedisServer, build_images: None
) -> None:
    broken = ["sh", "-c", "echo this build always fails >&2; exit 3"]
    rel = add_release(tmp_path, "php-phar", keys.maintainer, rig.log_url, command=broken)
    rig.worker("a", "--max-attempts", "3")
    rig.publisher()
    assert len(rig.watch_once([rel.artifacts])["enqueued"]) == 1
    # A malformed message is dead-lettered, not retried and not fatal to the worker.
    fleet = Fleet(BrokerConfig(url=rig.broker))
    try:
        fleet.send("build", "rebuild_fleet_build", {"format": "nonsense"})
    finally:
        fleet.close()

    found = wait_for(
        "the failed attestation",
        lambda: _attested(rig, keys, rel.sha256, rel.recipe_sha256),
        timeout=300,
    )
    settled = wait_for("the fleet to settle", lambda: _settled(rig.broker), timeout=120)
    assert [p.verdict for p in found] == ["failed"]
    assert any("exit status 3" in c or "exit 3" in c for c in found[0].causes), found[0].causes
    assert settled["latest"][0]["attempts"] == 3
    assert settled["queues"]["build"]["dead"] == 1  # the malformed message
    key = f"{rel.sha256}-{rel.recipe_sha256}"
    attempts = redis_server.client().hget(Keys.attempts, key)
    assert attempts == b"3"
    # Nothing keeps trying: a few seconds later the count has not moved.
    time.sleep(5)
    assert redis_server.client().hget(Keys.attempts, key) == b"3"
    assert len(_attested(rig, keys, rel.sha256, rel.recipe_sha256)) == 1


def test_new_releases_are_rebuilt_by_two_workers_and_shown_with_report_links(
    rig: FleetRig, keys: KeyFiles, tmp_path: Path, build_images: None
) -> None:
    from tests.compare.test_html_report import _chromium, _Dom

    phar = add_release(tmp_path, "php-phar", keys.maintainer, rig.log_url)
    nonrepro = add_release(tmp_path, "php-nonrepro", keys.maintainer, rig.log_url)
    a = rig.worker("a")
    b = rig.worker("b")
    rig.publisher()
    report = rig.watch_once([phar.artifacts, nonrepro.artifacts])
    assert len(report["enqueued"]) == 2
    for rel in (phar, nonrepro):
        wait_for(
            f"{rel.package} attested",
            lambda rel=rel: _attested(rig, keys, rel.sha256, rel.recipe_sha256),  # type: ignore[misc]
            timeout=300,
        )
    settled = wait_for("the fleet to settle", lambda: _settled(rig.broker), timeout=120)
    [reproduced] = _attested(rig, keys, phar.sha256, phar.recipe_sha256)
    [mismatch] = _attested(rig, keys, nonrepro.sha256, nonrepro.recipe_sha256)
    assert reproduced.verdict == "reproduced"
    assert mismatch.verdict == "mismatch" and mismatch.diff_report_sha256 is not None
    assert "content:build-info.txt" in mismatch.causes
    assert settled["verdicts"] == {
        "reproduced": 1,
        "equivalent": 0,
        "mismatch": 1,
        "failed": 0,
        "error": 0,
    }
    ids = {w["id"].rsplit(":", 1)[1] for w in settled["workers"] if w["alive"]}
    assert {str(a.proc.pid), str(b.proc.pid)} <= ids

    # The status page, as Chromium renders it.
    out = tmp_path / "status"
    r = run_fleet("status", "--broker", rig.broker, "--html", str(out), "--json")
    assert r.returncode == 0, r.stderr
    page = Path(json.loads(r.stdout)["html"])
    dom = _Dom()
    dom.feed(_chromium(tmp_path, "--dump-dom", page.as_uri()).stdout.decode())
    assert dom.scripts == 0
    verdicts = dict((row[0], row[1]) for row in dom.rows["verdicts"][1:])
    assert verdicts["reproduced"] == "1" and verdicts["mismatch"] == "1"
    latest = {row[0]: row for row in dom.rows["latest"][1:]}
    assert latest["hello-phar"][2] == "reproduced"
    assert latest["clock-phar"][2] == "mismatch"
    # The mismatch links its stored comparison report, and the link works.
    diff = [h for h in dom.links if "/diff/" in h]
    assert diff and all(Path(h.removeprefix("file://")).is_file() for h in diff)
    assert any(mismatch.diff_report_sha256 in h for h in diff)
    assert not any(h.startswith(("http:", "https:")) for h in dom.links)
