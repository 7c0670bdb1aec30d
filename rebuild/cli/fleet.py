"""``rebuild fleet``: follow new releases and rebuild them on many machines.

``watch`` finds targets and enqueues each once, ``worker`` rebuilds, ``publish``
signs and logs, ``status`` reports. Jobs go through Dramatiq on Redis
(docs/fleet.md). Output and exit codes only: the work is in
:mod:`rebuild.fleet`. Nothing heavy (dramatiq, redis, prometheus_client) is
imported until a command runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rebuild.cli._args import add_ca_bundle
from rebuild.cli._output import Output
from rebuild.errors import OperationalError, UsageError

if TYPE_CHECKING:
    from rebuild.fleet.broker import BrokerConfig, Fleet

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"  # rebuild.fleet.broker.DEFAULT_BROKER
# An idle consumer polls its queue at most this often, and a worker finishing a
# job waits at most this long to fetch the next one: 5% of a 2-second build.
POLL_MS = 100
MAX_PYPI_LIST = 1 << 20


def register(sub: Any) -> None:
    p = sub.add_parser(
        "fleet",
        help="follow new releases and rebuild them on many machines",
        description=(
            "A watcher enqueues new targets (release statements in the audit log, new "
            "versions on pip's index), workers rebuild them on their own Docker engine, one "
            "publisher signs each result and adds it to the log exactly once. Jobs go "
            "through a Redis broker (Dramatiq); see docs/fleet.md."
        ),
    )

    fsub = p.add_subparsers(dest="fleet_command", metavar="ACTION", required=True)
    _add_watch(fsub)
    _add_worker(fsub)
    _add_publish(fsub)
    _add_status(fsub)


def _add_watch(fsub: Any) -> None:
    """The ``rebuild fleet watch`` parser."""
    w = fsub.add_parser(
        "watch",
        help="enqueue each new release (log and/or index) once",
        description=(
            "Each round: verify the log's checkpoint and its consistency with the last one, "
            "read new entries through the tiles, and enqueue every release statement's "
            "artifact; poll pip's index (PEP 691 JSON) for new versions of the --pypi "
            "projects. A target (artifact sha256 + recipe digest) is enqueued once, across "
            "restarts. Exit 1 if the log forks, 2 on errors (with --once)."
        ),
    )

    _broker_args(w)

    w.add_argument("--log", metavar="URL", help="audit log to follow (tlog-tiles prefix)")

    add_ca_bundle(w, "log", "an https:// log")

    trust = w.add_mutually_exclusive_group()

    trust.add_argument("--log-key", metavar="VKEY", help="the log's verifier key (file or text)")

    trust.add_argument("--policy", type=Path, metavar="P", help="tlog-policy (log + witnesses)")

    w.add_argument(
        "--maintainer-key",
        action="append",
        default=[],
        metavar="PUB",
        help="rebuild only releases signed by this maintainer key (repeatable; workers "
        "check it again)",
    )

    w.add_argument(
        "--artifacts",
        action="append",
        default=[],
        metavar="SRC",
        help="where released artifacts are: a directory or an https:// base URL holding "
        "them by file name (repeatable; needed with --log)",
    )

    w.add_argument("--pypi", action="append", default=[], metavar="NAME", help="watch a project")

    w.add_argument("--pypi-list", type=Path, metavar="FILE", help="projects, one per line")

    w.add_argument(
        "--backfill",
        type=int,
        default=1,
        metavar="N",
        help="on first sight of a project, enqueue its newest N versions (default 1)",
    )

    w.add_argument("--state", type=Path, default=Path("fleet-watch"), metavar="D",
                   help="state directory (default ./fleet-watch)")  # fmt: skip

    w.add_argument("--interval", type=float, default=60.0, metavar="S", help="seconds per round")

    w.add_argument("--once", action="store_true", help="one round, then exit")

    w.add_argument("--json", action="store_true", help="print one JSON document (with --once)")

    _metrics_arg(w)

    w.set_defaults(func=cmd_watch)


def _add_worker(fsub: Any) -> None:
    """The ``rebuild fleet worker`` parser."""
    k = fsub.add_parser(
        "worker",
        help="rebuild jobs on this machine's Docker engine (holds no key)",
        description=(
            "Run rebuild verify's pipeline for each job and hand the result to the publisher. "
            "A job is acknowledged only after its result is handed over; one whose worker "
            "dies is delivered again. failed/error verdicts are retried after a back-off, "
            "up to --max-attempts deliveries; then the result stands."
        ),
    )

    _broker_args(k)

    k.add_argument("--concurrency", type=int, default=1, metavar="N", help="parallel jobs")

    k.add_argument(
        "--reports",
        type=Path,
        default=Path("fleet-reports"),
        metavar="DIR",
        help="report directories (default ./fleet-reports; one worker per DIR)",
    )

    k.add_argument(
        "--reports-url",
        metavar="URL",
        help="where DIR is served, for links on the status page (default file:// paths)",
    )

    k.add_argument("--timeout", type=float, default=1800.0, metavar="S", help="build time limit")

    k.add_argument("--max-attempts", type=int, default=3, metavar="N", help="deliveries per job")

    k.add_argument(
        "--retry-backoff",
        type=float,
        default=60.0,
        metavar="S",
        help="first retry delay in seconds, doubled each time (default 60)",
    )

    k.add_argument(
        "--stop-timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="on SIGTERM, wait this long for running jobs (then they are delivered again)",
    )

    _metrics_arg(k)

    _stream_arg(k)

    k.set_defaults(func=cmd_worker)


def _add_publish(fsub: Any) -> None:
    """The ``rebuild fleet publish`` parser."""
    b = fsub.add_parser(
        "publish",
        help="sign results and add each to the log exactly once (holds the key)",
        description=(
            "The one process with the rebuilder's key. Each result becomes a rebuild "
            "attestation added to the log once per (artifact, recipe, key): the local "
            "record in --state and the log's lookup are checked before adding."
        ),
    )

    _broker_args(b)

    b.add_argument("--key", required=True, type=Path, metavar="K", help="rebuilder secret key")

    b.add_argument("--passphrase-env", metavar="VAR", help="passphrase environment variable")

    b.add_argument("--log", required=True, metavar="URL", help="audit log to add to")

    add_ca_bundle(b, "log", "an https:// log")

    b.add_argument("--state", type=Path, default=Path("fleet-publish"), metavar="D",
                   help="state directory (default ./fleet-publish)")  # fmt: skip

    _metrics_arg(b)

    _stream_arg(b)

    b.set_defaults(func=cmd_publish)


def _add_status(fsub: Any) -> None:
    """The ``rebuild fleet status`` parser."""
    s = fsub.add_parser(
        "status",
        help="verdict counts, queues, workers, latest verdicts",
        description="Read the fleet's state from the broker; --html writes DIR/index.html.",
    )

    _broker_args(s)

    s.add_argument("--html", type=Path, metavar="DIR", help="write a self-contained HTML page")

    s.add_argument("--latest", type=int, default=200, metavar="N", help="package versions shown")

    s.add_argument("--json", action="store_true", help="print one JSON document")

    s.set_defaults(func=cmd_status)


def _broker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--broker",
        default=os.environ.get("REBUILD_FLEET_BROKER", DEFAULT_BROKER),
        metavar="URL",
        help="redis://HOST:PORT/N (loopback only) or rediss://HOST:PORT/N (TLS); default "
        "$REBUILD_FLEET_BROKER or " + DEFAULT_BROKER,
    )
    p.add_argument("--broker-password-env", metavar="VAR", help="take the password from VAR")
    add_ca_bundle(p, "broker", "a rediss:// broker")
    p.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="a worker silent this long is dead and its jobs are delivered again (default 60)",
    )


def _stream_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--json",
        action="store_true",
        help="print a JSON line when ready and the final envelope when stopped (docs/cli.md)",
    )


def _metrics_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--metrics", metavar="HOST:PORT", help="serve Prometheus metrics on HOST:PORT/metrics"
    )


def _config(args: argparse.Namespace) -> BrokerConfig:
    from rebuild.fleet.broker import BrokerConfig  # noqa: PLC0415

    password = None
    if args.broker_password_env:
        password = os.environ.get(args.broker_password_env)
        if password is None:
            raise UsageError(f"--broker-password-env: ${args.broker_password_env} is not set")
    return BrokerConfig(
        url=args.broker,
        password=password,
        ca_bundle=args.broker_ca_bundle,
        heartbeat_timeout=args.heartbeat_timeout,
    )


def _connect(args: argparse.Namespace, out: Output, role: str) -> Fleet:
    from rebuild.fleet.broker import Fleet  # noqa: PLC0415

    fleet = Fleet(_config(args))
    fleet.ping()
    warning = fleet.persistence_warning()
    if warning and role != "status":
        out.note(f"warning: {warning}")
    return fleet


def _logging(role: str) -> None:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format=f"rebuild fleet {role}: %(message)s"
    )
    logging.getLogger("dramatiq").setLevel(logging.WARNING)


def _stop_event() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _metrics(args: argparse.Namespace, out: Output, role: str, fleet: Fleet | None) -> Any:
    """(FleetMetrics, server) when --metrics is given, else (None, None)."""
    if not args.metrics:
        return None, None
    from rebuild import metrics as m  # noqa: PLC0415

    registry = m.new_registry()
    fm = m.FleetMetrics(registry, role)
    if fleet is not None and role == "publish":
        m.queue_gauges(registry, fleet.queue_depths)
    server = m.serve(args.metrics, registry)
    out.note(f"metrics on {server.url}")
    return fm, server


# -- watch ----------------------------------------------------------------------------------


def cmd_watch(args: argparse.Namespace, out: Output) -> int:
    from rebuild.fleet.state import StateDir  # noqa: PLC0415
    from rebuild.fleet.watch import Watcher, WatchOptions  # noqa: PLC0415
    from rebuild.keystore import load_verifier_key  # noqa: PLC0415
    from rebuild.log.monitor import CheckpointVerifier, ForkError  # noqa: PLC0415

    projects = list(args.pypi)
    if args.pypi_list:
        projects += _read_list(args.pypi_list)
    if not args.log and not projects:
        raise UsageError("nothing to watch: give --log and/or --pypi/--pypi-list")
    verifier = None
    if args.log:
        if args.policy:
            from rebuild.cli.log import _read_policy  # noqa: PLC0415

            verifier = CheckpointVerifier(policy=_read_policy(args.policy))
        elif args.log_key:
            verifier = CheckpointVerifier(log_key=load_verifier_key(args.log_key))
        else:
            raise UsageError("--log needs --log-key or --policy to verify its checkpoints")
        if not args.artifacts:
            raise UsageError("--log needs --artifacts: where the released artifacts are")
    elif args.policy or args.log_key or args.artifacts or args.maintainer_key:
        raise UsageError("--log-key, --policy, --artifacts and --maintainer-key go with --log")
    if not 0 <= args.backfill <= 1000:
        raise UsageError("--backfill must be in 0..1000")
    if not 1 <= args.interval <= 86400:
        raise UsageError("--interval must be between 1 and 86400 seconds")
    opts = WatchOptions(
        log_url=args.log,
        log_ca_bundle=args.log_ca_bundle,
        verifier=verifier,
        maintainer_keys=tuple(load_verifier_key(k) for k in args.maintainer_key),
        artifact_sources=tuple(_artifact_source(s) for s in args.artifacts),
        projects=tuple(dict.fromkeys(projects)),
        backfill=args.backfill,
    )
    _logging("watch")
    log = logging.getLogger("rebuild.fleet.watch")
    fleet = _connect(args, out, "watch")
    fm, server = _metrics(args, out, "watch", fleet)
    try:
        with StateDir(args.state, "fleet watcher") as state:
            watcher = Watcher(fleet, state, opts)
            if args.once:
                report = watcher.round()
                _count_round(fm, report)
                out.result(report.to_json(), lambda c: _render_round(c, report.to_json()))
                return 2 if report.errors else 0
            stop = _stop_event()
            out.note(f"watching (every {args.interval:g} s); broker {fleet.config.display}")
            while not stop.is_set():
                try:
                    report = watcher.round()
                except ForkError:
                    raise
                except OperationalError as e:
                    log.error("round failed: %s", e)
                    if fm is not None:
                        fm.watch_rounds.labels("error").inc()
                else:
                    _count_round(fm, report)
                    for problem in report.errors:
                        log.error("%s", problem)
                    if report.enqueued:
                        log.info("enqueued %d new target(s)", len(report.enqueued))
                stop.wait(args.interval)
            return 0
    finally:
        if server is not None:
            server.close()
        fleet.close()


def _count_round(fm: Any, report: Any) -> None:
    if fm is None:
        return
    fm.watch_rounds.labels("error" if report.errors else "ok").inc()
    for item in report.enqueued:
        fm.enqueued.labels(item["origin"].split("#")[0]).inc()


def _read_list(path: Path) -> list[str]:
    from rebuild.fsio import read_text_bounded  # noqa: PLC0415

    names = []
    for line in read_text_bounded(path, MAX_PYPI_LIST).splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            names.append(name)
    return names


def _artifact_source(spec: str) -> str:
    if spec.startswith(("https://", "http://")):
        from rebuild.log.urls import check_url  # noqa: PLC0415

        return check_url(spec, "--artifacts URL")
    path = Path(spec)
    if not path.is_dir():
        raise UsageError(f"--artifacts {spec}: not a directory or an https:// URL")
    return str(path.absolute())


def _render_round(c: Any, doc: dict[str, Any]) -> None:
    if doc["log"]:
        lg = doc["log"]
        c.print(
            f"log: {lg['status']}, size {lg['size']}, read {lg['from']}..{_cell(lg.get('next'))}"
        )
    for name, info in doc["index"].items():
        c.print(f"index {name}: {info}", markup=False)
    for item in doc["enqueued"]:
        c.print(f"enqueued {item['label']} ({item['origin']})", markup=False)
    c.print(f"{len(doc['enqueued'])} enqueued, {doc['already_known']} already known")
    for s in doc["skipped"]:
        c.print(f"skipped {s['where']}: {s['why']}", markup=False)
    for e in doc["errors"]:
        c.print(f"error: {e}", markup=False)


# -- worker and publisher -------------------------------------------------------------------


def _serve_queue(
    fleet: Fleet,
    out: Output,
    *,
    queue: str,
    actor: str,
    handler: Callable[[dict[str, Any]], None],
    threads: int,
    actor_options: dict[str, Any],
    stop_timeout: float,
    ready: str,
    every: Callable[[], None] = lambda: None,
) -> None:
    """Consume ``queue`` with ``threads`` threads until SIGINT/SIGTERM."""
    import dramatiq  # noqa: PLC0415
    from dramatiq import Worker  # noqa: PLC0415

    def body(payload: dict[str, Any]) -> None:
        handler(payload)

    dramatiq.actor(broker=fleet.broker, actor_name=actor, queue_name=queue, **actor_options)(body)
    worker = Worker(fleet.broker, queues={queue}, worker_threads=threads, worker_timeout=POLL_MS)
    # Prefetch no more than can run: a job waiting in one worker's memory is a
    # job another idle worker cannot take.
    worker.queue_prefetch = threads
    stop = _stop_event()
    worker.start()
    try:
        out.note(ready)
        out.event({"event": "ready", "detail": ready})
        every()
        while not stop.wait(10.0):
            every()
    finally:
        out.note("stopping: finishing the jobs in hand")
        worker.stop(timeout=int(stop_timeout * 1000))
        every()


def cmd_worker(args: argparse.Namespace, out: Output) -> int:
    from rebuild.errors import TransportError  # noqa: PLC0415
    from rebuild.fleet.broker import BUILD_ACTOR, BUILD_QUEUE, Keys, worker_identity  # noqa: PLC0415
    from rebuild.fleet.jobs import MAX_ATTEMPTS  # noqa: PLC0415
    from rebuild.fleet.worker import (  # noqa: PLC0415
        BuildHandler,
        MalformedMessage,
        WorkerOptions,
        lock_reports,
        reap_orphans,
    )

    if not 1 <= args.concurrency <= 64:
        raise UsageError("--concurrency must be in 1..64")
    if not 0 < args.timeout <= 86400:
        raise UsageError("--timeout must be between 0 and 86400 seconds")
    if not 0 <= args.stop_timeout <= 86400:
        raise UsageError("--stop-timeout must be between 0 and 86400 seconds")
    if args.reports_url:
        from rebuild.log.urls import check_url  # noqa: PLC0415

        check_url(args.reports_url, "--reports-url")
    opts = WorkerOptions(
        reports=args.reports.absolute(),
        reports_url=args.reports_url,
        timeout=args.timeout,
        max_attempts=args.max_attempts,
        retry_backoff=args.retry_backoff,
        concurrency=args.concurrency,
    )
    _logging("worker")
    log = logging.getLogger("rebuild.fleet.worker")
    fleet = _connect(args, out, "worker")
    identity = worker_identity()
    fm, server = _metrics(args, out, "worker", fleet)
    try:
        with lock_reports(opts.reports):
            removed = reap_orphans(opts.reports)
            if removed:
                out.note(f"removed {removed} build container(s) a killed worker left")
            handler = BuildHandler(fleet, opts, identity, fm.job if fm is not None else None)

            def report_stats() -> None:
                try:
                    fleet.set_json(Keys.workers, identity, handler.stats.to_json())
                except TransportError as e:
                    log.warning("cannot report to the broker: %s", e)

            _serve_queue(
                fleet,
                out,
                queue=BUILD_QUEUE,
                actor=BUILD_ACTOR,
                handler=handler,
                threads=args.concurrency,
                actor_options={
                    "max_retries": MAX_ATTEMPTS,  # the handler bounds attempts itself
                    "throws": (MalformedMessage,),
                },
                stop_timeout=args.stop_timeout,
                ready=f"worker {identity} ready: broker {fleet.config.display}, "
                f"concurrency {args.concurrency}, reports {opts.reports}",
                every=report_stats,
            )
        return 0
    finally:
        if server is not None:
            server.close()
        fleet.close()


def cmd_publish(args: argparse.Namespace, out: Output) -> int:
    from rebuild.fleet.broker import PUBLISH_ACTOR, PUBLISH_QUEUE  # noqa: PLC0415
    from rebuild.fleet.publish import MalformedResult, Publisher  # noqa: PLC0415
    from rebuild.fleet.state import StateDir  # noqa: PLC0415
    from rebuild.keystore import load_signing_key  # noqa: PLC0415
    from rebuild.log.urls import check_url  # noqa: PLC0415

    log_url = check_url(args.log, "--log")
    key = load_signing_key(args.key, args.passphrase_env)
    _logging("publish")
    fleet = _connect(args, out, "publish")
    fm, server = _metrics(args, out, "publish", fleet)
    try:
        with StateDir(args.state, "fleet publisher") as state:
            publisher = Publisher(fleet, key, log_url, state, ca_bundle=args.log_ca_bundle)

            def handle(payload: dict[str, Any]) -> None:
                outcome = publisher(payload)
                if fm is not None and outcome is not None:
                    fm.published.labels(outcome.action, outcome.verdict).inc()

            try:
                _serve_queue(
                    fleet,
                    out,
                    queue=PUBLISH_QUEUE,
                    actor=PUBLISH_ACTOR,
                    handler=handle,
                    threads=1,  # one at a time: the exactly-once checks need no locking
                    actor_options={
                        "max_retries": None,  # never drop a result: retry until the log takes it
                        "min_backoff": 1000,
                        "max_backoff": 300_000,
                        "throws": (MalformedResult,),
                    },
                    stop_timeout=120.0,
                    ready=f"publisher ready: key {key.verifier_key().encode()}, log {log_url}, "
                    f"broker {fleet.config.display}",
                )
            finally:
                publisher.close()
        return 0
    finally:
        if server is not None:
            server.close()
        fleet.close()


# -- status ---------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace, out: Output) -> int:
    from rebuild.fleet.status import collect, write_html  # noqa: PLC0415

    if not 1 <= args.latest <= 10_000:
        raise UsageError("--latest must be in 1..10000")
    fleet = _connect(args, out, "status")
    try:
        doc = collect(fleet, args.latest)
    finally:
        fleet.close()
    if args.html:
        page = write_html(doc, args.html)
        doc["html"] = str(page)
    out.result(doc, lambda c: _render_status(c, doc))
    return 0


def _render_status(c: Any, doc: dict[str, Any]) -> None:
    from rich.table import Table  # noqa: PLC0415

    c.print(f"broker {doc['broker']}: {doc['attestations']} attestations, "
            f"{doc['targets_enqueued']} targets enqueued", markup=False)  # fmt: skip
    t = Table(title="verdicts")
    t.add_column("verdict")
    t.add_column("count", justify="right")
    for v, n in doc["verdicts"].items():
        t.add_row(v, str(n))
    c.print(t)
    q = Table(title="queues")
    for col in ("queue", "waiting", "in flight", "delayed", "dead"):
        q.add_column(col)
    for name, d in doc["queues"].items():
        q.add_row(name, *(str(d[k]) for k in ("waiting", "in_flight", "delayed", "dead")))
    c.print(q)
    w = Table(title="workers")
    for col in ("worker", "state", "done", "rebuilds/min", "now"):
        w.add_column(col)
    for x in doc["workers"]:
        w.add_row(x["id"], "alive" if x["alive"] else "gone", str(x["done"]),
                  str(x["rebuilds_per_minute"]), _cell(x["current"]))  # fmt: skip
    c.print(w)
    latest = Table(title="latest verdicts")
    for col in ("package", "version", "verdict", "log index"):
        latest.add_column(col)
    for d in doc["latest"]:
        latest.add_row(*(_cell(d.get(k)) for k in ("package", "version", "verdict", "log_index")))
    c.print(latest)
    if doc.get("html"):
        c.print(f"page: {doc['html']}", markup=False)


def _cell(value: object) -> str:
    """A table cell: "-" for a missing value, never Python's None."""
    return "-" if value is None else str(value)
