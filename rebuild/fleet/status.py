"""``rebuild fleet status``: what the fleet did and is doing, as JSON or one HTML page.

Reads only: verdict counts, queue depths, workers and their throughput, the
jobs running now and the latest verdict per package version (with links to
the stored reports), all from the broker. The HTML page is self-contained
(inline style, no script, no external resource) and every value is escaped:
package names and causes come from release statements anyone can log.
"""

from __future__ import annotations

import html
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from rebuild.fleet.broker import Fleet, Keys, now
from rebuild.fleet.jobs import VERDICTS
from rebuild.fsio import atomic_write

MAX_LATEST: Final = 500
MAX_WORKERS: Final = 1000
WORKER_GONE_SECONDS: Final = 60
_LINK_SCHEMES: Final = ("https", "http", "file")


def collect(fleet: Fleet, latest: int = MAX_LATEST) -> dict[str, Any]:
    """The status document (``--json`` prints it; the HTML page renders it)."""
    t = now()
    queues = fleet.queue_depths()
    with fleet.errors("reading the status"):
        raw_counts = fleet.client.hgetall(Keys.verdicts)
        targets = int(fleet.client.hlen(Keys.targets))
        names: Any = fleet.client.zrevrange(Keys.latest_order, 0, latest - 1)
    counts = {v: 0 for v in VERDICTS}
    for k, v in raw_counts.items():
        name = k.decode() if isinstance(k, bytes) else str(k)
        if name in counts:
            counts[name] = int(v)
    workers = []
    for ident, w in sorted(fleet.all_json(Keys.workers, MAX_WORKERS).items()):
        started = int(w.get("started_at", t))
        last = int(w.get("last_seen", 0))
        done = int(w.get("done", 0))
        busy = float(w.get("busy_seconds", 0.0))
        span = max(1, min(t, last) - started)
        workers.append(
            {
                "id": ident,
                "alive": t - last <= WORKER_GONE_SECONDS,
                "last_seen": last,
                "started_at": started,
                "concurrency": w.get("concurrency"),
                "current": w.get("current", 0),
                "done": done,
                "retried": w.get("retried", 0),
                "verdicts": w.get("verdicts", {}),
                "rebuilds_per_minute": round(done * 60 / span, 2),
                "seconds_per_rebuild": round(busy / done, 1) if done else None,
            }
        )
    running = [
        {"target": key, **doc} for key, doc in sorted(fleet.all_json(Keys.running, 1000).items())
    ]
    latest_docs: list[dict[str, Any]] = []
    if names:
        with fleet.errors("reading the latest verdicts"):
            values = fleet.client.hmget(Keys.latest, names)
        for raw in values:
            doc = _json(raw)
            if doc is not None:
                latest_docs.append(doc)
    return {
        "broker": fleet.config.display,
        "generated_at": t,
        "verdicts": counts,
        "attestations": sum(counts.values()),
        "targets_enqueued": targets,
        "queues": queues,
        "workers": workers,
        "running": running,
        "latest": latest_docs,
    }


def _json(raw: object) -> dict[str, Any] | None:
    import json  # noqa: PLC0415

    if not isinstance(raw, bytes | str):
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


# -- HTML -----------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em;color:#1b1b1b;background:#fff}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse;margin:.3em 0}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#f2f2f2}td.n{text-align:right}
.reproduced{color:#0a6b2d;font-weight:600}.mismatch,.failed{color:#a4161a;font-weight:600}
.equivalent{color:#8a5a00;font-weight:600}
.error{color:#8a5a00;font-weight:600}.muted{color:#666}code{font-size:.92em}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _time(t: object) -> str:
    if not isinstance(t, int) or t <= 0:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _link(href: object, text: str) -> str:
    if not isinstance(href, str) or urllib.parse.urlsplit(href).scheme not in _LINK_SCHEMES:
        return _e(text)  # never a javascript: or data: URL from a message
    return f'<a href="{_e(href)}">{_e(text)}</a>'


def _table(table_id: str, head: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f'<p id="{table_id}" class="muted">{_e(empty)}</p>'
    h = "".join(f"<th>{_e(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table id="{table_id}"><tr>{h}</tr>{body}</table>'


_LATEST_HEAD: Final = [
    *("package", "version", "verdict", "causes"),
    *("log index", "attempts", "finished", "reports"),
]


def render_html(doc: dict[str, Any]) -> str:
    verdict_rows = [
        [f'<span class="{_e(v)}">{_e(v)}</span>', _e(n)] for v, n in doc["verdicts"].items()
    ]
    queue_rows = [
        [_e(q), *(_e(d.get(k, 0)) for k in ("waiting", "in_flight", "delayed", "dead"))]
        for q, d in doc["queues"].items()
    ]
    worker_rows = [_worker_row(w) for w in doc["workers"]]
    running_rows = [
        [_e(r.get("label", "")), f"<code>{_e(r.get('worker', ''))}</code>",
         _e(r.get("step", "")), _e(r.get("attempt", "")), _e(_time(r.get("since")))]
        for r in doc["running"]
    ]  # fmt: skip
    latest_rows = [_latest_row(d) for d in doc["latest"]]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>rebuild fleet status</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>rebuild fleet status</h1>",
        f'<p class="muted">broker <code>{_e(doc["broker"])}</code>; generated '
        f'<span id="generated">{_e(_time(doc["generated_at"]))}</span>; '
        f'<span id="attestations">{_e(doc["attestations"])}</span> attestations, '
        f"{_e(doc['targets_enqueued'])} targets enqueued</p>",
        "<h2>Verdicts</h2>",
        _table("verdicts", ["verdict", "attestations"], verdict_rows, "none yet"),
        "<h2>Queues</h2>",
        _table(
            "queues", ["queue", "waiting", "in flight", "delayed", "dead"], queue_rows, "no queues"
        ),
        "<h2>Workers</h2>",
        _table(
            "workers",
            ["worker", "state", "done", "rebuilds/min", "s/rebuild", "now", "last seen"],
            worker_rows,
            "no worker has reported yet",
        ),
        "<h2>Running</h2>",
        _table(
            "running", ["target", "worker", "step", "attempt", "since"], running_rows, "nothing"
        ),
        "<h2>Latest verdict per package version</h2>",
        _table("latest", _LATEST_HEAD, latest_rows, "no attestation published yet"),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _worker_row(w: dict[str, Any]) -> list[str]:
    """One worker's row of the Workers table."""
    return [
        f"<code>{_e(w['id'])}</code>",
        "alive" if w["alive"] else "gone",
        _e(w["done"]),
        _e(w["rebuilds_per_minute"]),
        _e(w["seconds_per_rebuild"] if w["seconds_per_rebuild"] is not None else "-"),
        _e(w["current"]),
        _e(_time(w["last_seen"])),
    ]


def _latest_row(d: dict[str, Any]) -> list[str]:
    """One package version's row of the latest-verdict table, linking its reports."""
    verdict = str(d.get("verdict", ""))
    reports: list[Any] = d["reports"] if isinstance(d.get("reports"), list) else []
    links = " ".join(
        _link(r.get("href"), str(r.get("kind", "report"))) for r in reports if isinstance(r, dict)
    )
    causes: list[Any] = d["causes"] if isinstance(d.get("causes"), list) else []
    return [
        _e(d.get("package", "")),
        _e(d.get("version", "")),
        f'<span class="{_e(verdict if verdict in VERDICTS else "error")}">{_e(verdict)}</span>',
        _e("; ".join(str(c) for c in causes)),
        _e(d.get("log_index", "")),
        _e(d.get("attempts", "")),
        _e(_time(d.get("finished_at"))),
        links or '<span class="muted">none</span>',
    ]


def write_html(doc: dict[str, Any], directory: Path) -> Path:
    """Write ``directory/index.html`` atomically; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    page = directory / "index.html"
    atomic_write(page, render_html(doc).encode("utf-8"))
    return page
