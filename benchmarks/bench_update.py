"""Update cost: a 10 MB artifact from a loopback HTTPS mirror, and the daemon's reaction time.

1. ``run_update`` (the library behind ``rebuild update``) installs a 10 MB
   release into a fresh install directory from an HTTPS mirror on 127.0.0.1
   (aiohttp, a ``trustme`` certificate): total and per step (fetch = version
   lists + bundle + artifact download; gate = the seven-step decision on the
   artifact's bytes; install = stage, fsync, switch, record). Median of
   ``--runs`` runs. Then the same through the CLI (a fresh process each time,
   so interpreter start-up is included).
2. ``rebuild updater daemon`` (inotify) as a subprocess: the time from a
   request file appearing in the spool to the status file saying
   ``installed`` for a new 10 MB release, and how much of it the daemon took
   to wake up. Median of ``--runs`` requests, each for a newer release.

Run: PYTHONPATH=. .venv/bin/python benchmarks/bench_update.py [--runs 7] [--mb 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rebuild.updater.fetch import FetchOptions
from rebuild.updater.gateway import load_policy
from rebuild.updater.spool import write_request
from rebuild.updater.update import UpdateRequest, run_update
from tests.logutil import cli_env
from tests.updaterutil import TLS, Release, Releases, ThreadServer, publish_to, static_mirror


def _artifact(mb: int, version: str) -> bytes:
    block = os.urandom(1 << 20)
    return f"<?php // {version}\n".encode() + block * mb


def _med(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:8.1f} ms"


def bench_update(base: Path, runs: int, mb: int) -> None:
    rel = Releases(base / "releases")
    policy_path = rel.write_policy(package_extra=f"max_artifact_bytes = {(mb + 1) << 20}\n")
    release = rel.make("1.0.0", _artifact(mb, "1.0.0"))
    mirror = base / "mirror"
    publish_to(mirror, release)
    tls = TLS(base / "tls")
    server = ThreadServer(static_mirror(mirror), tls.server_context())
    policy = load_policy(policy_path)
    totals, fetch, gate, install = [], [], [], []
    try:
        for i in range(runs):
            d = base / f"install-{i}"
            req = UpdateRequest(
                package="hello-phar",
                mirrors=(server.url,),
                install_dir=d,
                state_dir=d / "state",
                fetch=FetchOptions(ca_bundle=tls.ca_bundle),
            )
            report = run_update(req, policy)
            assert report.status == "installed", report.as_json()
            [a] = report.attempts
            totals.append(report.seconds)
            fetch.append(a.fetch_seconds)
            gate.append(a.gate_seconds)
            install.append(a.install_seconds)
        print(f"update of a {mb} MB artifact from an HTTPS mirror on 127.0.0.1, {runs} runs:")
        print(f"  total    {_med(totals)}")
        print(f"  fetch    {_med(fetch)}   (version lists, bundle, artifact; streamed and hashed)")
        print(f"  gate     {_med(gate)}   (steps 1-7 on the artifact's bytes)")
        print(f"  install  {_med(install)}   (stage + fsync, switch, record installed)")
        cli = []
        for i in range(runs):
            d = base / f"cli-{i}"
            t0 = time.perf_counter()
            r = subprocess.run(
                [sys.executable, "-m", "rebuild", "update", "--policy", str(policy_path),
                 "--package", "hello-phar", "--install-dir", str(d), "--mirror", server.url,
                 "--mirror-ca-bundle", str(tls.ca_bundle), "--json"],
                env=cli_env(), capture_output=True, text=True, check=False,
            )  # fmt: skip
            cli.append(time.perf_counter() - t0)
            assert r.returncode == 0, r.stderr
        print(f"  rebuild update (CLI, new process each run): {_med(cli)}")
    finally:
        server.stop()


def bench_daemon(base: Path, runs: int, mb: int, inotify: bool) -> None:
    rel = Releases(base / "releases")
    policy = rel.write_policy(package_extra=f"max_artifact_bytes = {(mb + 1) << 20}\n")
    releases: list[Release] = [rel.make(f"1.{i}.0", _artifact(mb, f"1.{i}.0")) for i in range(runs)]
    mirror = base / "mirror"
    mirror.mkdir()
    server = ThreadServer(static_mirror(mirror), None)
    spool = base / "spool"
    (spool / "requests").mkdir(parents=True)
    (spool / "status").mkdir()
    os.chmod(spool / "requests", 0o1733)
    install = base / "install"
    log = (base / "daemon.log").open("wb")
    args = [sys.executable, "-m", "rebuild", "updater", "daemon", "--spool", str(spool)]
    args += ["--policy", str(policy), "--install-dir", str(install), "--mirror", server.url]
    args += ["--insecure-loopback", "--poll", "1"]
    if not inotify:
        args.append("--no-inotify")
    proc = subprocess.Popen(args, env=cli_env(), stdout=log, stderr=subprocess.STDOUT)
    reaction, wake = [], []
    status = spool / "status" / "hello-phar.json"
    try:
        deadline = time.monotonic() + 60
        while b"watching" not in (base / "daemon.log").read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, "daemon did not start"
            time.sleep(0.01)
        for r in releases:
            publish_to(mirror, r)
            t0 = time.time()
            rid = write_request(spool, "hello-phar", r.version)
            while True:
                try:
                    doc = json.loads(status.read_bytes())
                    if doc["request"]["id"] == rid:
                        break
                except (OSError, ValueError, KeyError):
                    pass
                time.sleep(0.001)
            t1 = time.time()
            assert doc["outcome"] == "installed", doc
            reaction.append(t1 - t0)
            wake.append(doc["started_at"] - t0)
        mode = "inotify" if inotify else "polling every 1 s"
        print(f"daemon ({mode}), request -> installed ({mb} MB release), {runs} requests:")
        print(f"  request to status 'installed'  {_med(reaction)}")
        print(f"  of which waking up             {_med(wake)}")
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--mb", type=int, default=10)
    args = ap.parse_args()
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        bench_update(Path(tmp) / "u", args.runs, args.mb)
    with tempfile.TemporaryDirectory() as tmp:
        bench_daemon(Path(tmp) / "d", args.runs, args.mb, inotify=True)
    with tempfile.TemporaryDirectory() as tmp:
        bench_daemon(Path(tmp) / "p", min(args.runs, 3), args.mb, inotify=False)


if __name__ == "__main__":
    main()
