"""Real Debian packages and a real apt repository on 127.0.0.1, for the store tests.

``make_deb`` builds a small real ``.deb`` with ``dpkg-deb --build``.
``TestMirror`` lays packages out as a Debian archive (``pool/`` plus
``dists/SUITE/main/binary-ARCH/Packages`` written by ``dpkg-scanpackages``
and a ``Release`` listing its hashes) and serves it over HTTP on loopback.
Lock entries are taken from that index, as ``rebuild env lock`` takes them
from apt's: the tests never depend on which versions a public mirror holds.
"""

from __future__ import annotations

import hashlib
import http.server
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rebuild.envs.deb822 import parse_stanzas
from rebuild.envs.definition import LockedPackage
from tests.staticweb import serving

SUITE = "bookworm"
ARCH = "amd64"


def make_deb(
    workdir: Path, name: str, version: str, *, depends: str = "", script: str | None = None
) -> Path:
    """A real .deb installing ``/usr/bin/NAME`` (a shell script printing its version)."""
    root = workdir / f"{name}-{version.replace(':', '_')}"
    (root / "DEBIAN").mkdir(parents=True)
    control = (
        f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: rebuild tests <tests@rebuild.invalid>\nPriority: optional\n"
        "Section: misc\n"
    )
    if depends:
        control += f"Depends: {depends}\n"
    control += f"Description: rebuild test package {name}\n made by tests/debtools.py\n"
    (root / "DEBIAN" / "control").write_text(control)
    binary = root / "usr" / "bin" / name
    binary.parent.mkdir(parents=True)
    binary.write_text(script or f"#!/bin/sh\necho {name} {version}\n")
    binary.chmod(0o755)
    # Debian's pool names drop the epoch.
    out = workdir / f"{name}_{version.partition(':')[2] or version}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(out)],
        check=True,
        capture_output=True,
    )
    return out


class _Handler(http.server.SimpleHTTPRequestHandler):
    mirror: TestMirror

    def do_GET(self) -> None:
        self.mirror.requests.append(self.path)
        override = self.mirror.overrides.get(self.path.lstrip("/"))
        if override is not None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(override)))
            self.end_headers()
            self.wfile.write(override)
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        return


class TestMirror:
    """A Debian archive of the given ``.deb`` files, served on 127.0.0.1."""

    __test__ = False  # not a pytest class

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = ""
        self.requests: list[str] = []
        self.overrides: dict[str, bytes] = {}  # pool path -> bytes served instead
        self._index: dict[str, dict[str, str]] = {}

    def publish(self, debs: list[Path]) -> None:
        """Put ``debs`` into the pool and (re)write the index with dpkg-scanpackages."""
        for deb in debs:
            name = deb.name.split("_", 1)[0]
            pool = self.root / "pool" / "main" / name[0] / name
            pool.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(deb, pool / deb.name)
        scan = subprocess.run(
            ["dpkg-scanpackages", "--multiversion", "pool", "/dev/null"],
            cwd=self.root,
            check=True,
            capture_output=True,
        )
        binary = self.root / "dists" / SUITE / "main" / f"binary-{ARCH}"
        binary.mkdir(parents=True, exist_ok=True)
        (binary / "Packages").write_bytes(scan.stdout)
        (self.root / "dists" / SUITE / "Release").write_text(
            f"Suite: {SUITE}\nCodename: {SUITE}\nArchitectures: {ARCH} all\nComponents: main\n"
            f"SHA256:\n {hashlib.sha256(scan.stdout).hexdigest()} {len(scan.stdout)} "
            f"main/binary-{ARCH}/Packages\n"
        )
        self._index = {
            f"{s['Package']}={s['Version']}": s for s in parse_stanzas(scan.stdout.decode())
        }

    def remove(self, deb: Path) -> None:
        """The mirror moves on: this file leaves the pool and the index."""
        for path in self.root.glob(f"pool/**/{deb.name}"):
            path.unlink()
        self.publish([])

    def locked(self, name: str, version: str) -> LockedPackage:
        """The lock entry apt's index gives for NAME=VERSION (sha256, size, pool path)."""
        s = self._index[f"{name}={version}"]
        return LockedPackage(
            name, version, s["Architecture"], s["SHA256"], int(s["Size"]), s["Filename"]
        ).check("test index")

    @contextmanager
    def serve(self) -> Iterator[str]:
        mirror = self

        class Handler(_Handler):
            def __init__(self, *args: Any, **kw: Any) -> None:
                self.mirror = mirror
                super().__init__(*args, directory=str(mirror.root), **kw)

        with serving(Handler) as url:
            self.url = url
            yield url


def probe_mirror(tmp_path: Path) -> tuple[TestMirror, Path, Path]:
    """A mirror (not yet served) with probe-lib 1.0 and probe-tool 1.0 depending on it."""
    debs = tmp_path / "debs"
    debs.mkdir()
    lib = make_deb(debs, "probe-lib", "1.0")
    tool = make_deb(debs, "probe-tool", "1.0", depends="probe-lib (= 1.0)")
    mirror = TestMirror(tmp_path / "mirror")
    mirror.publish([lib, tool])
    return mirror, lib, tool
