"""The in-container PEP 517 frontend, run on the host so that it is measured too.

In a rebuild it runs as ``python3 -S /rebuild/frontend.py SITE OUT ...``
inside the python-3.11 container, where coverage could only reach it by
adding to the pinned environment (the Docker tests show it works there).
Here the same file runs as a script under this interpreter (without -S, so
the coverage hook of the test environment starts in it) with real PEP 517
backends the tests write: in-tree (``backend-path``) or installed in SITE.
Each backend records what it was given; every frontend option must reach it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from rebuild.strategies.pywheel import FRONTEND

# A complete PEP 517 backend: asks for one requirement, writes a wheel holding
# what the frontend gave it. ORIGIN tells an in-tree copy from an installed one.
BACKEND = """
import json, os, time, zipfile

ORIGIN = {origin!r}

def get_requires_for_build_wheel(config_settings=None):
    return ["needed-by-{origin}"]

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    umask = os.umask(0)
    os.umask(umask)
    seen = {{
        "origin": ORIGIN,
        "config": config_settings,
        "sde": os.environ.get("SOURCE_DATE_EPOCH"),
        "local_time": time.strftime("%H:%M %Z", time.localtime(1717243200)),
        "umask": oct(umask),
        "path": os.environ["PATH"].split(os.pathsep)[0],
    }}
    name = "tiny-1.0-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as zf:
        zf.writestr("seen.json", json.dumps(seen))
    return name
"""


def _project(
    tmp: Path, module: str, *, in_tree: bool, installed: bool, provided: bool = True
) -> tuple[Path, Path]:
    """A source tree naming backend ``module`` and a SITE directory.

    With ``provided``, SITE also holds the distribution each backend asks for.
    """
    src, site = tmp / "src", tmp / "site"
    src.mkdir()
    site.mkdir()
    for origin in ("in-tree", "site") if provided else ():
        dist = site / f"needed_by_{origin.replace('-', '_')}-1.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: needed-by-{origin}\nVersion: 1.0\n"
        )
    system = f'[build-system]\nrequires = []\nbuild-backend = "{module}"\n'
    if in_tree:
        (src / "_backend").mkdir()
        (src / "_backend" / f"{module}.py").write_text(BACKEND.format(origin="in-tree"))
        system += 'backend-path = ["_backend"]\n'
    if installed:
        (site / f"{module}.py").write_text(BACKEND.format(origin="site"))
    (src / "pyproject.toml").write_text(system)
    return src, site


def _frontend(src: Path, site: Path, out: Path, *options: str) -> subprocess.CompletedProcess[str]:
    out.mkdir()
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1717243200", "TZ": "UTC"}
    return subprocess.run(
        [sys.executable, str(FRONTEND), str(site), str(out), *options],
        cwd=src, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _run(src: Path, site: Path, out: Path, *options: str) -> tuple[list[str], dict[str, Any]]:
    proc = _frontend(src, site, out, *options)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    with zipfile.ZipFile(out / lines[-1]) as zf:
        return lines, json.loads(zf.read("seen.json"))


def test_in_tree_backend_builds_with_the_environment_it_is_given(tmp_path: Path) -> None:
    src, site = _project(tmp_path, "tiny_backend_a", in_tree=True, installed=False)
    lines, seen = _run(src, site, tmp_path / "out")
    assert lines == [
        "rebuild-frontend: backend tiny_backend_a asks for ['needed-by-in-tree']",
        "tiny-1.0-py3-none-any.whl",
    ]
    assert seen == {
        "origin": "in-tree",
        "config": {},
        "sde": "1717243200",
        "local_time": "12:00 UTC",
        "umask": oct(_umask()),
        "path": os.environ["PATH"].split(os.pathsep)[0],
    }


def test_every_option_reaches_the_backend(tmp_path: Path) -> None:
    """--ignore-backend-path picks SITE's released backend over the in-tree copy."""
    src, site = _project(tmp_path, "tiny_backend_b", in_tree=True, installed=True)
    _, seen = _run(
        src, site, tmp_path / "out",
        "--unset-source-date-epoch", "--tz", "GMT0BST,M3.5.0/1,M10.5.0", "--umask", "002",
        "--config-setting", "--build-option=--universal", "--config-setting", "--build-option=-q",
        "--ignore-backend-path", "--path", "/opt/launchers",
    )  # fmt: skip
    assert seen == {
        "origin": "site",
        "config": {"--build-option": ["--universal", "-q"]},
        "sde": None,
        "local_time": "13:00 BST",
        "umask": "0o2",
        "path": "/opt/launchers",
    }


def test_requirement_the_backend_asks_for_but_site_lacks_stops_before_building(
    tmp_path: Path,
) -> None:
    """Exit 3 and name what is missing, so the host fetches it; build nothing meanwhile."""
    src, site = _project(tmp_path, "tiny_backend_c", in_tree=True, installed=False, provided=False)
    proc = _frontend(src, site, tmp_path / "out")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == (
        'rebuild-frontend: missing-build-requirements ["needed-by-in-tree"]'
    )
    assert list((tmp_path / "out").iterdir()) == []
    # Told to build regardless (the host has nothing more to give), it builds.
    lines, seen = _run(src, site, tmp_path / "again", "--skip-requires-check")
    assert lines[-1] == "tiny-1.0-py3-none-any.whl" and seen["origin"] == "in-tree"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
