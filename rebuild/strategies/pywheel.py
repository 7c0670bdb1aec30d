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
import re
import shutil
import tomllib
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from rebuild.engine.plan import BUILD_DIR, OUTPUT_DIR, BuildPlan, InputMount
from rebuild.errors import InputError
from rebuild.sources.pypi import PackageIndex, install_wheelhouse, resolve_wheelhouse
from rebuild.sources.unpack import unpack_tar, unpack_zip

ENVIRONMENT = "python-3.11"
FRONTEND = Path(__file__).with_name("pep517_frontend.py")
_MAX_METADATA = 1024 * 1024
# PEP 518: what a project without [build-system] is built with.
_DEFAULT_REQUIRES = ("setuptools>=40.8.0", "wheel")
_ZIP_EPOCH = 315532800  # 1980-01-01, the earliest time a zip entry can hold


@dataclass(frozen=True)
class Generator:
    """The backend pinned from a wheel's ``Generator:`` line."""

    line: str
    family: str  # hatchling | flit | poetry-core | pdm-backend | setuptools
    requirement: str  # the pinned requirement, e.g. "hatchling==1.25.0"
    backend_dists: frozenset[str]  # pyproject requirements this pin replaces


# name in the Generator line -> (family, distribution to pin, requirements it replaces)
_GENERATORS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "hatchling": ("hatchling", "hatchling", ("hatchling",)),
    "flit": ("flit", "flit-core", ("flit-core", "flit")),
    "flit-core": ("flit", "flit-core", ("flit-core", "flit")),
    "poetry-core": ("poetry-core", "poetry-core", ("poetry-core", "poetry")),
    "pdm-backend": ("pdm-backend", "pdm-backend", ("pdm-backend",)),
    "pdm-pep517": ("pdm-backend", "pdm-pep517", ("pdm-pep517",)),
    # setuptools >= 70.1 writes its own bdist_wheel and names itself.
    "setuptools": ("setuptools", "setuptools", ("setuptools",)),
    # Older setuptools builds go through the wheel package's bdist_wheel: the
    # line pins `wheel`; setuptools itself is held to the release date.
    "bdist-wheel": ("setuptools", "wheel", ("wheel",)),
}
_GEN_RE = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*\(?\s*v?([0-9][0-9A-Za-z.+\-]*)\s*\)?\s*$")


def parse_generator(line: str) -> Generator:
    """Map a ``Generator:`` value to the backend requirement to pin."""
    m = _GEN_RE.match(line)
    if not m:
        raise InputError(f"WHEEL Generator {line!r}: cannot read a name and version")
    name, version = canonicalize_name(m.group(1)), m.group(2)
    if name not in _GENERATORS:
        raise InputError(
            f"WHEEL Generator {line!r}: backend {name!r} is not one this strategy "
            "rebuilds (hatchling, flit, poetry-core, pdm-backend, setuptools); write a recipe"
        )
    family, dist, replaces = _GENERATORS[name]
    return Generator(
        line=line.strip(),
        family=family,
        requirement=f"{dist}=={version}",
        backend_dists=frozenset(canonicalize_name(d) for d in replaces),
    )


@dataclass(frozen=True)
class WheelFacts:
    """What the published wheel says about its own build."""

    generator: Generator
    uniform_time: int | None  # the one timestamp every entry shares, if any
    wheel_file_time: tuple[int, int, int, int, int, int]  # date_time of dist-info/WHEEL


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
        generator=parse_generator(gen), uniform_time=uniform, wheel_file_time=wheel_file_time
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


def build_requirements(gen: Generator, build_system: dict[str, Any]) -> list[str]:
    """The backend pin plus the sdist's other build requirements."""
    requires = build_system.get("requires", list(_DEFAULT_REQUIRES))
    if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
        raise InputError("pyproject [build-system] requires is not a list of strings")
    out = [gen.requirement]
    for raw in requires:
        try:
            req = Requirement(raw)
        except InvalidRequirement as e:
            raise InputError(f"pyproject build requirement {raw!r}: {e}") from None
        if req.marker is not None and not req.marker.evaluate(
            {"python_version": "3.11", "python_full_version": "3.11.2", "sys_platform": "linux"}
        ):
            continue
        if canonicalize_name(req.name) in gen.backend_dists:
            continue
        req.marker = None
        out.append(str(req))
    # bdist_wheel came from the wheel package, so setuptools is needed too.
    if gen.requirement.startswith("wheel==") and not any(
        canonicalize_name(Requirement(r).name) == "setuptools" for r in out
    ):
        out.append("setuptools")
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


def plan_pypi_wheel(
    *,
    index: PackageIndex,
    sdist: Path,
    wheel: Path,
    wheel_uploaded: datetime | None,
    work: Path,
    index_url: str | None = None,
) -> BuildPlan:
    """Infer and prepare the build of ``wheel`` from ``sdist`` (inputs fetched, pinned)."""
    facts = read_wheel_facts(wheel)
    src_parent = work / "sdist"
    if src_parent.exists():
        shutil.rmtree(src_parent)
    sd = unpack_sdist(sdist, src_parent)
    reqs = build_requirements(facts.generator, sd.build_system)
    wh = resolve_wheelhouse(
        reqs, work / "wheelhouse", index=index, before=wheel_uploaded, index_url=index_url
    )
    site_dir = work / "site"
    if site_dir.exists():
        shutil.rmtree(site_dir)
    install_wheelhouse(wh, site_dir)
    epoch = choose_source_date_epoch(sd, facts)
    command: tuple[str, ...] = ("python3", "/rebuild/frontend.py", "/rebuild/site", OUTPUT_DIR)
    if epoch.unset:
        command += ("--unset-source-date-epoch",)
    return BuildPlan(
        environment=ENVIRONMENT,
        command=command,
        source_dir=sd.root,
        source_date_epoch=epoch.value,
        sde_rule=epoch.rule,
        output=wheel.name,
        inputs=(
            InputMount(FRONTEND, "/rebuild/frontend.py"),
            InputMount(site_dir, "/rebuild/site"),
        ),
        details={
            "strategy": "pypi-wheel",
            "generator": facts.generator.line,
            "backend": facts.generator.family,
            "build_requirements": reqs,
            "wheelhouse": wh.to_json(),
            "build_dir": BUILD_DIR,
        },
    )
