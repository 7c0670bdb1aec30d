"""A job that fails while the broker is down is retried once it is back, never lost.

Dramatiq acknowledges a message after its middleware ran. Its ``Retries``
re-enqueues a failed message with one broker call; with the broker down
that call fails, and the acknowledgement that follows once the broker is
back removes the only copy. The fleet's ``PatientRetries`` waits for the
broker instead. Real ``redis-server`` (killed with SIGKILL and restarted
on the same port and data), real Dramatiq worker threads in this process.
"""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
import pytest
from dramatiq import Worker

from rebuild.fleet.broker import BUILD_QUEUE, BrokerConfig, Fleet
from tests.fleet.fleetutil import RedisServer, wait_for

pytestmark = pytest.mark.slow


def test_job_failing_while_the_broker_is_down_is_retried_not_lost(
    redis_server: RedisServer,
) -> None:
    fleet = Fleet(BrokerConfig(url=redis_server.url, heartbeat_timeout=5))
    deliveries: list[dict[str, Any]] = []
    restarter: list[threading.Thread] = []

    def restart_later() -> None:
        threading.Event().wait(3)  # the job's failure meets a dead broker
        redis_server.start()

    def body(payload: dict[str, Any]) -> None:
        deliveries.append(payload)
        if len(deliveries) == 1:
            redis_server.kill()
            t = threading.Thread(target=restart_later)
            t.start()
            restarter.append(t)
            raise RuntimeError("the build failed while the broker was down")

    dramatiq.actor(
        broker=fleet.broker,
        actor_name="retry_probe",
        queue_name=BUILD_QUEUE,
        max_retries=3,
        min_backoff=100,
        max_backoff=200,
    )(body)
    worker = Worker(fleet.broker, queues={BUILD_QUEUE}, worker_threads=1, worker_timeout=100)
    fleet.send(BUILD_QUEUE, "retry_probe", {"job": 1})
    worker.start()
    try:
        wait_for("the job's second delivery", lambda: len(deliveries) >= 2, timeout=120)
        wait_for(
            "the queue to be empty",
            lambda: not any(fleet.queue_depths()[BUILD_QUEUE].values()),
            timeout=60,
        )
    finally:
        worker.stop(timeout=30_000)
        for t in restarter:
            t.join(timeout=60)
        fleet.close()
    assert deliveries == [{"job": 1}, {"job": 1}]
