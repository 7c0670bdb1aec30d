"""Prometheus metrics for the long-running processes (``--metrics HOST:PORT``).

Each process gets its own registry and serves it in the Prometheus text
format from a thread (``prometheus_client``). Values that already live
somewhere (the log's size, the checkpoint file's age, queue depths in the
broker) are read when scraped, not copied; only events (batches, jobs,
witness failures) are counted as they happen. Imported only by commands run
with ``--metrics``: ``prometheus_client`` is not loaded at CLI start-up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rebuild.errors import UsageError
from rebuild.listen import parse_listen

# Rebuilds take seconds to an hour; log batches take milliseconds.
JOB_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


@dataclass
class MetricsServer:
    """A running exposition endpoint; ``url`` is where Prometheus scrapes."""

    url: str
    _shutdown: Callable[[], None]

    def close(self) -> None:
        self._shutdown()


def serve(spec: str, registry: CollectorRegistry) -> MetricsServer:
    """Serve ``registry`` on ``spec`` (HOST:PORT; port 0 picks a free one)."""
    host, port = parse_listen(spec, "--metrics")
    try:
        httpd, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as e:
        raise UsageError(f"--metrics {spec}: cannot listen: {e.strerror or e}") from None
    bound = httpd.server_address[1]
    shown = f"[{host}]" if ":" in host else host

    def shutdown() -> None:
        httpd.shutdown()
        httpd.server_close()

    return MetricsServer(f"http://{shown}:{bound}/metrics", shutdown)


class _Callback(Collector):
    """Gauges computed at scrape time."""

    def __init__(self, read: Callable[[], Iterable[Metric]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        return list(self._read())


def gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> Metric:
    g = GaugeMetricFamily(name, doc, labels=sorted(labels) if labels else None)
    if labels:
        g.add_metric([labels[k] for k in sorted(labels)], value)
    else:
        g.add_metric([], value)
    return g


def on_scrape(registry: CollectorRegistry, read: Callable[[], Iterable[Metric]]) -> None:
    registry.register(_Callback(read))


# -- the audit log ------------------------------------------------------------------------


class LogMetrics:
    """``rebuild log serve``: entries, batch latency, checkpoint age, witness failures.

    Called by the sequencer (:class:`rebuild.log.server.Sequencer`'s
    ``observer``) after each batch and each witnessing round.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        directory: Path,
        sizes: Callable[[], tuple[int, int]],
        witnesses: Sequence[str] = (),
    ) -> None:
        self.witness_names = tuple(witnesses)
        self.entries = Counter(
            "rebuild_log_entries_added", "Entries integrated since start", registry=registry
        )
        self.batches = Histogram(
            "rebuild_log_batch_seconds",
            "Time to make one batch durable (tiles, fsync, signed checkpoint)",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.witness_failures = Counter(
            "rebuild_log_witness_failures",
            "Witnessing rounds in which a witness did not cosign",
            ["witness"],
            registry=registry,
        )
        self.quorum_failures = Counter(
            "rebuild_log_witness_quorum_failures",
            "Witnessing rounds that did not reach the policy's quorum",
            registry=registry,
        )
        checkpoint = directory / "checkpoint"

        def read() -> Iterable[Metric]:
            committed, published = sizes()
            yield gauge("rebuild_log_size", "Entries committed to the tree", committed)
            yield gauge("rebuild_log_published_size", "Size of the published checkpoint", published)
            try:
                age = max(0.0, time.time() - os.stat(checkpoint).st_mtime)
            except OSError:
                age = float("nan")
            yield gauge(
                "rebuild_log_checkpoint_age_seconds",
                "Seconds since a checkpoint was published",
                age,
            )

        on_scrape(registry, read)

    def batch(self, entries: int, seconds: float) -> None:
        self.entries.inc(entries)
        self.batches.observe(seconds)

    def witnessed(self, cosigned: Sequence[str], quorum_met: bool) -> None:
        for name in self.witness_names:
            if name not in cosigned:
                self.witness_failures.labels(name).inc()
        if not quorum_met:
            self.quorum_failures.inc()


# -- the witness ----------------------------------------------------------------------------


class WitnessMetrics:
    """``rebuild witness serve``: add-checkpoint answers by status (non-200 are failures)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "rebuild_witness_add_checkpoint_requests",
            "add-checkpoint requests answered, by HTTP status",
            ["code"],
            registry=registry,
        )
        self.failures = Counter(
            "rebuild_witness_failures",
            "add-checkpoint requests not cosigned (any status but 200)",
            registry=registry,
        )

    def answered(self, status: int) -> None:
        self.requests.labels(str(status)).inc()
        if status != 200:
            self.failures.inc()


# -- the fleet ------------------------------------------------------------------------------


class FleetMetrics:
    """Counters shared by the fleet's processes (each process fills its own)."""

    def __init__(self, registry: CollectorRegistry, role: str) -> None:
        self.role = role
        self.enqueued = Counter(
            "rebuild_fleet_targets_enqueued",
            "Targets enqueued by this watcher",
            ["origin"],
            registry=registry,
        )
        self.watch_rounds = Counter(
            "rebuild_fleet_watch_rounds", "Watch rounds, by outcome", ["outcome"], registry=registry
        )
        self.jobs = Counter(
            "rebuild_fleet_jobs",
            "Job deliveries handled by this worker, by verdict (retry, duplicate)",
            ["verdict"],
            registry=registry,
        )
        self.job_seconds = Histogram(
            "rebuild_fleet_job_seconds",
            "Time per job delivery on this worker",
            buckets=JOB_BUCKETS,
            registry=registry,
        )
        self.published = Counter(
            "rebuild_fleet_attestations",
            "Results handled by this publisher, by action and verdict",
            ["action", "verdict"],
            registry=registry,
        )

    def job(self, verdict: str, seconds: float) -> None:
        self.jobs.labels(verdict).inc()
        if verdict != "duplicate":
            self.job_seconds.observe(seconds)


def queue_gauges(registry: CollectorRegistry, depths: Callable[[], dict[str, Any]]) -> None:
    """``rebuild_fleet_queue_depth{queue,state}``, read from the broker at scrape time."""

    def read() -> Iterable[Metric]:
        try:
            doc = depths()
        except Exception:  # noqa: BLE001 - a scrape during a broker outage reports nothing
            return
        g = GaugeMetricFamily(
            "rebuild_fleet_queue_depth", "Messages in the broker", labels=["queue", "state"]
        )
        for queue, states in sorted(doc.items()):
            for state, n in sorted(states.items()):
                g.add_metric([queue, state], n)
        yield g

    on_scrape(registry, read)


def new_registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)
