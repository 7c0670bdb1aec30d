"""A minimal PEP 517 frontend that runs *inside* the build container.

It is mounted read-only and run as ``python3 -S pep517_frontend.py SITE OUTDIR``
with the unpacked source as the working directory. It uses only the standard
library: the build requirements are already unpacked into SITE (resolved
and hashed on the host), so nothing is installed and nothing is fetched. It
calls the backend named by ``[build-system]`` (PEP 517/518 defaults when the
table is missing) and prints the wheel's file name on its last line.

When the backend's ``get_requires_for_build_wheel`` asks for a distribution
SITE does not hold (a hatchling build hook's plugin, a ``setup_requires``),
it prints them on a ``rebuild-frontend: missing-build-requirements`` line
(a JSON list) and exits with status 3 without building: the host resolves
them and runs the build again (``--skip-requires-check`` then builds
regardless).

This file must never import from :mod:`rebuild`; it runs in a different
Python, with no network, as an unprivileged user.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import re
import site
import sys
import time
import tomllib
from typing import Any

_LEGACY_BACKEND = "setuptools.build_meta:__legacy__"


def _load_backend(ignore_backend_path: bool) -> Any:
    build_system: dict[str, Any] = {}
    if os.path.exists("pyproject.toml"):
        with open("pyproject.toml", "rb") as f:
            build_system = tomllib.load(f).get("build-system", {})
    name = build_system.get("build-backend", _LEGACY_BACKEND)
    for entry in [] if ignore_backend_path else build_system.get("backend-path", []):
        # PEP 517: in-tree backends, resolved relative to the source root.
        sys.path.insert(0, os.path.abspath(entry))
    module_name, _, attr = name.partition(":")
    backend: Any = importlib.import_module(module_name)
    for part in filter(None, attr.split(".")):
        backend = getattr(backend, part)
    return backend


MISSING_REQUIREMENTS = 3
_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _installed(requirement: str) -> bool:
    """Is a distribution of that name on the path (SITE)? Versions are the host's concern."""
    m = _NAME.match(requirement)
    if m is None:
        return False
    try:
        importlib.metadata.distribution(m.group(1))
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def main(argv: list[str]) -> int:
    site_dir, outdir, options = argv[1], argv[2], argv[3:]
    if "--unset-source-date-epoch" in options:
        # The published wheel was built without it (see the strategy's rule).
        os.environ.pop("SOURCE_DATE_EPOCH", None)
    if "--tz" in options:
        # A POSIX TZ rule (e.g. "GMT0BST,M3.5.0/1,M10.5.0"): needs no tzdata.
        os.environ["TZ"] = options[options.index("--tz") + 1]
        time.tzset()
    if "--path" in options:
        # Launchers for the build requirements' commands (meson, ninja, cmake).
        bin_dir = options[options.index("--path") + 1]
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    if "--umask" in options:
        os.umask(int(options[options.index("--umask") + 1], 8))
    # Run with -S: the image's own dist-packages (Debian's setuptools) must not
    # shadow the pinned requirements. addsitedir (not PYTHONPATH) so .pth
    # files run, e.g. setuptools' distutils shim.
    site.addsitedir(site_dir)
    backend = _load_backend("--ignore-backend-path" in options)
    hook = getattr(backend, "get_requires_for_build_wheel", None)
    extra = hook({}) if hook is not None else []
    label = getattr(backend, "__name__", type(backend).__name__)
    print(f"rebuild-frontend: backend {label} asks for {list(extra)}", flush=True)
    missing = [r for r in extra if not _installed(r)]
    if missing and "--skip-requires-check" not in options:
        print(f"rebuild-frontend: missing-build-requirements {json.dumps(missing)}", flush=True)
        return MISSING_REQUIREMENTS
    config: dict[str, list[str]] = {}
    for i, opt in enumerate(options):
        if opt == "--config-setting":
            key, _, value = options[i + 1].partition("=")
            config.setdefault(key, []).append(value)
    name = backend.build_wheel(outdir, config)
    print(name, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
