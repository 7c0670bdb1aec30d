"""The PHP application updates itself safely, in the pinned php-8.2 environment.

``fixtures/php-app`` runs under ``php -S`` in the ``php-8.2`` image (built by
``rebuild env build php-8.2``) as an unprivileged web user; its admin page
calls ``rebuild updater request`` through ``proc_open`` with an argument
array. The spool reaches the container through a bind mount; the updater
daemon runs on the host as another user that owns the install directory,
which the container sees read-only. The test asks the application over HTTP
which version it runs before and after.

The container has no Python of its own, so the project's interpreter (its
executable, standard library and the shared libraries they link, whether it
was built into its own prefix or is Debian's under /usr) and source are
bind-mounted read-only and a two-line ``rebuild`` launcher runs them: how
any deployment would put the ``rebuild`` command into an application's
image, without adding to the pinned one.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from rebuild.engine.build_env import environment_image
from tests.gatesim import World
from tests.logutil import ROOT, free_port
from tests.updaterutil import (
    Daemon,
    Releases,
    ThreadServer,
    installed,
    make_spool,
    publish_to,
    run_as,
    static_mirror,
    useradd,
    userdel,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

APP = ROOT / "fixtures" / "php-app"
TOKEN = "correct-horse-battery-staple"


def _http(url: str, data: dict[str, str] | None = None) -> tuple[int, str]:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    try:
        with urllib.request.urlopen(url, data=body, timeout=60) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


# The C library is the image's (both are Debian bookworm); every other shared
# library the interpreter and its standard library's modules link is the host's.
_IMAGE_LIBRARIES = ("ld-linux", "libc.so", "libm.so", "libpthread.so", "libdl.so", "librt.so")


def _host_libraries(binaries: list[Path], into: Path) -> None:
    """Copy the shared libraries ``binaries`` link (by soname) into ``into``."""
    into.mkdir(mode=0o755)
    out = subprocess.run(
        ["ldd", *map(str, binaries)], capture_output=True, text=True, check=False
    ).stdout
    for line in out.splitlines():
        name, arrow, where = line.strip().partition(" => ")
        if arrow and where.startswith("/") and not name.startswith(_IMAGE_LIBRARIES):
            target = into / name
            if not target.exists():
                shutil.copyfile(where.split(" (")[0], target)
                target.chmod(0o644)


def _python_mounts(work: Path) -> list[str]:
    """docker -v/-e arguments that make ``/opt/rebuild/bin/rebuild`` run this project.

    The interpreter (its executable and standard library, wherever they live:
    a Python built into its own prefix, or Debian's under /usr), the shared
    libraries they link, this environment's packages and the source, all
    read-only. The interpreter runs with ``-S``: the packages come from
    PYTHONPATH, and a distribution's site hooks (Debian's sitecustomize)
    point at files the image does not have.
    """
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    exe = Path(sys.executable).resolve()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    dynload = sorted((stdlib / "lib-dynload").glob("*.so"))
    _host_libraries([exe, *dynload], work / "lib")
    launcher_dir = work / "bin"
    launcher_dir.mkdir(mode=0o755)
    launcher = launcher_dir / "rebuild"
    launcher.write_text(
        "#!/bin/sh\n"
        "LD_LIBRARY_PATH=/opt/python/shared PYTHONHOME=/opt/python "
        f'exec /opt/python/bin/{version} -S -m rebuild "$@"\n'
    )
    launcher.chmod(0o755)
    args = ["-v", f"{exe}:/opt/python/bin/{version}:ro"]
    args += ["-v", f"{stdlib}:/opt/python/lib/{version}:ro"]
    args += ["-v", f"{work / 'lib'}:/opt/python/shared:ro"]
    args += ["-v", f"{ROOT}:/opt/rebuild/src:ro"]
    sites = [p for p in site.getsitepackages() if Path(p).is_dir()]
    paths = ["/opt/rebuild/src"]
    for i, p in enumerate(sites):
        args += ["-v", f"{p}:/opt/rebuild/site{i}:ro"]
        paths.append(f"/opt/rebuild/site{i}")
    args += ["-v", f"{launcher_dir}:/opt/rebuild/bin:ro"]
    args += ["-e", f"PYTHONPATH={':'.join(paths)}"]
    args += ["-e", "PYTHONDONTWRITEBYTECODE=1", "-e", "HOME=/tmp"]
    return args


@pytest.fixture
def base() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="rebuild-php-app-", dir="/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_the_php_app_asks_through_the_daemon_and_is_served_from_the_new_release(
    base: Path,
) -> None:
    _, _, image = environment_image("php-8.2")  # built (once) by rebuild env build php-8.2
    web, updater = useradd("rbweb"), useradd("rbupd")
    container = f"rebuild-php-app-{base.name[-8:].lower()}"
    mirror_server = None
    daemon = None
    try:
        # releases 1.0.0 and 1.1.0 of the app, signed, attested and logged
        rel = Releases(base / "releases", World(package="php-app"))
        policy = rel.write_policy(
            package_extra='health_check = ["/usr/bin/grep", "-q", "APP_VERSION", "{artifact}"]\n'
        )
        source = (APP / "src" / "index.php").read_text()
        v1 = rel.make("1.0.0", source.replace("@VERSION@", "1.0.0").encode(), name="index.php")
        v2 = rel.make("1.1.0", source.replace("@VERSION@", "1.1.0").encode(), name="index.php")
        for p in [base / "releases", *(base / "releases").rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        mirror = base / "mirror"
        publish_to(mirror, v1)
        mirror_server = ThreadServer(static_mirror(mirror), None)
        spool, install = base / "spool", base / "install"
        make_spool(spool, updater, web)
        install.mkdir(mode=0o755)
        os.chown(install, updater.uid, updater.gid)
        common = ["--policy", str(policy), "--install-dir", str(install)]
        common += ["--mirror", mirror_server.url, "--insecure-loopback"]
        # the first install, by the updater's user
        r = run_as(updater, "-m", "rebuild", "update", "--package", "php-app", *common, "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        daemon = Daemon(updater, base / "daemon.log", "--spool", str(spool), *common)

        # the application, as the web user, in the pinned php-8.2 environment
        port = free_port()
        launcher = base / "python"
        launcher.mkdir(mode=0o755)
        subprocess.run(
            [
                "docker", "run", "-d", "--rm", "--name", container, "--network", "host",
                "--user", f"{web.uid}:{web.gid}",
                "-v", f"{install}:/srv/app:ro",
                "-v", f"{spool}:/srv/spool",
                "-v", f"{APP / 'front.php'}:/srv/front/front.php:ro",
                *_python_mounts(launcher),
                "-e", "REBUILD_SPOOL=/srv/spool",
                "-e", "REBUILD_BIN=/opt/rebuild/bin/rebuild",
                "-e", f"APP_ADMIN_TOKEN={TOKEN}",
                "-e", "APP_INSTALL_DIR=/srv/app",
                image, "php", "-S", f"127.0.0.1:{port}", "/srv/front/front.php",
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                status, body = _http(url + "/")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert (status, body) == (200, "hello from php-app 1.0.0\n")

        # without the admin token the page refuses; with it, it only asks
        assert _http(url + "/admin/update", {"version": "latest"})[0] == 403
        publish_to(mirror, v2)
        status, body = _http(url + "/admin/update", {"token": TOKEN, "version": "latest"})
        assert status == 202, body
        rid = json.loads(body)["requested"]["id"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status, body = _http(url + "/admin/status", {"token": TOKEN})
            doc = json.loads(body)
            if status == 200 and doc["status"]["request"]["id"] == rid:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"the daemon never answered request {rid}: {body}")
        assert doc["status"]["outcome"] == "installed", doc
        assert doc["status"]["installed_version"] == "1.1.0"
        assert installed(install) == ("1.1.0", v2.data)
        # the same server process now serves the new release
        assert _http(url + "/") == (200, "hello from php-app 1.1.0\n")
        # and the web user could not have installed it itself: D is the updater's
        r = subprocess.run(
            ["docker", "exec", container, "php", "-r",
             "var_dump(@file_put_contents('/srv/app/current/index.php', 'pwned'));"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert "bool(false)" in r.stdout
        assert installed(install) == ("1.1.0", v2.data)
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
        if daemon is not None:
            assert daemon.stop() == 0
        if mirror_server is not None:
            mirror_server.stop()
        userdel(web)
        userdel(updater)
