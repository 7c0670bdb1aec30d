"""Built-in strategy: rebuild a pure-Python wheel published on a package index.

Decides, from the published files alone, how the maintainer most likely
built the wheel, and turns that into a :class:`~rebuild.engine.plan.BuildPlan`:

1. The backend and its exact version come from the wheel's own
   ``*.dist-info/WHEEL`` ``Generator:`` line (hatchling, flit, poetry-core,
   pdm-backend, setuptools or wheel's ``bdist_wheel``).
2. The other build requirements come from the sdist's ``pyproject.toml``
   ``[build-system] requires`` (PEP 518 defaults without one), each held to
   the newest release uploaded before the wheel, and fetched as hashed wheels.
3. SOURCE_DATE_EPOCH comes from the sdist: the newest member mtime. Every
   backend here that writes a reproducible sdist stamps all members with
   SOURCE_DATE_EPOCH (hatchling, flit_core, pdm-backend, poetry-core), so the
   sdist carries the value the wheel was built with. When the published wheel's
   entries all share one timestamp that differs from the sdist's (the two were
   built in separate steps), the wheel's timestamp is used and the rule says so.
4. The build runs the backend's PEP 517 ``build_wheel`` hook through a small
   stdlib-only frontend inside the container (no pip, no network).

It never executes anything from the sdist or the wheel on the host.
"""

from __future__ import annotations

import calendar
import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from rebuild.engine.plan import BUILD_DIR, OUTPUT_DIR, BuildPlan, InputMount
from rebuild.errors import InputError
from rebuild.sources.pypi import (
    PackageIndex,
    Wheelhouse,
    install_wheelhouse,
    resolve_wheelhouse,
)
from rebuild.sources.unpack import unpack_tar, unpack_zip

ENVIRONMENT = "python-3.11"
FRONTEND = Path(__file__).with_name("pep517_frontend.py")
_MAX_METADATA = 1024 * 1024
# PEP 518: what a project without [build-system] is built with.
_DEFAULT_REQUIRES = ("setuptools>=40.8.0", "wheel")
_ZIP_EPOCH = 315532800  # 1980-01-01, the earliest time a zip entry can hold


@dataclass(frozen=True)
class Backend:
    """A build backend this strategy knows, as a ``Generator:`` line names it."""

    family: str  # hatchling | flit | poetry-core | pdm-backend | setuptools | meson-python | ...
    dist: str  # the distribution to pin
    replaces: tuple[str, ...]  # pyproject requirements the pin replaces
    modules: tuple[str, ...]  # import names whose build-backend values are this backend
    tools: tuple[str, ...] = ()  # command-line tools it runs, fetched as wheels (no compilers)
    refused: str | None = None  # why this strategy cannot rebuild such wheels


@dataclass(frozen=True)
class Generator:
    """The backend pinned from a wheel's ``Generator:`` line."""

    line: str
    family: str
    requirement: str  # the pin, e.g. "hatchling==1.25.0"; a bare name when the line has no version
    backend_dists: frozenset[str]  # pyproject requirements this pin replaces
    version: str | None = None
    modules: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()

    @property
    def pinned(self) -> bool:
        return self.version is not None


_HATCHLING = Backend("hatchling", "hatchling", ("hatchling",), ("hatchling",))
_FLIT = Backend("flit", "flit-core", ("flit-core", "flit"), ("flit_core",))
_SETUPTOOLS = ("setuptools",)
# name in the Generator line -> the backend
_GENERATORS: dict[str, Backend] = {
    "hatchling": _HATCHLING,
    "flit": _FLIT,
    "flit-core": _FLIT,
    "poetry-core": Backend(
        "poetry-core", "poetry-core", ("poetry-core", "poetry"), ("poetry.core",)
    ),
    "pdm-backend": Backend("pdm-backend", "pdm-backend", ("pdm-backend",), ("pdm.backend",)),
    "pdm-pep517": Backend("pdm-backend", "pdm-pep517", ("pdm-pep517",), ("pdm.pep517",)),
    # setuptools >= 70.1 writes its own bdist_wheel and names itself.
    "setuptools": Backend("setuptools", "setuptools", ("setuptools",), _SETUPTOOLS),
    # Older setuptools builds go through the wheel package's bdist_wheel: the
    # line pins `wheel`; setuptools itself is held to the release date.
    "bdist-wheel": Backend("setuptools", "wheel", ("wheel",), _SETUPTOOLS),
    # meson-python writes "Generator: meson" with no version: the backend comes
    # from the sdist's requirements, held to the wheel's upload date. meson is
    # pure Python (a dependency of meson-python); ninja is a binary wheel.
    "meson": Backend(
        "meson-python", "meson-python", ("meson-python",), ("mesonpy",), tools=("ninja",)
    ),
    "scikit-build-core": Backend(
        "scikit-build-core",
        "scikit-build-core",
        ("scikit-build-core",),
        ("scikit_build_core",),
        tools=("cmake", "ninja"),
    ),
    # uv's build backend: a binary in uv-build's wheel (its scripts), run by a
    # small Python shim that finds it on PATH.
    "uv": Backend("uv", "uv-build", ("uv-build",), ("uv_build",)),
    "maturin": Backend(
        "maturin",
        "maturin",
        ("maturin",),
        ("maturin",),
        refused="maturin builds a Rust crate with cargo, and the python-3.11 environment has "
        "no Rust toolchain",
    ),
}
_KNOWN = (
    "hatchling, flit, poetry-core, pdm-backend, setuptools, meson-python, scikit-build-core, uv"
)
_GEN_RE = re.compile(
    r"^\s*([A-Za-z0-9][A-Za-z0-9_.\-]*)(?:\s+\(?\s*v?([0-9][0-9A-Za-z.+\-]*)\s*\)?)?\s*$"
)


class UnsupportedBackend(InputError):
    """The published wheel was built by a backend this strategy cannot rebuild."""


def parse_generator(line: str) -> Generator:
    """Map a ``Generator:`` value to the backend requirement to pin."""
    m = _GEN_RE.match(line)
    if not m:
        raise UnsupportedBackend(
            f"WHEEL Generator {line.strip()!r} does not name a backend and version "
            "(expected e.g. 'hatchling 1.25.0'); write a recipe"
        )
    name, version = canonicalize_name(m.group(1)), m.group(2)
    backend = _GENERATORS.get(name)
    if backend is None:
        raise UnsupportedBackend(
            f"WHEEL Generator {line.strip()!r}: backend {name!r} is not one this strategy "
            f"rebuilds ({_KNOWN}); write a recipe"
        )
    if backend.refused is not None:
        raise UnsupportedBackend(
            f"WHEEL Generator {line.strip()!r}: {backend.refused}; write a recipe"
        )
    if version is None and backend.family != "meson-python":
        raise UnsupportedBackend(
            f"WHEEL Generator {line.strip()!r} names {name} without a version, so the "
            "backend that built it is unknown; write a recipe"
        )
    return Generator(
        line=line.strip(),
        family=backend.family,
        requirement=f"{backend.dist}=={version}" if version else backend.dist,
        backend_dists=frozenset(canonicalize_name(d) for d in backend.replaces),
        version=version,
        modules=backend.modules,
        tools=backend.tools,
    )


@dataclass(frozen=True)
class WheelFacts:
    """What the published wheel says about its own build."""

    generator: Generator
    uniform_time: int | None  # the one timestamp every entry shares, if any
    wheel_file_time: tuple[int, int, int, int, int, int]  # date_time of dist-info/WHEEL
    entries: tuple[tuple[str, tuple[int, int, int, int, int, int], int], ...] = ()
    """(name, date_time, permission bits) of every entry, in archive order."""

    @property
    def group_writable(self) -> bool:
        """Entries carry g+w: the maintainer built with umask 002 (setuptools copies modes).

        RECORD is left out: the wheel package writes it with a fixed 0o664.
        """
        return any(
            mode & 0o020 for name, _, mode in self.entries if not name.endswith(".dist-info/RECORD")
        )


def read_wheel_facts(wheel: Path) -> WheelFacts:
    """Read the Generator line and the entry timestamps of a published wheel."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            infos = zf.infolist()
            wheel_files = [
                i
                for i in infos
                if i.filename.count("/") == 1 and i.filename.endswith(".dist-info/WHEEL")
            ]
            if len(wheel_files) != 1:
                raise InputError(f"{wheel}: expected exactly one *.dist-info/WHEEL file")
            if wheel_files[0].file_size > _MAX_METADATA:
                raise InputError(f"{wheel}: WHEEL file larger than {_MAX_METADATA} bytes")
            text = zf.read(wheel_files[0]).decode("utf-8", errors="replace")
            times = {i.date_time for i in infos}
            wheel_file_time = wheel_files[0].date_time
            entries = tuple(
                (i.filename, i.date_time, (i.external_attr >> 16) & 0o777) for i in infos
            )
    except (zipfile.BadZipFile, OSError) as e:
        raise InputError(f"{wheel}: not a readable wheel: {e}") from None
    gen = next(
        (ln.split(":", 1)[1] for ln in text.splitlines() if ln.lower().startswith("generator:")),
        None,
    )
    if gen is None:
        raise InputError(f"{wheel}: its WHEEL file has no Generator line")
    uniform = None
    if len(times) == 1:
        # Build containers run with TZ=UTC, so local time and UTC coincide.
        uniform = calendar.timegm((*next(iter(times)), 0, 0, 0))
    return WheelFacts(
        generator=parse_generator(gen),
        uniform_time=uniform,
        wheel_file_time=wheel_file_time,
        entries=entries,
    )


def _zip_time(epoch: int) -> int:
    """The epoch rounded the way a zip entry stores it (2-second steps, 1980 floor)."""
    return max(epoch, _ZIP_EPOCH) // 2 * 2


@dataclass(frozen=True)
class SdistFacts:
    """The unpacked sdist: its root, build-system table and newest mtime."""

    root: Path
    build_system: dict[str, Any]
    max_mtime: int


def unpack_sdist(sdist: Path, dest: Path) -> SdistFacts:
    """Unpack an sdist safely and read its ``[build-system]`` table."""
    unpack = unpack_zip if sdist.name.endswith(".zip") else unpack_tar
    result = unpack(sdist, dest)
    tops = [p for p in dest.iterdir()]
    if len(tops) != 1 or not tops[0].is_dir() or tops[0].is_symlink():
        raise InputError(f"{sdist}: an sdist must hold exactly one top-level directory")
    root = tops[0]
    build_system: dict[str, Any] = {}
    pyproject = root / "pyproject.toml"
    if pyproject.is_symlink():
        raise InputError(f"{sdist}: pyproject.toml is a symbolic link")
    if pyproject.exists():
        if pyproject.stat().st_size > _MAX_METADATA:
            raise InputError(f"{sdist}: pyproject.toml larger than {_MAX_METADATA} bytes")
        try:
            doc = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"{sdist}: pyproject.toml is not valid TOML: {e}") from None
        bs = doc.get("build-system", {})
        if not isinstance(bs, dict):
            raise InputError(f"{sdist}: [build-system] is not a table")
        build_system = bs
    return SdistFacts(root=root, build_system=build_system, max_mtime=result.max_mtime)


InTree = Literal["none", "self", "released", "wrapper"]


def in_tree_role(gen: Generator, build_system: dict[str, Any]) -> InTree:
    """What the sdist's in-tree backend (``backend-path``) did in the maintainer's build.

    - ``none``: there is no ``backend-path``.
    - ``self``: the in-tree backend *is* the named backend and built itself: it
      stamps a local version (pdm-backend writes ``0.0.0+local``) or none at
      all (meson-python writes ``Generator: meson``). It is used in-tree.
    - ``released``: the in-tree backend is the named backend, but the line
      names a released version (poetry-core 1.9.0 was built by poetry-core
      1.8.1): the maintainer's tool used that release and ignored
      ``backend-path``, so the rebuild does too.
    - ``wrapper``: the in-tree module is something else that imports the named
      backend (setuptools-scm's ``_own_version_helper`` wraps setuptools): it
      must stay importable, and the named backend is pinned underneath it.
    """
    paths = build_system.get("backend-path")
    if not paths:
        return "none"
    module = str(build_system.get("build-backend", "")).partition(":")[0].strip()
    own = any(module == m or module.startswith(f"{m}.") for m in gen.modules)
    if not own:
        return "wrapper"
    if gen.version is None or "+" in gen.version:
        return "self"
    return "released"


def builds_in_tree(gen: Generator, build_system: dict[str, Any]) -> bool:
    """Was the wheel built by the sdist's own in-tree copy of the backend?"""
    return in_tree_role(gen, build_system) == "self"


_ENV_MARKERS = {"python_version": "3.11", "python_full_version": "3.11.2", "sys_platform": "linux"}


def _applicable(raw: str, what: str) -> Requirement | None:
    """The requirement without its marker, or None when the marker excludes the environment."""
    try:
        req = Requirement(raw)
    except InvalidRequirement as e:
        raise InputError(f"{what} {raw!r}: {e}") from None
    if req.marker is not None and not req.marker.evaluate(_ENV_MARKERS):
        return None
    req.marker = None
    return req


def dynamic_requirements(reqs: Sequence[str], asked: Sequence[str]) -> list[str]:
    """What the backend asked for at build time that ``reqs`` does not name yet."""
    have = {canonicalize_name(Requirement(r).name) for r in reqs}
    out: list[str] = []
    for raw in asked[:64]:
        req = _applicable(raw, "build requirement asked for by the backend")
        if req is not None and canonicalize_name(req.name) not in have:
            have.add(canonicalize_name(req.name))
            out.append(str(req))
    return out


_MISSING_LINE = "rebuild-frontend: missing-build-requirements "
_LOG_TAIL = 256 * 1024


def missing_from_log(log: Path) -> list[str] | None:
    """The requirements the frontend reported missing in a build log, if it did."""
    try:
        with log.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - _LOG_TAIL))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    lines = [ln for ln in text.splitlines() if ln.startswith(_MISSING_LINE)]
    if not lines:
        return None
    try:
        asked = json.loads(lines[-1].removeprefix(_MISSING_LINE))
    except ValueError:
        return None
    if not isinstance(asked, list) or not all(isinstance(a, str) for a in asked):
        return None
    return [a[:256] for a in asked]


def build_requirements(gen: Generator, build_system: dict[str, Any]) -> list[str]:
    """The backend pin plus the sdist's other build requirements and the backend's tools."""
    requires = build_system.get("requires", list(_DEFAULT_REQUIRES))
    if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
        raise InputError("pyproject [build-system] requires is not a list of strings")
    in_tree = builds_in_tree(gen, build_system)
    out = [] if in_tree or not gen.pinned else [gen.requirement]
    for raw in requires:
        req = _applicable(raw, "pyproject build requirement")
        if req is None:
            continue
        # Without a version in the Generator line the sdist's own requirement
        # for the backend stands (held to the upload date like the rest).
        if canonicalize_name(req.name) in gen.backend_dists and gen.pinned:
            continue
        out.append(str(req))
    names = {canonicalize_name(Requirement(r).name) for r in out}
    if not gen.pinned and not in_tree and not names & gen.backend_dists:
        out.append(gen.requirement)
    # Tools the backend runs as commands (ninja, cmake): the environment has
    # none, and their wheels carry the binaries.
    out += [t for t in gen.tools if canonicalize_name(t) not in names]
    if gen.requirement.startswith("wheel=="):
        # bdist_wheel came from the wheel package, so setuptools is needed too,
        # and one older than 70.1: from then on setuptools ships its own
        # bdist_wheel (which would have named itself in the Generator line).
        kept = []
        for r in out:
            req = Requirement(r)
            if canonicalize_name(req.name) == "setuptools":
                req.specifier &= "<70.1"
            kept.append(str(req))
        out = kept
        if not any(canonicalize_name(Requirement(r).name) == "setuptools" for r in out):
            out.append("setuptools<70.1")
    return out


# flit_core stamps dist-info entries with this date when SOURCE_DATE_EPOCH is
# unset (and takes every other entry's time from the file's mtime).
_FLIT_NO_SDE = (2016, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class EpochChoice:
    """SOURCE_DATE_EPOCH for the build, or the decision to leave it unset."""

    value: int
    rule: str
    unset: bool = False


def choose_source_date_epoch(sdist: SdistFacts, wheel: WheelFacts) -> EpochChoice:
    """Pick SOURCE_DATE_EPOCH from the evidence and name the rule that chose it."""
    if (
        wheel.generator.family == "flit"
        and wheel.uniform_time is None
        and wheel.wheel_file_time == _FLIT_NO_SDE
    ):
        # The maintainer built without SOURCE_DATE_EPOCH: entries carry the
        # source files' mtimes, which the sdist preserved and the unpacker kept.
        return EpochChoice(sdist.max_mtime, "unset (flit: wheel built without it)", unset=True)
    if wheel.uniform_time is not None and wheel.uniform_time != _zip_time(sdist.max_mtime):
        return EpochChoice(
            wheel.uniform_time, "published wheel entries' common timestamp (sdist differs)"
        )
    return EpochChoice(sdist.max_mtime, "newest sdist member mtime")


_MAX_TZ_SAMPLES = 64


def _matched_mtimes(sdist: SdistFacts, wheel: WheelFacts) -> list[tuple[int, tuple[int, ...]]]:
    """(true mtime from the sdist, time shown in the wheel) for files in both."""
    pairs: list[tuple[int, tuple[int, ...]]] = []
    for name, date_time, _ in wheel.entries:
        if ".dist-info/" in name or name.endswith("/"):
            continue
        for candidate in (sdist.root / name, sdist.root / "src" / name):
            if candidate.is_file() and not candidate.is_symlink():
                pairs.append((int(candidate.stat().st_mtime), date_time))
                break
        if len(pairs) >= _MAX_TZ_SAMPLES:
            break
    return pairs


def _shown(mtime: int, zone: zoneinfo.ZoneInfo) -> tuple[int, ...]:
    t = datetime.fromtimestamp(mtime, zone)
    # zip keeps local wall-clock time in 2-second steps
    return (t.year, t.month, t.day, t.hour, t.minute, t.second // 2 * 2)


def _posix_rule(zone_name: str) -> str | None:
    """The POSIX TZ string that ends a TZif file (RFC 8536 footer)."""
    for base in zoneinfo.TZPATH:
        path = Path(base) / zone_name
        try:
            if path.is_file() and path.stat().st_size < 1024 * 1024:
                footer = path.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1]
                text = footer.decode("ascii")
                return text if text and text.isprintable() else None
        except (OSError, UnicodeDecodeError):
            return None
    return None


def infer_time_zone(sdist: SdistFacts, wheel: WheelFacts) -> str | None:
    """The maintainer's time zone, as a POSIX TZ string, from a file-mtime wheel.

    Backends that take entry times from file mtimes (flit without
    SOURCE_DATE_EPOCH) render them in local time; the sdist kept the true
    mtimes. The first time zone (with its daylight-saving rule) that explains
    every file seen in both is returned; None when UTC explains them or none
    does. The container has no tzdata, hence the self-contained POSIX form.
    """
    pairs = _matched_mtimes(sdist, wheel)
    utc = zoneinfo.ZoneInfo("UTC")
    if not pairs or all(_shown(m, utc) == shown for m, shown in pairs):
        return None
    try:
        names = sorted(zoneinfo.available_timezones())
    except OSError:
        return None
    # Zones where maintainers commonly live first; among equals the first wins.
    names = [n for n in _COMMON_ZONES if n in names] + names
    for name in names:
        try:
            zone = zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            continue
        if not all(_shown(m, zone) == shown for m, shown in pairs):
            continue
        rule = _posix_rule(name)
        # The container only gets the POSIX rule (no history): it must give
        # the same wall-clock times as the full zone for these files.
        if rule and _rule_reproduces(rule, pairs):
            return rule
    return None


_COMMON_ZONES = (
    "Europe/London",
    "Europe/Berlin",
    "Europe/Helsinki",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Asia/Shanghai",
    "Asia/Tokyo",
    "Australia/Sydney",
)


def _rule_reproduces(rule: str, pairs: list[tuple[int, tuple[int, ...]]]) -> bool:
    """Evaluate a POSIX TZ rule the way the build will: TZ=rule in a child Python."""
    code = (
        "import sys, time\n"
        "for t in map(int, sys.argv[1:]):\n"
        "    lt = time.localtime(t)\n"
        "    print(*lt[:5], lt[5] // 2 * 2)\n"
    )
    env = {"TZ": rule, "PATH": os.environ.get("PATH", "")}
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-c", code, *(str(m) for m, _ in pairs)],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    got = [tuple(int(x) for x in line.split()) for line in proc.stdout.splitlines()]
    return proc.returncode == 0 and got == [tuple(shown) for _, shown in pairs]


_ENTRY_POINTS_MAX = 256 * 1024
_SCRIPT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_OBJECT_REF = re.compile(
    r"([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)(?::([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*))?"
)
SITE_MOUNT = "/rebuild/site"
BIN_MOUNT = "/rebuild/bin"
_CONTAINER_PYTHON = "/usr/bin/python3"


def write_console_scripts(site_dir: Path, bin_dir: Path) -> list[str]:
    """Write the build requirements' ``console_scripts`` as commands in ``bin_dir``.

    Backends such as meson-python run their tools (``meson``, ``ninja``) as
    commands found on PATH; pip would have written these launchers when
    installing. Each launcher runs the image's Python with ``-S`` and the
    pinned site folder only. Names and object references are checked against
    the entry-point syntax, so nothing from a wheel is pasted into code
    unchecked. Returns the command names written.
    """
    bin_dir.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    for ep in sorted(site_dir.glob("*.dist-info/entry_points.txt")):
        if ep.is_symlink() or ep.stat().st_size > _ENTRY_POINTS_MAX:
            continue
        cp = configparser.ConfigParser(interpolation=None, delimiters=("=",))
        cp.optionxform = str  # type: ignore[assignment,method-assign]
        try:
            cp.read_string(ep.read_text(encoding="utf-8"))
        except (configparser.Error, UnicodeDecodeError):
            continue
        if not cp.has_section("console_scripts"):
            continue
        for name, ref in cp.items("console_scripts"):
            m = _OBJECT_REF.fullmatch(ref.split("[", 1)[0].strip())
            target = bin_dir / name
            if not _SCRIPT_NAME.fullmatch(name) or m is None or target.exists():
                continue
            module, attr = m.group(1), m.group(2)
            call = f"{module}.{attr}" if attr else module
            target.write_text(
                f"#!{_CONTAINER_PYTHON} -S\n"
                "import importlib, site, sys\n"
                f"site.addsitedir({SITE_MOUNT!r})\n"
                f"obj = importlib.import_module({module!r})\n"
                f"for part in {attr.split('.') if attr else []!r}:\n"
                "    obj = getattr(obj, part)\n"
                f"sys.argv[0] = {name!r}  # {call}\n"
                "sys.exit(obj())\n",
                encoding="utf-8",
            )
            target.chmod(0o755)
            written.append(name)
    return written


def plan_pypi_wheel(
    *,
    index: PackageIndex,
    sdist: Path,
    wheel: Path,
    wheel_uploaded: datetime | None,
    work: Path,
    index_url: str | None = None,
    asked: Sequence[str] | None = None,
) -> BuildPlan:
    """Infer and prepare the build of ``wheel`` from ``sdist`` (inputs fetched, pinned).

    ``asked`` is what the backend's ``get_requires_for_build_wheel`` asked for
    in an earlier attempt that stopped for missing requirements: they join
    the requirements (held to the date like the rest), and the frontend then
    builds without checking again.
    """
    facts = read_wheel_facts(wheel)
    src_parent = work / "sdist"
    if src_parent.exists():
        shutil.rmtree(src_parent)
    sd = unpack_sdist(sdist, src_parent)
    reqs = build_requirements(facts.generator, sd.build_system)
    dynamic = dynamic_requirements(reqs, asked or [])
    reqs += dynamic
    wh = resolve_wheelhouse(
        reqs, work / "wheelhouse", index=index, before=wheel_uploaded, index_url=index_url
    )
    site_dir, bin_dir, scripts = _install_tools(wh, work)
    epoch = choose_source_date_epoch(sd, facts)
    # -S: no site-packages of the image; the pinned wheelhouse is the only one.
    command: tuple[str, ...] = (
        "python3",
        "-S",
        "/rebuild/frontend.py",
        SITE_MOUNT,
        OUTPUT_DIR,
    )
    inputs = [InputMount(FRONTEND, "/rebuild/frontend.py"), InputMount(site_dir, SITE_MOUNT)]
    if scripts:
        command += ("--path", BIN_MOUNT)
        inputs.append(InputMount(bin_dir, BIN_MOUNT))
    flags, knobs, hints = _frontend_flags(
        facts, sd, wh, wheel.name, epoch=epoch, asked=asked, dynamic=dynamic
    )
    command += flags
    return BuildPlan(
        environment=ENVIRONMENT,
        command=command,
        source_dir=sd.root,
        source_date_epoch=epoch.value,
        sde_rule=epoch.rule,
        output=wheel.name,
        inputs=tuple(inputs),
        details={
            "strategy": "pypi-wheel",
            "generator": facts.generator.line,
            "backend": facts.generator.family,
            "build_requirements": reqs,
            "wheelhouse": wh.to_json(),
            "build_dir": BUILD_DIR,
            "knobs": knobs,
            "mismatch_hints": hints,
        },
    )


def _install_tools(wh: Wheelhouse, work: Path) -> tuple[Path, Path, list[str]]:
    """Install the wheelhouse into fresh ``work/site`` and ``work/bin``; the scripts in bin."""
    site_dir = work / "site"
    if site_dir.exists():
        shutil.rmtree(site_dir)
    bin_dir = work / "bin"
    if bin_dir.exists():
        shutil.rmtree(bin_dir)
    install_wheelhouse(wh, site_dir, bin_dir)  # binaries such as uv-build
    write_console_scripts(site_dir, bin_dir)  # launchers such as meson
    return site_dir, bin_dir, sorted(p.name for p in bin_dir.iterdir())


def _frontend_flags(
    facts: WheelFacts,
    sd: SdistFacts,
    wh: Wheelhouse,
    wheel_name: str,
    *,
    epoch: EpochChoice,
    asked: Sequence[str] | None,
    dynamic: list[str],
) -> tuple[tuple[str, ...], dict[str, Any], list[str]]:
    """The frontend's flags that reproduce how the published wheel was built.

    Returns the flags, the knobs they set (for the plan's details) and hints
    for a mismatch nothing published explains.
    """
    flags: tuple[str, ...] = ()
    knobs: dict[str, Any] = {}
    if asked is not None:
        flags += ("--skip-requires-check",)
        knobs["asked_for"] = dynamic
    if epoch.unset:
        flags += ("--unset-source-date-epoch",)
        # Entry times are local-time renderings of the mtimes: use the
        # maintainer's time zone (the build otherwise runs with TZ=UTC).
        tz = infer_time_zone(sd, facts)
        if tz:
            flags += ("--tz", tz)
            knobs["tz"] = tz
    hints: list[str] = []
    if facts.uniform_time is None and not epoch.unset:
        # Mixed entry times and no backend fallback that explains them: the
        # maintainer built without SOURCE_DATE_EPOCH, so generated files carry
        # their build clock, which nothing published records.
        hints.append("published wheel built without SOURCE_DATE_EPOCH (mixed entry times)")
    if facts.group_writable:
        # setuptools copies build files with the process umask; the published
        # modes show the maintainer's (the runner defaults to 022).
        flags += ("--umask", "002")
        knobs["umask"] = "002"
    if facts.generator.family == "setuptools" and ".py2.py3-" in f".{wheel_name.split('-', 2)[2]}":
        # A universal wheel comes from `bdist_wheel --universal` given on the
        # maintainer's command line; setuptools >= 64 takes it as a build
        # option, older ones as a trailing global option.
        setuptools = next((e for e in wh.entries if e.name.lower() == "setuptools"), None)
        key = "--build-option"
        if setuptools is not None and Version(setuptools.version) < Version("64"):
            key = "--global-option"
        flags += ("--config-setting", f"{key}=--universal")
        knobs["universal"] = key
    role = in_tree_role(facts.generator, sd.build_system)
    if role == "released":
        # The released backend named by Generator built it, not the in-tree copy.
        flags += ("--ignore-backend-path",)
        knobs["ignore_backend_path"] = True
    elif role != "none":
        knobs["in_tree_backend"] = role
    return flags, knobs, hints
