"""``--metrics`` on ``log serve`` and ``witness serve``: what an operator alerts on.

Real servers (a log with two witnesses in its policy, one of them down) are
scraped over HTTP in Prometheus' text format: the entry count, batch
latency, checkpoint age, and witness failures seen from both sides.
"""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from rebuild.keystore import load_signing_key
from rebuild.log.client import LogClient
from tests.fleet.fleetutil import wait_for
from tests.logutil import Server, envelope, free_port, make_key, start_log
from verify.cosignature import witness_key


def _scrape(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url, timeout=30).read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def _metrics_url(server: Server) -> str:
    m = re.search(r"metrics on (http://\S+)", server.log.read_text())
    assert m is not None, server.log.read_text()
    return m.group(1)


def test_log_and_witness_metrics_show_entries_latency_age_and_witness_failures(
    tmp_path: Path,
) -> None:
    log_key = make_key(tmp_path, "log.metrics.test")
    wk = make_key(tmp_path, "w1.metrics.test")
    witness = Server(
        ["witness", "serve", "--key", str(wk), "--state", str(tmp_path / "ws"),
         "--listen", "127.0.0.1:0", "--log-key", f"{log_key}.pub", "--metrics", "127.0.0.1:0"],
        tmp_path / "witness.out",
    )  # fmt: skip
    log: Server | None = None
    try:
        down = f"http://127.0.0.1:{free_port()}"  # a witness that is not running
        policy = tmp_path / "policy"
        policy.write_text(
            f"log {(tmp_path / 'log.metrics.test.pub').read_text().strip()}\n"
            f"witness W1 {witness_key(load_signing_key(wk))} {witness.url}\n"
            f"witness W2 {witness_key(load_signing_key(make_key(tmp_path, 'w2.m.test')))} {down}\n"
            "group one 1 W1 W2\nquorum one\n"
        )
        log = start_log(
            tmp_path / "log", log_key, tmp_path / "log.out",
            "--witnesses", str(policy), "--metrics", "127.0.0.1:0",
        )  # fmt: skip
        with LogClient(log.url) as client:
            for i in range(5):
                client.add(envelope(f"metrics-{i}"), wait=False)
        url = _metrics_url(log)

        def published() -> dict[str, float] | None:
            m = _scrape(url)
            return m if m.get("rebuild_log_published_size") == 5 else None

        m = wait_for("a cosigned checkpoint of size 5", published, timeout=60)
        assert m["rebuild_log_size"] == 5
        assert m["rebuild_log_entries_added_total"] == 5
        assert m["rebuild_log_batch_seconds_count"] >= 1
        assert 0 <= m["rebuild_log_checkpoint_age_seconds"] < 120
        assert m['rebuild_log_witness_failures_total{witness="W2"}'] >= 1
        assert m.get('rebuild_log_witness_failures_total{witness="W1"}', 0) == 0

        # The witness's side: what it cosigned, and a request it refused.
        req = urllib.request.Request(
            f"{witness.url}/add-checkpoint", data=b"garbage", method="POST"
        )
        try:
            urllib.request.urlopen(req, timeout=30)
        except urllib.error.HTTPError as e:
            assert e.code == 400
        w = _scrape(_metrics_url(witness))
        assert w['rebuild_witness_add_checkpoint_requests_total{code="200"}'] >= 1
        assert w['rebuild_witness_add_checkpoint_requests_total{code="400"}'] == 1
        assert w["rebuild_witness_failures_total"] == 1
    finally:
        if log is not None:
            log.stop()
        witness.stop()
