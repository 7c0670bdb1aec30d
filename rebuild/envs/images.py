"""Build, lock and check environment images against their lock files.

Decides whether an image matches its lock (the installed Debian package set
and the definition's files, exactly) and builds images that do: the base from
Debian packages with debootstrap and ``docker import``, builders on top with
``apt-get install NAME=VERSION`` for every locked package. It never builds
from an unpinned package list except when asked to (re)lock, and never leaves
an image tagged with a lock digest it does not match.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors
import requests

from rebuild.envs import _docker
from rebuild.envs.definition import (
    IMAGE_REPOSITORY_PREFIX,
    LABEL_LOCK_DIGEST,
    LABEL_NAME,
    Definition,
    Lock,
    LockedPackage,
    load_definition,
    load_lock,
    make_lock,
)
from rebuild.envs.mirror import Mirrors, render_sources
from rebuild.errors import ToolError, UsageError
from rebuild.fsio import atomic_write

Progress = Callable[[str], None]

CHECK_TIMEOUT_S = 120
DEBOOTSTRAP_TIMEOUT_S = 1800
BUILD_LABEL = "org.rebuild.env.helper"
_FILES_MARK = "--rebuild-files--"
_ARCH_MARK = "--rebuild-arch--"
_MISSING_VERSION_RE = re.compile(r"Version '([^']+)' for '([^']+)' was not found")


class DriftError(ToolError):
    """An environment image does not match its lock; builds refuse to use it."""


def _noop(_: str) -> None:
    return None


# ----------------------------------------------------------------- check cache


def cache_dir() -> Path:
    env = os.environ.get("REBUILD_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "rebuild"


_checked: set[tuple[str, str]] = set()
_checked_lock = threading.Lock()


def _cache_file(image_id: str) -> Path:
    return cache_dir() / "env-checks" / image_id.removeprefix("sha256:")


def is_check_cached(image_id: str, lock_digest: str) -> bool:
    """Was this image (content-addressed id) proven to match this lock before?

    An image id is the digest of the image's configuration, which names every
    layer by content, so a check result for an id never goes stale.
    """
    with _checked_lock:
        if (image_id, lock_digest) in _checked:
            return True
    try:
        recorded = _cache_file(image_id).read_text(encoding="utf-8").split()
    except OSError:
        return False
    if lock_digest in recorded:
        with _checked_lock:
            _checked.add((image_id, lock_digest))
        return True
    return False


def record_check(image_id: str, lock_digest: str) -> None:
    with _checked_lock:
        _checked.add((image_id, lock_digest))
    path = _cache_file(image_id)
    with contextlib.suppress(OSError, ToolError):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, (lock_digest + "\n").encode())


# ----------------------------------------------------------------- inspection


@dataclass(frozen=True)
class Drift:
    """How an image's contents differ from its lock."""

    missing: tuple[str, ...] = ()  # locked, not installed
    extra: tuple[str, ...] = ()  # installed, not locked
    changed: tuple[str, ...] = ()  # installed at another version
    files: tuple[str, ...] = ()  # definition files missing or different
    architecture: str | None = None  # set when the architecture differs

    @property
    def empty(self) -> bool:
        return not (self.missing or self.extra or self.changed or self.files or self.architecture)

    def lines(self) -> list[str]:
        out = [f"missing {m}" for m in self.missing]
        out += [f"extra {e}" for e in self.extra]
        out += [f"changed {c}" for c in self.changed]
        out += [f"file {f}" for f in self.files]
        if self.architecture:
            out.append(f"architecture {self.architecture}")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "missing": list(self.missing),
            "extra": list(self.extra),
            "changed": list(self.changed),
            "files": list(self.files),
            "architecture": self.architecture,
        }


@dataclass(frozen=True)
class ImageContents:
    architecture: str
    packages: tuple[LockedPackage, ...]
    file_digests: dict[str, str | None] = field(default_factory=dict)


def run_capture(image: str, argv: list[str], *, timeout_s: float = CHECK_TIMEOUT_S) -> bytes:
    """Run a short command in ``image`` with no network and return its stdout.

    The container is removed whatever happens (error, timeout, Ctrl-C).
    """
    c = _docker.client()
    container = None
    try:
        with _docker.engine_errors(f"running {argv[0]} in {image}"):
            container = c.containers.create(
                image,
                argv,
                network_mode="none",
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                read_only=True,
                user="65534:65534",
                labels={BUILD_LABEL: "check"},
            )
            container.start()
            try:
                status = container.wait(timeout=timeout_s)
            except requests.RequestException as e:
                raise ToolError(f"{argv[0]} in {image} did not finish in {timeout_s} s") from e
            stdout: bytes = container.logs(stdout=True, stderr=False)
            if status.get("StatusCode") != 0:
                err: bytes = container.logs(stdout=False, stderr=True)
                raise ToolError(
                    f"{argv[0]} in {image} failed with status {status.get('StatusCode')}: "
                    f"{err.decode('utf-8', 'replace').strip()[-500:]}"
                )
            return stdout
    finally:
        if container is not None:
            with contextlib.suppress(Exception):
                container.remove(force=True)


def inspect_contents(image: str, file_targets: list[str]) -> ImageContents:
    """The installed Debian packages (dpkg-query) and file digests inside ``image``."""
    script = (
        "set -e; dpkg --print-architecture; "
        f"echo {_ARCH_MARK}; "
        "dpkg-query -W -f='${db:Status-Abbrev}\\t${Package}\\t${Version}\\t${Architecture}\\n'; "
        f'echo {_FILES_MARK}; for f in "$@"; do sha256sum "$f" 2>/dev/null || true; done'
    )
    raw = run_capture(image, ["sh", "-c", script, "sh", *file_targets])
    text = raw.decode("utf-8", "replace")
    arch_part, _, rest = text.partition(f"{_ARCH_MARK}\n")
    pkg_part, _, files_part = rest.partition(f"{_FILES_MARK}\n")
    packages: list[LockedPackage] = []
    for line in pkg_part.splitlines():
        parts = line.split("\t")
        if len(parts) != 4:
            continue
        status, name, version, arch = parts
        # Only fully installed packages count; 'rc' (removed, config left) does not.
        if status.strip() == "ii":
            packages.append(LockedPackage(name, version, arch))
    digests: dict[str, str | None] = dict.fromkeys(file_targets)
    for line in files_part.splitlines():
        digest, _, path = line.partition("  ")
        if path in digests:
            digests[path] = digest
    return ImageContents(arch_part.strip(), tuple(sorted(packages)), digests)


def compare(lock: Lock, contents: ImageContents) -> Drift:
    want = lock.package_map()
    have = {(p.name, p.architecture): p.version for p in contents.packages}
    missing = sorted(f"{n}={v} ({a})" for (n, a), v in want.items() if (n, a) not in have)
    extra = sorted(f"{n}={v} ({a})" for (n, a), v in have.items() if (n, a) not in want)
    changed = sorted(
        f"{n} ({a}): locked {want[(n, a)]}, installed {have[(n, a)]}"
        for (n, a) in want.keys() & have.keys()
        if want[(n, a)] != have[(n, a)]
    )
    files = sorted(
        f"{f.target}: locked sha256 {f.sha256[:12]}…, image has "
        f"{(contents.file_digests.get(f.target) or 'none')[:12]}"
        for f in lock.files
        if contents.file_digests.get(f.target) != f.sha256
    )
    arch = None
    if contents.architecture != lock.architecture:
        arch = f"locked {lock.architecture}, image is {contents.architecture}"
    return Drift(tuple(missing), tuple(extra), tuple(changed), tuple(files), arch)


@dataclass(frozen=True)
class ImageRef:
    id: str
    tag: str
    labels: dict[str, str]


def find_image(lock: Lock) -> ImageRef | None:
    """The image tagged for ``lock`` and labelled with its full digest, if any."""
    c = _docker.client()
    with _docker.engine_errors(f"looking up {lock.image_tag}"):
        try:
            image = c.images.get(lock.image_tag)
        except docker.errors.ImageNotFound:
            return None
    labels = dict(image.labels or {})
    if labels.get(LABEL_LOCK_DIGEST) != lock.digest:
        return None
    return ImageRef(image.id, lock.image_tag, labels)


@dataclass(frozen=True)
class CheckReport:
    name: str
    lock_digest: str
    image: ImageRef | None
    drift: Drift | None  # None when there is no image to check

    @property
    def ok(self) -> bool:
        return self.image is not None and self.drift is not None and self.drift.empty


def check_environment(definition: Definition, *, use_cache: bool = False) -> CheckReport:
    """Prove the environment's image installs exactly the lock's package set."""
    lock = load_lock(definition)
    image = find_image(lock)
    if image is None:
        return CheckReport(definition.name, lock.digest, None, None)
    if use_cache and is_check_cached(image.id, lock.digest):
        return CheckReport(definition.name, lock.digest, image, Drift())
    contents = inspect_contents(image.id, [f.target for f in lock.files])
    drift = compare(lock, contents)
    if drift.empty:
        record_check(image.id, lock.digest)
    return CheckReport(definition.name, lock.digest, image, drift)


_verified: dict[str, ImageRef] = {}


def verified_image(
    name: str, containers_dir: Path | None = None, *, refresh: bool = False
) -> tuple[Lock, ImageRef]:
    """The image of environment ``name``, proven to match its lock (check cached by id).

    Within a process the verified image is remembered per lock digest, so a
    run costs no engine call here: an image id proven to match a lock keeps
    matching it (ids are content digests), even if the tag moves meanwhile.
    ``refresh`` looks the image up again (e.g. after it was deleted).
    Raises DriftError for a drifted image and ToolError when none is built.
    """
    definition = load_definition(name, containers_dir)
    lock = load_lock(definition)
    with _checked_lock:
        remembered = None if refresh else _verified.get(lock.digest)
    if remembered is not None:
        return lock, remembered
    image = find_image(lock)
    if image is None:
        raise ToolError(
            f"environment {name!r} is not built (no image {lock.image_tag} labelled "
            f"{lock.digest}); run: rebuild env build {name}"
        )
    if not is_check_cached(image.id, lock.digest):
        drift = compare(lock, inspect_contents(image.id, [f.target for f in lock.files]))
        if not drift.empty:
            raise DriftError(
                f"environment {name!r}: image {image.id[:19]} does not match its lock "
                f"{lock.digest[:19]}; refusing to build with it: " + "; ".join(drift.lines()[:10])
            )
        record_check(image.id, lock.digest)
    with _checked_lock:
        _verified[lock.digest] = image
    return lock, image


# ----------------------------------------------------------------- building


@dataclass(frozen=True)
class BuildOutcome:
    name: str
    lock_digest: str
    image_id: str
    tag: str
    built: bool  # False: an image for this lock existed, nothing was done
    seconds: float


@contextlib.contextmanager
def _workdir(prefix: str) -> Iterator[Path]:
    # /var/tmp, not /tmp: a root file system is ~200 MB and /tmp may be a small tmpfs.
    base = os.environ.get("REBUILD_WORK_DIR") or "/var/tmp"  # noqa: S108
    d = Path(tempfile.mkdtemp(prefix=prefix, dir=base if Path(base).is_dir() else None))
    try:
        yield d
    finally:
        # debootstrap mounts /proc and /sys (and may bind /dev) inside its
        # target; interrupted, it can leave them mounted. Never delete through
        # a mount point: unmount first, and leave the folder if that fails.
        if _unmount_under(d):
            shutil.rmtree(d, ignore_errors=True)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    try:
        lines = Path("/proc/self/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    points = []
    for line in lines:
        fields = line.split()
        if len(fields) > 1:
            point = fields[1].replace("\\040", " ")
            if point.startswith(prefix):
                points.append(point)
    return points


def _unmount_under(path: Path) -> bool:
    """Unmount everything mounted below ``path``; True when nothing is left mounted."""
    for point in sorted(_mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    return not _mounts_under(path)


def _debootstrap_rootfs(
    definition: Definition, mirrors: Mirrors, tag: str, progress: Progress
) -> str:
    """debootstrap the suite into a folder and import it as image ``tag``; returns its id."""
    if shutil.which("debootstrap") is None:
        raise ToolError("debootstrap is not installed; run scripts/setup")
    if os.geteuid() != 0:
        raise ToolError("building the base environment runs debootstrap, which needs root")
    assert definition.suite is not None and definition.apt_sources_template is not None
    with _workdir("rebuild-rootfs-") as work:
        root = work / "root"
        progress(f"debootstrap {definition.suite} ({definition.variant}) from {mirrors.archive}")
        argv = [
            "debootstrap",
            f"--variant={definition.variant}",
            definition.suite,
            str(root),
            mirrors.archive,
        ]
        try:
            proc = subprocess.run(
                argv, capture_output=True, timeout=DEBOOTSTRAP_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            raise ToolError(f"debootstrap did not finish in {DEBOOTSTRAP_TIMEOUT_S} s") from None
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).decode("utf-8", "replace").strip()[-1500:]
            raise ToolError(f"debootstrap failed (exit {proc.returncode}): {tail}")
        sources = render_sources(definition.apt_sources_template, definition.suite, mirrors)
        (root / "etc/apt/sources.list").unlink(missing_ok=True)
        (root / "etc/apt/sources.list.d").mkdir(parents=True, exist_ok=True)
        (root / "etc/apt/sources.list.d/debian.sources").write_text(sources, encoding="utf-8")
        for stale in (root / "var/cache/apt/archives").glob("*.deb"):
            stale.unlink()
        progress("importing the root file system as an image")
        tarball = work / "rootfs.tar"
        tar = subprocess.run(
            ["tar", "-C", str(root), "--numeric-owner", "-cf", str(tarball), "."],
            capture_output=True,
            check=False,
        )
        if tar.returncode != 0:
            raise ToolError(f"tar of the root file system failed: {tar.stderr[-500:]!r}")
        repo, _, t = tag.rpartition(":")
        c = _docker.client()
        with _docker.engine_errors("docker import of the root file system"):
            c.api.import_image_from_file(str(tarball), repository=repo, tag=t)
            image_id: str = c.images.get(tag).id
        return image_id


def _docker_build(
    context: Path,
    dockerfile: str,
    tag: str,
    labels: dict[str, str],
    progress: Progress,
    *,
    nocache: bool,
) -> tuple[str, list[str]]:
    """Build ``dockerfile`` in ``context``; returns (image id, log lines)."""
    (context / "Dockerfile").write_text(dockerfile, encoding="utf-8")
    c = _docker.client()
    log: list[str] = []
    image_id = None
    error = None
    with _docker.engine_errors(f"docker build of {tag}"):
        for chunk in c.api.build(
            path=str(context),
            tag=tag,
            labels=labels,
            rm=True,
            forcerm=True,
            pull=False,
            nocache=nocache,
            decode=True,
        ):
            if "stream" in chunk:
                text = str(chunk["stream"])
                for line in text.splitlines():
                    if line.strip():
                        log.append(line)
                        progress(line.strip()[:200])
            if "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
                image_id = str(chunk["aux"]["ID"])
            if "error" in chunk:
                error = str(chunk["error"])
                log.append(error)
    if error is not None or image_id is None:
        missing = _MISSING_VERSION_RE.findall("\n".join(log))
        if missing:
            pins = ", ".join(f"{p}={v}" for v, p in missing[:10])
            raise ToolError(
                f"the Debian mirror no longer has pinned versions ({pins}); the lock is "
                "older than the archive. Re-lock with `rebuild env lock NAME` (a new "
                "identity), or point --mirror at a snapshot of the archive from the lock's date"
            )
        tail = "\n".join(log[-15:])
        raise ToolError(f"docker build of {tag} failed: {error}\n{tail}")
    return image_id, log


_APT_CLEAN = "apt-get clean; rm -rf /var/lib/apt/lists/*"


def _dockerfile(
    from_ref: str, definition: Definition, install: list[str], *, upgrade: bool, pinned: bool
) -> str:
    lines = [f"FROM {from_ref}"]
    run = "set -eu; export DEBIAN_FRONTEND=noninteractive; apt-get update -q"
    if pinned:
        # Installing exact versions, the Release file's freshness (Valid-Until)
        # protects nothing: signatures and hashes are still checked, and this
        # lets a snapshot archive of the lock's date serve an old lock.
        run = run.replace("apt-get update", "apt-get -o Acquire::Check-Valid-Until=false update")
    if upgrade:
        run += "; apt-get upgrade -y -q"
    if install:
        run += "; apt-get install -y -q --no-install-recommends --allow-downgrades " + " ".join(
            install
        )
    run += "; " + _APT_CLEAN
    lines.append(f"RUN {run}")
    # Files after the packages, so a package's own conffile cannot overwrite them.
    lines += [f"COPY files/{i} {f.target}" for i, f in enumerate(definition.files)]
    return "\n".join(lines) + "\n"


def _prepare_context(work: Path, definition: Definition) -> None:
    (work / "files").mkdir()
    for i, f in enumerate(definition.files):
        shutil.copyfile(f.source, work / "files" / str(i))
        os.chmod(work / "files" / str(i), 0o644)


def _from_ref(
    definition: Definition, mirrors_for: Callable[[], Mirrors], tag: str, progress: Progress
) -> tuple[str, Lock | None]:
    """The image a definition builds FROM, and the parent's lock (builders)."""
    if definition.parent is not None:
        parent_def = load_definition(definition.parent, definition.directory.parent)
        parent_lock = load_lock(parent_def)
        parent_image = find_image(parent_lock)
        if parent_image is None:
            raise ToolError(
                f"parent environment {definition.parent!r} is not built; "
                f"run: rebuild env build {definition.parent}"
            )
        return parent_image.id, parent_lock
    if definition.is_debootstrap:
        return _debootstrap_rootfs(definition, mirrors_for(), tag, progress), None
    assert definition.base is not None
    return definition.base, None


def _untag(tag: str) -> None:
    c = _docker.client()
    with contextlib.suppress(Exception):
        c.images.remove(tag, noprune=True)


def build_environment(
    definition: Definition,
    mirrors_for: Callable[[], Mirrors],
    progress: Progress = _noop,
    *,
    force: bool = False,
) -> BuildOutcome:
    """Build the image for the definition's lock; a no-op when one already exists."""
    started = time.monotonic()
    lock = load_lock(definition)
    existing = find_image(lock)
    if existing is not None and not force:
        return BuildOutcome(definition.name, lock.digest, existing.id, lock.image_tag, False, 0.0)
    if definition.parent is not None:
        parent_lock = load_lock(load_definition(definition.parent, definition.directory.parent))
        if lock.parent_lock_digest != parent_lock.digest:
            raise UsageError(
                f"{definition.lock_path}: made on parent {definition.parent} lock "
                f"{lock.parent_lock_digest}, but that parent is now {parent_lock.digest}; "
                f"re-lock with: rebuild env lock {definition.name}"
            )
    rootfs_tag = f"{IMAGE_REPOSITORY_PREFIX}{definition.name}-rootfs:{lock.short_digest}"
    try:
        from_ref, parent_lock_or_none = _from_ref(definition, mirrors_for, rootfs_tag, progress)
        inherited = set(parent_lock_or_none.packages) if parent_lock_or_none else set()
        pins = [p.pin() for p in lock.packages if p not in inherited]
        labels = {LABEL_NAME: definition.name, LABEL_LOCK_DIGEST: lock.digest}
        with _workdir("rebuild-ctx-") as ctx:
            _prepare_context(ctx, definition)
            progress(f"installing {len(pins)} pinned packages")
            image_id, _ = _docker_build(
                ctx,
                _dockerfile(from_ref, definition, pins, upgrade=False, pinned=True),
                lock.image_tag,
                labels,
                progress,
                nocache=force,
            )
    finally:
        _untag(rootfs_tag)
    progress("checking the image against the lock")
    drift = compare(lock, inspect_contents(image_id, [f.target for f in lock.files]))
    if not drift.empty:
        _untag(lock.image_tag)
        raise DriftError(
            f"the image built for {definition.name} does not match its lock; re-lock with "
            f"`rebuild env lock {definition.name}`: " + "; ".join(drift.lines()[:15])
        )
    record_check(image_id, lock.digest)
    if existing is not None and existing.id != image_id:
        # --force replaced it; drop the old copy unless something still uses it.
        with contextlib.suppress(Exception):
            _docker.client().images.remove(existing.id)
    return BuildOutcome(
        definition.name, lock.digest, image_id, lock.image_tag, True, time.monotonic() - started
    )


def lock_environment(
    definition: Definition,
    mirrors_for: Callable[[], Mirrors],
    progress: Progress = _noop,
) -> tuple[Lock, BuildOutcome]:
    """Build the definition fresh from package names and write its new lock file."""
    started = time.monotonic()
    rootfs_tag = f"{IMAGE_REPOSITORY_PREFIX}{definition.name}-rootfs:unlocked"
    unlocked_tag = f"{IMAGE_REPOSITORY_PREFIX}{definition.name}:unlocked"
    try:
        from_ref, parent_lock = _from_ref(definition, mirrors_for, rootfs_tag, progress)
        with _workdir("rebuild-ctx-") as ctx:
            _prepare_context(ctx, definition)
            progress(f"installing {', '.join(definition.packages) or 'updates'} (unpinned)")
            image_id, _ = _docker_build(
                ctx,
                _dockerfile(
                    from_ref,
                    definition,
                    list(definition.packages),
                    upgrade=parent_lock is None,
                    pinned=False,
                ),
                unlocked_tag,
                {LABEL_NAME: definition.name},
                progress,
                nocache=True,
            )
        contents = inspect_contents(image_id, [f.target for f in definition.files])
        for f in definition.files:
            if contents.file_digests.get(f.target) != f.sha256:
                raise ToolError(f"{f.target} did not land in the image as defined")
        lock = make_lock(definition, list(contents.packages), contents.architecture, parent_lock)
        labels = {LABEL_NAME: definition.name, LABEL_LOCK_DIGEST: lock.digest}
        with _workdir("rebuild-ctx-") as ctx:
            progress(f"labelling the image with lock {lock.digest}")
            labelled_id, _ = _docker_build(
                ctx, f"FROM {image_id}\n", lock.image_tag, labels, progress, nocache=False
            )
    finally:
        _untag(rootfs_tag)
        _untag(unlocked_tag)
    atomic_write(definition.lock_path, lock.canonical_bytes())
    record_check(labelled_id, lock.digest)
    return lock, BuildOutcome(
        definition.name, lock.digest, labelled_id, lock.image_tag, True, time.monotonic() - started
    )


def image_summary(lock: Lock) -> dict[str, Any]:
    image = find_image(lock)
    return {"tag": lock.image_tag, "present": image is not None, "id": image.id if image else None}


__all__ = [
    "BuildOutcome",
    "CheckReport",
    "Drift",
    "DriftError",
    "ImageRef",
    "build_environment",
    "check_environment",
    "find_image",
    "lock_environment",
    "verified_image",
]
