"""``rebuild updater daemon --once``: requests coalesce to one update per package, the newest wins.

A real daemon process and a real mirror on 127.0.0.1; the users are the
same here (the two-user proof is tests/test_updater_privsep.py).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from rebuild.updater.spool import write_request
from tests.logutil import run_cli
from tests.updaterutil import Releases, ThreadServer, installed, publish_to, static_mirror


def test_many_requests_for_one_package_make_one_update_for_the_newest(tmp_path: Path) -> None:
    rel = Releases(tmp_path / "releases")
    policy = rel.write_policy()
    v1, v2 = rel.make("1.0.0"), rel.make("1.1.0")
    mirror = tmp_path / "mirror"
    publish_to(mirror, v1)
    publish_to(mirror, v2)
    spool = tmp_path / "spool"
    (spool / "requests").mkdir(parents=True)
    (spool / "status").mkdir()
    os.chmod(spool / "requests", 0o1733)
    ids = [write_request(spool, "hello-phar", "1.0.0") for _ in range(20)]
    time.sleep(0.05)  # the last request is the newest by its file's mtime
    newest = write_request(spool, "hello-phar", "1.1.0")
    write_request(spool, "another-app", "1.0.0")  # not in the policy
    server = ThreadServer(static_mirror(mirror), None)
    try:
        install = tmp_path / "install"
        r = run_cli(
            "updater", "daemon", "--once", "--spool", str(spool), "--policy", str(policy),
            "--install-dir", str(install), "--mirror", server.url, "--insecure-loopback", "--json",
        )  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        [handled] = json.loads(r.stdout)["handled"]
        assert handled["request"] == {"id": newest, "version": "1.1.0"}
        assert handled["outcome"] == "installed"
        assert newest not in ids
        assert installed(install) == ("1.1.0", v2.data)
        assert list((spool / "requests").iterdir()) == []
        r = run_cli("updater", "status", "--spool", str(spool), "--json")
        docs = json.loads(r.stdout)["packages"]
        assert sorted(docs) == ["_daemon", "hello-phar"]
        assert docs["_daemon"]["requests"] == 22
        assert docs["_daemon"]["updates"] == 1
        assert docs["_daemon"]["recent_refused"][0]["reason"] == (
            "package 'another-app' is not in the policy"
        )
        assert docs["hello-phar"]["installed_version"] == "1.1.0"
    finally:
        server.stop()
