"""The package index seam: locate and fetch sdists, wheels and build requirements.

Decides which index to ask (pip's own configuration, never a host name
written here), which files belong to a release, and whether a downloaded
file is the one the index vouched for (sha256). It never runs code from a
downloaded package: sdists are located through the index's PEP 691 JSON API
and fetched as bytes (``pip download`` of an sdist would execute its build
backend on the host), and build requirements are fetched by ``pip download
--only-binary :all:``, which only ever handles wheels.

Every failure of the index or of pip becomes a :class:`~rebuild.errors.TransportError`
or :class:`~rebuild.errors.ToolError`; a file whose digest differs from the
index's is an :class:`~rebuild.errors.InputError` and is never kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from packaging.utils import (
    InvalidWheelFilename,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from rebuild.errors import InputError, ToolError, TransportError, UsageError
from rebuild.sources.unpack import UnpackLimits, unpack_zip

MAX_INDEX_PAGE = 32 * 1024 * 1024
MAX_ARTIFACT = 512 * 1024 * 1024
HTTP_TIMEOUT = 60.0
PIP_TIMEOUT = 600.0
_JSON_ACCEPT = "application/vnd.pypi.simple.v1+json"
_ENV_INDEX = "REBUILD_INDEX_URL"


@dataclass(frozen=True)
class IndexFile:
    """One file of a project as the index lists it."""

    filename: str
    url: str
    sha256: str
    size: int | None
    upload_time: datetime | None
    yanked: bool


@dataclass(frozen=True)
class PipConfig:
    """The parts of pip's configuration this module honours."""

    index_url: str
    cert: str | None


def _pip_config_values(python: str) -> dict[str, str]:
    try:
        proc = subprocess.run(
            [python, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ToolError(f"pip config list: cannot run pip: {e}") from None
    if proc.returncode != 0:
        raise ToolError(f"pip config list failed: {proc.stderr.strip()[:500]}")
    values: dict[str, str] = {}
    # Lines look like  global.index-url='...'  or  :env:.cert='...'. The
    # environment wins over files, as it does in pip itself.
    ordered = sorted(proc.stdout.splitlines(), key=lambda s: s.startswith(":env:"))
    for line in ordered:
        key, sep, value = line.partition("=")
        if not sep:
            continue
        option = key.rsplit(".", 1)[-1]
        values[option] = value.strip().strip("'\"")
    return values


def pip_default_index(python: str) -> str:
    """The index pip uses when none is configured, read from pip itself."""
    code = "from pip._internal.models.index import PyPI; print(PyPI.simple_url)"
    try:
        proc = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ToolError(f"cannot ask pip for its default index: {e}") from None
    url = proc.stdout.strip()
    if proc.returncode != 0 or not url:
        raise ToolError(
            "cannot ask pip for its default index (set index-url in pip's configuration "
            f"or {_ENV_INDEX}): {proc.stderr.strip()[:300]}"
        )
    return url


def pip_config(python: str | None = None) -> PipConfig:
    """Read the index URL and CA bundle pip would use on this host.

    ``REBUILD_INDEX_URL`` overrides the index (tests point it at a local
    server); otherwise pip's configured ``index-url``, otherwise pip's
    built-in default.
    """
    py = python or sys.executable
    values = _pip_config_values(py)
    url = os.environ.get(_ENV_INDEX) or values.get("index-url") or pip_default_index(py)
    return PipConfig(index_url=url.rstrip("/"), cert=values.get("cert"))


def _check_transport(url: str) -> None:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "https":
        return
    if parsed.scheme == "http":
        host = parsed.hostname or ""
        try:
            if host == "localhost" or ipaddress.ip_address(host).is_loopback:
                return
        except ValueError:
            pass
        raise UsageError(f"{url}: plain HTTP is refused except to a loopback address")
    raise UsageError(f"{url}: unsupported URL scheme {parsed.scheme!r} (need https)")


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class PackageIndex:
    """A PEP 691 (JSON simple API) package index, as configured for pip."""

    def __init__(self, index_url: str, *, cert: str | None = None) -> None:
        _check_transport(index_url)
        self.url = index_url.rstrip("/")
        self._ctx = ssl.create_default_context(cafile=cert) if cert else None
        self._pages: dict[str, tuple[IndexFile, ...]] = {}

    @classmethod
    def from_pip(cls, python: str | None = None) -> PackageIndex:
        cfg = pip_config(python)
        return cls(cfg.index_url, cert=cfg.cert)

    def _open(self, url: str, accept: str | None = None) -> Any:
        _check_transport(url)
        # Only https (or http to loopback) reaches here: _check_transport refused the rest.
        req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})  # noqa: S310
        try:
            return urllib.request.urlopen(req, timeout=HTTP_TIMEOUT, context=self._ctx)  # noqa: S310
        except urllib.error.HTTPError as e:
            if e.code == 404:
                raise InputError(f"{url}: not found on the index") from None
            raise TransportError(f"{url}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, ConnectionRefusedError):
                host = urllib.parse.urlsplit(url).netloc
                raise TransportError(
                    f"cannot reach {url}: connection refused",
                    hint=f"is the server at {host} running, and is the URL right?",
                ) from None
            raise TransportError(f"{url}: {reason}") from None

    def files(self, project: str) -> tuple[IndexFile, ...]:
        """All files the index lists for ``project`` (cached per instance)."""
        name = canonicalize_name(project)
        if name in self._pages:
            return self._pages[name]
        url = f"{self.url}/{name}/"
        with self._open(url, _JSON_ACCEPT) as resp:
            ctype = resp.headers.get("Content-Type", "")
            try:
                body = resp.read(MAX_INDEX_PAGE + 1)
            except OSError as e:
                raise TransportError(f"{url}: {e}") from None
        if len(body) > MAX_INDEX_PAGE:
            raise TransportError(f"{url}: index page larger than {MAX_INDEX_PAGE} bytes")
        if "json" not in ctype:
            raise TransportError(
                f"{url}: the index does not serve the JSON simple API (PEP 691); got {ctype!r}"
            )
        try:
            doc = json.loads(body)
            raw_files = doc["files"]
            out: list[IndexFile] = []
            for f in raw_files:
                digest = f.get("hashes", {}).get("sha256")
                if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
                    continue  # a file the index cannot vouch for is never used
                out.append(
                    IndexFile(
                        filename=str(f["filename"]),
                        url=urllib.parse.urljoin(url, str(f["url"])),
                        sha256=digest,
                        size=f.get("size") if isinstance(f.get("size"), int) else None,
                        upload_time=_parse_time(f.get("upload-time")),
                        yanked=bool(f.get("yanked", False)),
                    )
                )
        except (ValueError, KeyError, TypeError) as e:
            raise TransportError(f"{url}: malformed JSON simple API page: {e}") from None
        result = tuple(out)
        self._pages[name] = result
        return result

    def download(self, f: IndexFile, dest_dir: Path, *, max_bytes: int = MAX_ARTIFACT) -> Path:
        """Fetch ``f`` into ``dest_dir``, keeping it only if its sha256 is the index's."""
        if "/" in f.filename or f.filename.startswith("."):
            raise InputError(f"index file name {f.filename!r} is not a plain file name")
        target = dest_dir / f.filename
        if target.exists():
            if _sha256_path(target) == f.sha256:
                return target
            target.unlink()
        h = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(prefix=f".{f.filename}.", dir=dest_dir)
        try:
            with os.fdopen(fd, "wb") as out, self._open(f.url) as resp:
                n = 0
                while chunk := resp.read(1024 * 1024):
                    n += len(chunk)
                    if n > max_bytes:
                        raise TransportError(f"{f.url}: larger than {max_bytes} bytes")
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if h.hexdigest() != f.sha256:
                raise InputError(
                    f"{f.url}: served {f.filename} with sha256 {h.hexdigest()}, not the "
                    f"expected {f.sha256}"
                )
            os.replace(tmp, target)
        except OSError as e:
            raise TransportError(f"{f.url}: download failed: {e}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return target


def _sha256_path(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass(frozen=True)
class ReleaseFiles:
    """The sdist and pure-Python wheel of one release, as the index lists them."""

    name: str
    version: str
    sdist: IndexFile
    wheel: IndexFile


def _is_pure_wheel(filename: str) -> bool:
    try:
        _, _, _, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return False
    return any(t.abi == "none" and t.platform == "any" for t in tags)


def _release_files(
    index: PackageIndex, name: str
) -> dict[Version, tuple[list[IndexFile], list[IndexFile]]]:
    """``{version: (sdists, pure wheels)}`` of ``name`` as the index lists them."""
    cname = canonicalize_name(name)
    out: dict[Version, tuple[list[IndexFile], list[IndexFile]]] = {}
    for f in index.files(name):
        if f.filename.endswith(".whl"):
            try:
                wname, wver, _, _ = parse_wheel_filename(f.filename)
            except InvalidWheelFilename:
                continue
            if wname == cname and _is_pure_wheel(f.filename):
                out.setdefault(wver, ([], []))[1].append(f)
        elif f.filename.endswith((".tar.gz", ".zip")):
            stem = f.filename.removesuffix(".tar.gz").removesuffix(".zip")
            sname, _, sver = stem.rpartition("-")
            try:
                if canonicalize_name(sname) == cname:
                    out.setdefault(Version(sver), ([], []))[0].append(f)
            except InvalidVersion:
                continue
    for sdists, wheels in out.values():
        # Prefer .tar.gz (the PEP 625 form) over legacy .zip sdists.
        sdists.sort(key=lambda f: not f.filename.endswith(".tar.gz"))
        # Several pure wheels (backrefs publishes py310 ... py315): first the one
        # the build environment's Python makes, then a generic py3 one.
        wheels.sort(key=_wheel_rank)
    return out


def _wheel_rank(f: IndexFile) -> int:
    _, _, _, tags = parse_wheel_filename(f.filename)
    interpreters = {t.interpreter for t in tags}
    if interpreters & {"py311", "cp311"}:
        return 0
    if interpreters & {"py3", "py2"}:
        return 1
    return 2


def locate_release(index: PackageIndex, name: str, version: str) -> ReleaseFiles:
    """Find the sdist and the pure-Python wheel of ``name==version``."""
    try:
        want = Version(version)
    except InvalidVersion:
        raise UsageError(f"{version!r} is not a valid version") from None
    sdists, wheels = _release_files(index, name).get(want, ([], []))
    if not wheels:
        raise InputError(f"{name}=={version}: the index lists no pure-Python wheel (*-none-any)")
    if not sdists:
        raise InputError(f"{name}=={version}: the index lists no sdist to rebuild from")
    return ReleaseFiles(name=name, version=str(want), sdist=sdists[0], wheel=wheels[0])


def list_releases(index: PackageIndex, name: str) -> list[ReleaseFiles]:
    """Every version with a pure-Python wheel and an sdist, neither yanked, oldest first."""
    out: list[ReleaseFiles] = []
    for version, (all_sdists, all_wheels) in sorted(_release_files(index, name).items()):
        sdists = [f for f in all_sdists if not f.yanked]
        wheels = [f for f in all_wheels if not f.yanked]
        if sdists and wheels:
            out.append(ReleaseFiles(name, str(version), sdist=sdists[0], wheel=wheels[0]))
    return out


def latest_before(index: PackageIndex, project: str, when: datetime) -> Version | None:
    """The newest non-yanked final version with a usable wheel uploaded before ``when``."""
    best: Version | None = None
    for f in index.files(project):
        if f.yanked or f.upload_time is None or f.upload_time >= when:
            continue
        if not f.filename.endswith(".whl") or not _wheel_fits_env(f.filename):
            continue
        try:
            _, ver, _, _ = parse_wheel_filename(f.filename)
        except InvalidWheelFilename:
            continue
        if ver.is_prerelease or ver.is_devrelease:
            continue
        if best is None or ver > best:
            best = ver
    return best


def _wheel_fits_env(filename: str) -> bool:
    """Could this wheel install into the CPython 3.11 x86_64 build environments?"""
    try:
        _, _, _, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return False
    for t in tags:
        py_ok = t.interpreter in ("py3", "py311", "cp311") or t.interpreter.startswith("py3")
        plat_ok = t.platform == "any" or (
            t.platform.endswith("x86_64") and t.platform.startswith("manylinux")
        )
        if py_ok and plat_ok and t.abi in ("none", "abi3", "cp311"):
            return True
    return False


# --- build requirements: a hashed wheelhouse -------------------------------------------------


@dataclass(frozen=True)
class WheelEntry:
    """One wheel of a wheelhouse, pinned by name, version and sha256."""

    name: str
    version: str
    filename: str
    sha256: str


@dataclass(frozen=True)
class Wheelhouse:
    """Build requirements resolved on the host, as hashed wheels in ``directory``."""

    directory: Path
    entries: tuple[WheelEntry, ...]
    requested: tuple[str, ...]
    date_pinned: bool

    def requirements_txt(self) -> str:
        """The wheelhouse as a pip ``--require-hashes`` requirements file."""
        return "".join(f"{e.name}=={e.version} --hash=sha256:{e.sha256}\n" for e in self.entries)

    def to_json(self) -> dict[str, Any]:
        return {
            "requested": list(self.requested),
            "date_pinned": self.date_pinned,
            "wheels": [
                {"name": e.name, "version": e.version, "filename": e.filename, "sha256": e.sha256}
                for e in self.entries
            ],
        }


_TARGET_FLAGS = (
    "--only-binary",
    ":all:",
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
    "--abi",
    "cp311",
    "--platform",
    "manylinux2014_x86_64",
    "--platform",
    "manylinux_2_28_x86_64",
)


def _pip_download(
    python: str,
    requirements: Sequence[str],
    constraints: dict[str, Version],
    dest: Path,
    index_url: str | None,
) -> None:
    work = dest.parent
    req_file = work / "requirements.in"
    con_file = work / "constraints.in"
    req_file.write_text("".join(f"{r}\n" for r in requirements), encoding="utf-8")
    con_file.write_text(
        "".join(f"{n}=={v}\n" for n, v in sorted(constraints.items())), encoding="utf-8"
    )
    cmd = [
        python,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--no-input",
        "--dest",
        str(dest),
        *_TARGET_FLAGS,
        "-r",
        str(req_file),
        "-c",
        str(con_file),
    ]
    if index_url:
        cmd += ["--index-url", index_url]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise ToolError(
            f"pip download of build requirements timed out after {PIP_TIMEOUT}s"
        ) from None
    except OSError as e:
        raise ToolError(f"pip download: cannot run pip: {e}") from None
    if proc.returncode != 0:
        lines = [
            ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")
        ]
        raise ToolError(
            "pip download of build requirements failed: " + " | ".join(lines[-4:])[:800]
        )


def _scan(dest: Path) -> list[WheelEntry]:
    entries: list[WheelEntry] = []
    for p in sorted(dest.iterdir()):
        if not p.name.endswith(".whl"):
            raise ToolError(f"pip download produced a non-wheel file {p.name}")
        try:
            name, ver, _, _ = parse_wheel_filename(p.name)
        except InvalidWheelFilename:
            raise ToolError(f"pip download produced a malformed wheel name {p.name}") from None
        entries.append(WheelEntry(str(name), str(ver), p.name, _sha256_path(p)))
    return entries


def resolve_wheelhouse(
    requirements: Sequence[str],
    dest: Path,
    *,
    index: PackageIndex | None,
    before: datetime | None,
    python: str | None = None,
    index_url: str | None = None,
    max_rounds: int = 4,
) -> Wheelhouse:
    """Resolve ``requirements`` to wheels for CPython 3.11 in ``dest``.

    With ``before`` (the release's upload time) and an index, every
    requirement that is not pinned exactly is held to the newest version
    uploaded before that moment: the maintainer could not have built with
    anything newer, and newer build tools change wheel metadata. Resolution
    repeats until the set is stable; if the dated set cannot be satisfied the
    undated resolution is kept and ``date_pinned`` says so.
    """
    py = python or sys.executable
    if not requirements:
        # A self-hosting backend with no requirements: an empty wheelhouse.
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        return Wheelhouse(directory=dest, entries=(), requested=(), date_pinned=False)
    constraints: dict[str, Version] = {}
    pinned = {canonicalize_name(r.split("==", 1)[0].strip()) for r in requirements if "==" in r}
    date_pinned = before is not None and index is not None
    last_good: list[WheelEntry] | None = None
    for _ in range(max_rounds):
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        try:
            _pip_download(py, requirements, constraints, dest, index_url)
        except ToolError:
            if not constraints:
                raise
            # The dated set conflicts with a requirement; fall back to the undated one.
            constraints = {}
            date_pinned = False
            shutil.rmtree(dest)
            dest.mkdir(parents=True)
            _pip_download(py, requirements, constraints, dest, index_url)
            last_good = _scan(dest)
            break
        last_good = _scan(dest)
        if before is None or index is None:
            break
        changed = False
        for e in last_good:
            cname = canonicalize_name(e.name)
            if cname in pinned or cname in constraints:
                continue
            newest = latest_before(index, e.name, before)
            if newest is not None and newest < Version(e.version):
                constraints[cname] = newest
                changed = True
        if not changed:
            break
    assert last_good is not None
    return Wheelhouse(
        directory=dest,
        entries=tuple(last_good),
        requested=tuple(requirements),
        date_pinned=date_pinned,
    )


def install_wheelhouse(
    wheelhouse: Wheelhouse, site_dir: Path, scripts_dir: Path | None = None
) -> None:
    """Unpack every wheel of ``wheelhouse`` into ``site_dir`` (a site-packages folder).

    The wheels are re-hashed first: the container gets exactly the bytes the
    resolution recorded. The importable parts (purelib/platlib) go to
    ``site_dir``; with ``scripts_dir``, executables a wheel ships in its
    ``scripts`` scheme go there (uv_build's backend is such a binary, found
    on PATH), except ``#!python`` scripts, which would need an installer to
    rewrite them. Data files are not needed to call a build backend.
    """
    site_dir.mkdir(parents=True, exist_ok=True)
    limits = UnpackLimits(max_total_bytes=256 * 1024 * 1024)
    for e in wheelhouse.entries:
        path = wheelhouse.directory / e.filename
        if _sha256_path(path) != e.sha256:
            raise InputError(f"{path}: changed after resolution (sha256 mismatch)")
        _unpack_wheel(path, site_dir, limits, scripts_dir)


def _unpack_wheel(
    path: Path, site_dir: Path, limits: UnpackLimits, scripts_dir: Path | None
) -> None:
    with tempfile.TemporaryDirectory(dir=site_dir.parent) as tmp:
        root = Path(tmp) / "w"
        unpack_zip(path, root, limits)
        for child in sorted(root.iterdir()):
            if child.name.endswith(".data") and child.is_dir():
                for scheme in ("purelib", "platlib"):
                    sub = child / scheme
                    if sub.is_dir():
                        _merge(sub, site_dir)
                scripts = child / "scripts"
                if scripts_dir is not None and scripts.is_dir():
                    scripts_dir.mkdir(parents=True, exist_ok=True)
                    for script in sorted(scripts.iterdir()):
                        with script.open("rb") as f:
                            if not script.is_file() or f.read(8) == b"#!python":
                                continue
                        _merge_one(script, scripts_dir / script.name)
                continue
            _merge_one(child, site_dir / child.name)


def _merge(src: Path, dst: Path) -> None:
    for child in sorted(src.iterdir()):
        _merge_one(child, dst / child.name)


def _merge_one(src: Path, dst: Path) -> None:
    if src.is_dir() and dst.is_dir():
        _merge(src, dst)
    else:
        if dst.exists():
            raise InputError(f"two build requirements both provide {dst.name}")
        shutil.move(str(src), str(dst))


def wheel_names(entries: Iterable[WheelEntry]) -> dict[str, str]:
    """``{canonical name: version}`` of a wheelhouse."""
    return {canonicalize_name(e.name): e.version for e in entries}
