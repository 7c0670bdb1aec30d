"""The one seam to the broker: Dramatiq on Redis, and the fleet's own records there.

Decides how to reach the broker (``redis://`` only to a loopback address;
anything else must be ``rediss://``, verified against the system CAs or a
given bundle), which queues and actors exist, and where the fleet keeps its
small records (which targets were enqueued, which job a message claims, how
often it was tried, who works, the latest verdicts). Every Redis failure
becomes a :class:`~rebuild.errors.TransportError`.

Queue semantics are Dramatiq's Redis broker: a message is removed only when
acknowledged after its actor returned (late acknowledgement); a worker that
stops sending heartbeats for ``heartbeat_timeout`` is dead and the messages
it held go back to their queue.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage, Retries

from rebuild.errors import TransportError, UsageError
from rebuild.log.urls import is_loopback_host
from verify.parsing import parse_decimal

NAMESPACE: Final = "rebuild-fleet"
BUILD_QUEUE: Final = "build"
PUBLISH_QUEUE: Final = "publish"
BUILD_ACTOR: Final = "rebuild_fleet_build"
PUBLISH_ACTOR: Final = "rebuild_fleet_publish"
DEFAULT_BROKER: Final = "redis://127.0.0.1:6379/0"
MAX_DATABASE: Final = (1 << 31) - 1  # Redis reads the number as a C int
BROKER_ENV: Final = "REBUILD_FLEET_BROKER"
DEFAULT_HEARTBEAT_TIMEOUT: Final = 60.0
# Out of a million broker calls, how many also requeue dead workers' messages.
# Dramatiq's default (0.1%) means minutes before a lost job comes back when
# workers poll once a second; 10% brings it within seconds of the heartbeat
# timeout, and the check is a sorted-set range query when nobody died.
MAINTENANCE_CHANCE: Final = 100_000
# How long a job's own broker writes (claim, count, result hand-over, retry)
# wait out a broker outage before they give up.
BROKER_PATIENCE_SECONDS: Final = 3600.0

log = logging.getLogger("rebuild.fleet.broker")
T = TypeVar("T")


class Keys:
    """The fleet's own Redis keys (Dramatiq's live under ``rebuild-fleet:<queue>``)."""

    targets: Final = f"{NAMESPACE}:fleet:targets"  # target key -> what was enqueued
    claims: Final = f"{NAMESPACE}:fleet:claims"  # target key -> message id that owns it
    attempts: Final = f"{NAMESPACE}:fleet:attempts"  # target key -> deliveries so far
    last_error: Final = f"{NAMESPACE}:fleet:last-error"  # target key -> why it was retried
    running: Final = f"{NAMESPACE}:fleet:running"  # target key -> worker, step, since
    workers: Final = f"{NAMESPACE}:fleet:workers"  # worker id -> host, pid, counts
    latest: Final = f"{NAMESPACE}:fleet:latest"  # "package==version" -> latest verdict
    latest_order: Final = f"{NAMESPACE}:fleet:latest-order"  # same names by time
    verdicts: Final = f"{NAMESPACE}:fleet:verdicts"  # verdict -> attestations published


@dataclass(frozen=True)
class BrokerConfig:
    """How to reach the broker."""

    url: str = DEFAULT_BROKER
    password: str | None = None
    ca_bundle: Path | None = None
    heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT

    def __post_init__(self) -> None:
        check_broker_url(self.url)
        if not 1.0 <= self.heartbeat_timeout <= 3600.0:
            raise UsageError("--heartbeat-timeout must be between 1 and 3600 seconds")
        if self.ca_bundle is not None and not urlsplit(self.url).scheme == "rediss":
            raise UsageError("--broker-ca-bundle needs a rediss:// broker URL")

    @property
    def display(self) -> str:
        """The URL without its password, for messages and status pages."""
        p = urlsplit(self.url)
        host = p.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{p.port}" if p.port else ""
        return f"{p.scheme}://{host}{port}{p.path}"


def check_broker_url(url: str) -> None:
    """``rediss://`` anywhere, ``redis://`` only to loopback (like every client here)."""
    try:
        p = urlsplit(url)
        p.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        raise UsageError(f"--broker {_redact(url)!r}: {e}") from None
    if p.scheme not in ("redis", "rediss") or not p.hostname:
        raise UsageError(
            f"--broker {_redact(url)!r}: expected redis://HOST:PORT/N or rediss://HOST:PORT/N"
        )
    if p.path not in ("", "/"):
        refusal = UsageError(f"--broker {_redact(url)!r}: the path must be a database number")
        parse_decimal(p.path[1:], "database", lambda _: refusal, maximum=MAX_DATABASE)
    if p.scheme == "redis" and not is_loopback_host(p.hostname):
        raise UsageError(
            f"--broker {_redact(url)!r}: plain redis:// is refused except to a loopback "
            "address; use rediss:// (TLS)"
        )


def _redact(url: str) -> str:
    p = urlsplit(url)
    if p.password is None:
        return url
    return url.replace(f":{p.password}@", ":***@", 1)


def redis_client(config: BrokerConfig) -> redis.Redis:
    """A Redis client for ``config`` (TLS and password as the URL and flags say)."""
    options: dict[str, Any] = {
        "socket_timeout": 30.0,
        "socket_connect_timeout": 10.0,
        "health_check_interval": 15,
    }
    if config.password is not None:
        options["password"] = config.password
    if urlsplit(config.url).scheme == "rediss":
        options["ssl_cert_reqs"] = "required"
        options["ssl_check_hostname"] = True
        if config.ca_bundle is not None:
            options["ssl_ca_certs"] = str(config.ca_bundle)
    try:
        pool = redis.ConnectionPool.from_url(config.url, **options)
    except (ValueError, redis.RedisError) as e:
        raise UsageError(f"--broker {config.display}: {e}") from None
    return redis.Redis(connection_pool=pool)


@contextlib.contextmanager
def redis_errors(config: BrokerConfig, what: str) -> Iterator[None]:
    """Turn Redis and Dramatiq connection failures into TransportError."""
    try:
        yield
    except redis.AuthenticationError as e:
        raise TransportError(
            f"broker {config.display}: {what}: authentication failed ({e})"
        ) from None
    except redis.ConnectionError as e:
        raise TransportError(
            f"cannot reach the broker at {config.display} ({what}): {e}",
            hint="is Redis running there? (scripts/setup starts one on 127.0.0.1:6379; "
            "or give --broker / $REBUILD_FLEET_BROKER)",
        ) from None
    except (redis.RedisError, dramatiq.errors.BrokerConnectionError, OSError) as e:
        raise TransportError(f"broker {config.display}: {what}: {type(e).__name__}: {e}") from None


def patiently(what: str, call: Callable[[], T], patience: float = BROKER_PATIENCE_SECONDS) -> T:
    """``call()``, tried again with back-off while the broker is unreachable.

    For the writes a job cannot do without: giving up on them at the first
    connection error would turn a broker restart into a failed (or, through
    Dramatiq, a lost) job. Gives up with the last TransportError after
    ``patience`` seconds.
    """
    deadline = time.monotonic() + patience
    pause = 0.5
    while True:
        try:
            return call()
        except TransportError as e:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("%s: waiting for the broker (%s)", what, e)
            time.sleep(pause)
            pause = min(pause * 2, 30.0)


class PatientRetries(Retries):
    """Dramatiq's ``Retries``, waiting out a broker outage before the retry is enqueued.

    Dramatiq acknowledges a message after its middleware ran, whatever the
    middleware did, and retries the acknowledgement until the broker answers
    again. ``Retries`` re-enqueues a failed message with one ``enqueue``;
    when the broker is down at that moment the enqueue fails, and the
    acknowledgement that follows once the broker is back removes the only
    copy: the job is lost. Here the enqueue is repeated (for up to
    ``BROKER_PATIENCE_SECONDS``) before the middleware returns.
    """

    def __init__(self, config: BrokerConfig) -> None:
        super().__init__()
        self._config = config

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        options = dict(message.options)  # Retries counts in place: restore before each try

        def once() -> None:
            message.options.clear()
            message.options.update(options)
            with redis_errors(self._config, f"re-enqueueing {message.message_id} to retry it"):
                super(PatientRetries, self).after_process_message(  # type: ignore[no-untyped-call]
                    broker, message, result=result, exception=exception
                )

        patiently(f"retrying message {message.message_id}", once)


class Fleet:
    """The broker as the fleet uses it: Dramatiq for jobs, plus the fleet's records."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.client = redis_client(config)
        self.broker = RedisBroker(  # type: ignore[no-untyped-call]
            client=self.client,
            namespace=NAMESPACE,
            heartbeat_timeout=int(config.heartbeat_timeout * 1000),
            maintenance_chance=MAINTENANCE_CHANCE,
            # Only what the fleet relies on: retries with back-off (the build
            # actor bounds them itself), and the current message's id. No
            # time limit: builds have their own, and Dramatiq's would inject
            # an exception into a thread that may be driving a container.
            # PatientRetries: Dramatiq's, made safe against a broker outage.
            middleware=[PatientRetries(config), CurrentMessage()],
        )
        self.broker.declare_queue(BUILD_QUEUE)
        self.broker.declare_queue(PUBLISH_QUEUE)

    def errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        return redis_errors(self.config, what)

    def ping(self) -> None:
        with self.errors("connecting"):
            self.client.ping()

    def persistence_warning(self) -> str | None:
        """A sentence when the broker would lose queued jobs on a restart."""
        try:
            conf = self.client.config_get("appendonly")
        except redis.RedisError:
            return None  # CONFIG may be disabled on a managed Redis: nothing to say
        if str(conf.get("appendonly", "")).lower() != "yes":
            return (
                f"broker {self.config.display} runs without its append-only file "
                "(appendonly no): queued jobs are lost if it restarts"
            )
        return None

    def send(
        self, queue: str, actor: str, payload: dict[str, Any], delay_ms: int | None = None
    ) -> str:
        """Enqueue one message; returns its id."""
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=queue, actor_name=actor, args=(payload,), kwargs={}, options={}
        )
        with self.errors(f"enqueueing on {queue}"):
            self.broker.enqueue(message, delay=delay_ms)
        return message.message_id

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.broker.close()
        with contextlib.suppress(Exception):
            self.client.close()

    # -- the fleet's records ------------------------------------------------------------

    def set_json(self, key: str, field: str, doc: dict[str, Any]) -> None:
        with self.errors(f"writing {key}"):
            self.client.hset(key, field, json.dumps(doc, sort_keys=True))

    def get_json(self, key: str, field: str) -> dict[str, Any] | None:
        with self.errors(f"reading {key}"):
            raw = self.client.hget(key, field)
        return _json_or_none(raw)

    def all_json(self, key: str, limit: int = 10_000) -> dict[str, dict[str, Any]]:
        """Up to ``limit`` fields of a hash of JSON documents (bounded reads)."""
        out: dict[str, dict[str, Any]] = {}
        with self.errors(f"reading {key}"):
            for field, raw in self.client.hscan_iter(key, count=500):
                doc = _json_or_none(raw)
                if doc is not None:
                    out[_str(field)] = doc
                if len(out) >= limit:
                    break
        return out

    def queue_depths(self) -> dict[str, dict[str, int]]:
        """Waiting, in flight, delayed (retry back-off) and dead-lettered, per queue.

        Read from Dramatiq's Redis layout (``<ns>:<queue>`` the waiting ids,
        ``.msgs`` every message not yet acknowledged, ``.DQ`` the delayed
        ones, ``.XQ`` the dead letters).
        """
        out: dict[str, dict[str, int]] = {}
        with self.errors("reading queue depths"):
            pipe = self.client.pipeline(transaction=False)
            for q in (BUILD_QUEUE, PUBLISH_QUEUE):
                base = f"{NAMESPACE}:{q}"
                pipe.llen(base)
                pipe.hlen(f"{base}.msgs")
                pipe.hlen(f"{base}.DQ.msgs")
                pipe.zcard(f"{base}.XQ")
            values = [int(v) for v in pipe.execute()]
        for i, q in enumerate((BUILD_QUEUE, PUBLISH_QUEUE)):
            waiting, unacked, delayed, dead = values[4 * i : 4 * i + 4]
            out[q] = {
                "waiting": waiting,
                "in_flight": max(0, unacked - waiting),
                "delayed": delayed,
                "dead": dead,
            }
        return out


def _str(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _json_or_none(raw: object) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        doc = json.loads(raw if isinstance(raw, bytes | str) else str(raw))
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def worker_identity() -> str:
    """``host:pid``: unique while the process lives, readable on a status page."""
    return f"{socket.gethostname()}:{os.getpid()}"


def now() -> int:
    return int(time.time())
