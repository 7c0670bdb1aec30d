"""``rebuild mirror publish`` and ``rebuild mirror serve`` as real processes.

Publishing files bytes under the names the bundle's release statement gives,
atomically, and never changes a published release; the server (HTTPS with a
``trustme`` certificate) serves only regular files under its root, and
``rebuild update`` installs from it.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path

from tests.gatesim import World
from tests.logutil import Server, run_cli
from tests.updaterutil import TLS, Releases, installed, report, update_cli


def _get(url: str, ca: Path) -> int:
    ctx = ssl.create_default_context(cafile=str(ca))
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_publish_then_serve_over_https_then_update(tmp_path: Path) -> None:
    rel = Releases(tmp_path / "releases")
    policy = rel.write_policy()
    v1 = rel.make("1.0.0", name="hello-1.0.0.phar")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    args = ["mirror", "publish", "--dir", str(mirror), "--artifact", str(v1.artifact)]
    r = run_cli(*args, "--bundle", str(v1.bundle), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["package"], doc["version"], doc["artifact"], doc["added"]) == (
        "hello-phar",
        "1.0.0",
        "hello-1.0.0.phar",
        True,
    )
    index = json.loads((mirror / "hello-phar" / "index.json").read_text())
    assert [e["version"] for e in index["releases"]] == ["1.0.0"]
    assert (mirror / "hello-phar" / "1.0.0" / "hello-1.0.0.phar").read_bytes() == v1.data
    # the same release again: nothing to do
    r = run_cli(*args, "--bundle", str(v1.bundle), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["added"] is False
    # other bytes under a published version: refused, the mirror unchanged
    forged = tmp_path / "forged.phar"
    forged.write_bytes(v1.data + b"// backdoor\n")
    # even signed by the maintainer: a published version's bytes never change
    other = rel.make("1.0.0", forged.read_bytes(), name="hello-1.0.0.phar")
    r = run_cli("mirror", "publish", "--dir", str(mirror), "--artifact", str(other.artifact))
    r2 = run_cli(
        "mirror",
        "publish",
        "--dir",
        str(mirror),
        "--artifact",
        str(other.artifact),
        "--bundle",
        str(other.bundle),
    )
    assert r.returncode == 2  # --bundle is required
    assert r2.returncode == 2 and "immutable" in r2.stderr, r2.stderr
    assert (mirror / "hello-phar" / "1.0.0" / "hello-1.0.0.phar").read_bytes() == v1.data
    # an artifact the bundle does not cover cannot be published
    r = run_cli(*args[:-1], str(forged), "--bundle", str(v1.bundle))
    assert r.returncode == 2 and "does not list" in r.stderr, r.stderr

    # serve it over HTTPS
    tls = TLS(tmp_path / "tls")
    cert, key = tls.cert_files()
    (mirror / ".secret").write_text("not for the web")
    os.symlink("/etc/passwd", mirror / "hello-phar" / "passwd")
    serve = ["mirror", "serve", "--dir", str(mirror), "--listen", "127.0.0.1:0"]
    server = Server([*serve, "--tls-cert", str(cert), "--tls-key", str(key)], tmp_path / "s.log")
    try:
        assert server.url.startswith("https://127.0.0.1:")
        ca = tls.ca_bundle
        assert _get(server.url + "/hello-phar/index.json", ca) == 200
        assert _get(server.url + "/.secret", ca) == 404
        assert _get(server.url + "/.publish.lock", ca) == 404
        assert _get(server.url + "/hello-phar/passwd", ca) == 404
        assert _get(server.url + "/hello-phar/", ca) == 404
        assert _get(server.url + "/hello-phar/../../etc/passwd", ca) == 404
        install = tmp_path / "install"
        r = update_cli(policy, install, [server.url], "--mirror-ca-bundle", str(ca))
        assert r.returncode == 0, r.stdout + r.stderr
        assert report(r)["status"] == "installed"
        assert installed(install) == ("1.0.0", v1.data)
        assert (install / "current" / "hello-1.0.0.phar").is_file()
    finally:
        server.stop()


def test_a_package_named_log_cannot_shadow_the_mirrors_copy_of_the_log(tmp_path: Path) -> None:
    """``log/`` holds the log's tiles; a release of a package ``log`` would mix with them."""
    rel = Releases(tmp_path / "releases", World(package="log"))
    v1 = rel.make("1.0.0")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    args = ["mirror", "publish", "--dir", str(mirror), "--artifact", str(v1.artifact)]
    r = run_cli(*args, "--bundle", str(v1.bundle))
    assert r.returncode == 2
    assert "package name 'log' cannot be a mirror path" in r.stderr
    assert list(mirror.iterdir()) == []
