"""Build, lock and check environment images against their lock files.

Decides whether an image matches its lock (the installed Debian package set
and the definition's files, exactly) and builds images that do, from the
lock's ``.deb`` files only: each is taken from the package store (fetched
into it first when missing), hashed against the lock, then installed with no
network: the base by debootstrap from a local repository of those files and
``docker import``, builders on top by ``apt-get install`` of the files. It
never builds from an unpinned package list except when asked to (re)lock,
and never leaves an image tagged with a lock digest it does not match.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors
import requests

from rebuild.envs._docker import client as docker_client
from rebuild.envs._docker import engine_errors
from rebuild.envs.deb822 import parse_stanzas
from rebuild.envs.definition import (
    IMAGE_REPOSITORY_PREFIX,
    LABEL_LOCK_DIGEST,
    LABEL_NAME,
    Definition,
    InstalledPackage,
    Lock,
    LockedPackage,
    load_definition,
    load_lock,
    make_lock,
    read_pinned_versions,
)
from rebuild.envs.drift import (
    CONTENTS_SCRIPT,
    Drift,
    ImageContents,
    IndexRecords,
    check_parent_lock,
    check_relocked_contents,
    drift_from_lock,
    own_packages,
    parse_contents,
    parse_index_records,
    pin_packages,
)
from rebuild.envs.fetch import FetchReport, ensure_in_store
from rebuild.envs.localrepo import POOL, stage, staged_name, write_repository
from rebuild.envs.mirror import Mirrors, render_sources
from rebuild.envs.store import PackageStore
from rebuild.errors import ToolError
from rebuild.fsio import atomic_write

Progress = Callable[[str], None]

CHECK_TIMEOUT_S = 120
DEBOOTSTRAP_TIMEOUT_S = 1800
INSTALL_TIMEOUT_S = 1800
INDEX_TIMEOUT_S = 600
# Where the staged .debs appear in the install container. Under /tmp, which
# the hermetic runner covers with a tmpfs, so the empty mount point Docker
# leaves in the image is never seen by a build.
_DEBS_MOUNT = "/tmp/rebuild-debs"  # noqa: S108 - a path inside the container
BUILD_LABEL = "org.rebuild.env.helper"
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


def run_capture(
    image: str,
    argv: list[str],
    *,
    timeout_s: float = CHECK_TIMEOUT_S,
    network: bool = False,
    tmpfs: dict[str, str] | None = None,
) -> bytes:
    """Run a short command in ``image`` and return its stdout.

    No network unless ``network`` (then root, for apt, with a read-only root
    file system and ``tmpfs`` the only writable places). The container is
    removed whatever happens (error, timeout, Ctrl-C).
    """
    c = docker_client()
    container = None
    try:
        with engine_errors(f"running {argv[0]} in {image}"):
            container = c.containers.create(
                image,
                argv,
                network_mode="bridge" if network else "none",
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                read_only=True,
                tmpfs=tmpfs or {},
                user="0:0" if network else "65534:65534",
                labels={BUILD_LABEL: "index" if network else "check"},
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
    raw = run_capture(image, ["sh", "-c", CONTENTS_SCRIPT, "sh", *file_targets])
    return parse_contents(raw.decode("utf-8", "replace"), file_targets)


def _check_against_lock(image_id: str, lock: Lock) -> Drift:
    """How the image differs from ``lock``; a match is recorded in the check cache."""
    drift = drift_from_lock(lock, inspect_contents(image_id, [f.target for f in lock.files]))
    if drift.empty:
        record_check(image_id, lock.digest)
    return drift


@dataclass(frozen=True)
class ImageRef:
    id: str
    tag: str
    labels: dict[str, str]


def find_image(lock: Lock) -> ImageRef | None:
    """The image tagged for ``lock`` and labelled with its full digest, if any."""
    c = docker_client()
    with engine_errors(f"looking up {lock.image_tag}"):
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
    return CheckReport(definition.name, lock.digest, image, _check_against_lock(image.id, lock))


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
        drift = _check_against_lock(image.id, lock)
        if not drift.empty:
            raise DriftError(
                f"environment {name!r}: image {image.id[:19]} does not match its lock "
                f"{lock.digest[:19]}; refusing to build with it: " + "; ".join(drift.lines()[:10])
            )
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
    packages: FetchReport | None = None  # what the package store had and what was fetched


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
    definition: Definition,
    source: str,
    mirrors: Mirrors,
    tag: str,
    progress: Progress,
    *,
    from_local_repository: bool = False,
) -> tuple[str, set[InstalledPackage]]:
    """debootstrap the suite from ``source`` and import it as image ``tag``.

    Returns the image id and the packages debootstrap installed. The image's
    apt sources name ``mirrors`` (for later locks), whatever ``source`` was.
    From the local repository of lock-verified files the Release signature
    check is off: that repository was written here, from files whose sha256
    the lock pins, and debootstrap still checks each file against its index.
    """
    if shutil.which("debootstrap") is None:
        raise ToolError("debootstrap is not installed; run scripts/setup")
    if os.geteuid() != 0:
        raise ToolError("building the base environment runs debootstrap, which needs root")
    assert definition.suite is not None and definition.apt_sources_template is not None
    with _workdir("rebuild-rootfs-") as work:
        root = work / "root"
        origin = "the package store" if from_local_repository else source
        progress(f"debootstrap {definition.suite} ({definition.variant}) from {origin}")
        argv = ["debootstrap", f"--variant={definition.variant}"]
        if from_local_repository:
            argv.append("--no-check-gpg")
        argv += [definition.suite, str(root), source]
        try:
            proc = subprocess.run(
                argv, capture_output=True, timeout=DEBOOTSTRAP_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            raise ToolError(f"debootstrap did not finish in {DEBOOTSTRAP_TIMEOUT_S} s") from None
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).decode("utf-8", "replace").strip()[-1500:]
            raise ToolError(f"debootstrap failed (exit {proc.returncode}): {tail}")
        installed = _dpkg_status(root / "var/lib/dpkg/status")
        sources = render_sources(definition.apt_sources_template, definition.suite, mirrors)
        (root / "etc/apt/sources.list").unlink(missing_ok=True)
        (root / "etc/apt/sources.list.d").mkdir(parents=True, exist_ok=True)
        (root / "etc/apt/sources.list.d/debian.sources").write_text(sources, encoding="utf-8")
        # The downloaded files and the indices of wherever debootstrap read
        # from are not part of the environment.
        for stale in (root / "var/cache/apt/archives").glob("*.deb"):
            stale.unlink()
        for stale in (root / "var/lib/apt/lists").glob("*"):
            if stale.is_file() and stale.name != "lock":
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
        c = docker_client()
        with engine_errors("docker import of the root file system"):
            c.api.import_image_from_file(str(tarball), repository=repo, tag=t)
            image_id: str = c.images.get(tag).id
        return image_id, installed


def _dpkg_status(path: Path) -> set[InstalledPackage]:
    """The fully installed packages of a dpkg status file (read on the host)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise ToolError(f"cannot read {path}: {e}") from None
    return {
        InstalledPackage(f["Package"], f["Version"], f["Architecture"])
        for f in parse_stanzas(text)
        if f.get("Status") == "install ok installed"
        and {"Package", "Version", "Architecture"} <= f.keys()
    }


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
    c = docker_client()
    log: list[str] = []
    image_id = None
    error = None
    with engine_errors(f"docker build of {tag}"):
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
    """The Dockerfile of a lock: packages from the mirror by apt, then the files."""
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
    return "\n".join(lines) + "\n" + _files_dockerfile(definition)


def _files_dockerfile(definition: Definition) -> str:
    # Files after the packages, so a package's own conffile cannot overwrite them.
    return "".join(f"COPY files/{i} {f.target}\n" for i, f in enumerate(definition.files))


def _prepare_context(work: Path, definition: Definition) -> None:
    (work / "files").mkdir()
    for i, f in enumerate(definition.files):
        shutil.copyfile(f.source, work / "files" / str(i))
        os.chmod(work / "files" / str(i), 0o644)


def _parent_image(definition: Definition) -> tuple[str, Lock]:
    """A builder's parent image id and the parent's lock."""
    assert definition.parent is not None
    parent_lock = load_lock(load_definition(definition.parent, definition.directory.parent))
    parent_image = find_image(parent_lock)
    if parent_image is None:
        raise ToolError(
            f"parent environment {definition.parent!r} is not built; "
            f"run: rebuild env build {definition.parent}"
        )
    return parent_image.id, parent_lock


def _untag(tag: str) -> None:
    c = docker_client()
    with contextlib.suppress(Exception):
        c.images.remove(tag, noprune=True)


def _install_debs(from_ref: str, debs: Path, count: int, progress: Progress) -> str:
    """Install the staged ``.deb`` files on ``from_ref`` with no network; the new image's id.

    ``apt-get install`` of files (not of names) orders and configures them
    like any install, but can only use these exact files: there is no
    index to pick another version from, and no network to fetch one.
    """
    script = (
        "set -eu; export DEBIAN_FRONTEND=noninteractive; "
        "apt-get install -y -q --no-install-recommends --allow-downgrades "
        f"-o Dpkg::Use-Pty=0 {_DEBS_MOUNT}/*.deb; {_APT_CLEAN}"
    )
    c = docker_client()
    container = None
    name = f"rebuild-env-install-{secrets.token_hex(6)}"
    progress(f"installing {count} pinned packages from the package store (no network)")
    try:
        with engine_errors(f"installing packages on {from_ref[:19]}"):
            container = c.containers.create(
                from_ref,
                ["sh", "-c", script],
                network_mode="none",
                volumes={str(debs): {"bind": _DEBS_MOUNT, "mode": "ro"}},
                name=name,
            )
            container.start()
            try:
                status = container.wait(timeout=INSTALL_TIMEOUT_S)
            except requests.RequestException as e:
                raise ToolError(
                    f"installing packages did not finish in {INSTALL_TIMEOUT_S} s"
                ) from e
            if status.get("StatusCode") != 0:
                log: bytes = container.logs(stdout=True, stderr=True)
                tail = log.decode("utf-8", "replace").strip()[-1500:]
                raise ToolError(f"installing the pinned packages failed: {tail}")
            # The committed image would otherwise keep this script as its command.
            image = container.commit(changes=['CMD ["bash"]'])
            return str(image.id)
    finally:
        # By name too: Ctrl-C may land before the SDK returned the handle.
        with contextlib.suppress(Exception):
            (container or c.containers.get(name)).remove(force=True)


def build_environment(
    definition: Definition,
    mirrors_for: Callable[[], Mirrors],
    progress: Progress = _noop,
    *,
    force: bool = False,
    store: PackageStore | None = None,
) -> BuildOutcome:
    """Build the image for the definition's lock; a no-op when one already exists.

    Steps: (1) the lock, and for a builder its parent's, must be consistent;
    (2) every package the build installs must be in the store, fetched from
    the mirror when missing (pinned sha256 and size checked); (3) verified
    copies are staged; (4) the base is debootstrapped from them, builders
    install them on the parent's image, both with no network; (5) the
    definition's files and labels are added; (6) the image is checked
    against the lock before it keeps its tag.
    """
    started = time.monotonic()
    lock = load_lock(definition)
    existing = find_image(lock)
    if existing is not None and not force:
        return BuildOutcome(definition.name, lock.digest, existing.id, lock.image_tag, False, 0.0)
    store = store or PackageStore()
    # Step 1: a consistent lock.
    parent_lock = None
    if definition.parent is not None:
        parent_lock = load_lock(load_definition(definition.parent, definition.directory.parent))
        check_parent_lock(definition, lock, parent_lock)
    own = own_packages(lock, parent_lock)
    # Step 2: every package in the store.
    fetched = ensure_in_store(own, store, mirrors_for, progress)
    rootfs_tag = f"{IMAGE_REPOSITORY_PREFIX}{definition.name}-rootfs:{lock.short_digest}"
    labels = {LABEL_NAME: definition.name, LABEL_LOCK_DIGEST: lock.digest}
    try:
        # Steps 3 and 4.
        from_ref = _install_locked(
            definition,
            lock,
            own,
            store=store,
            mirrors_for=mirrors_for,
            rootfs_tag=rootfs_tag,
            progress=progress,
        )
        # Step 5: the definition's files and the labels.
        with _workdir("rebuild-ctx-") as ctx:
            _prepare_context(ctx, definition)
            image_id, _ = _docker_build(
                ctx,
                f"FROM {from_ref}\n{_files_dockerfile(definition)}",
                lock.image_tag,
                labels,
                progress,
                nocache=force,
            )
    finally:
        _untag(rootfs_tag)
    # Step 6: the image against the lock.
    progress("checking the image against the lock")
    drift = _check_against_lock(image_id, lock)
    if not drift.empty:
        _untag(lock.image_tag)
        raise DriftError(
            f"the image built for {definition.name} does not match its lock; re-lock with "
            f"`rebuild env lock {definition.name}`: " + "; ".join(drift.lines()[:15])
        )
    if existing is not None and existing.id != image_id:
        # --force replaced it; drop the old copy unless something still uses it.
        with contextlib.suppress(Exception):
            docker_client().images.remove(existing.id)
    elapsed = time.monotonic() - started
    return BuildOutcome(
        definition.name, lock.digest, image_id, lock.image_tag, True, elapsed, fetched
    )


def _install_locked(
    definition: Definition,
    lock: Lock,
    own: list[LockedPackage],
    *,
    store: PackageStore,
    mirrors_for: Callable[[], Mirrors],
    rootfs_tag: str,
    progress: Progress,
) -> str:
    """Stage the verified ``.deb`` files and install them with no network; the image made.

    The base is debootstrapped from a local repository of them (tagged
    ``rootfs_tag``); a builder installs them on its parent's image.
    """
    with _workdir("rebuild-debs-") as repo:
        # Step 3: verified copies.
        progress(f"staging {len(own)} packages from the package store")
        stage(own, store, repo)
        # Step 4: install them, with no network.
        if definition.parent is not None:
            from_ref, _ = _parent_image(definition)
            remaining = own
        elif definition.is_debootstrap:
            assert definition.suite is not None
            write_repository(repo, own, definition.suite, lock.architecture)
            from_ref, installed = _debootstrap_rootfs(
                definition,
                repo.resolve().as_uri(),
                mirrors_for(),
                rootfs_tag,
                progress,
                from_local_repository=True,
            )
            remaining = [p for p in own if p.installed() not in installed]
        else:
            assert definition.base is not None
            from_ref, remaining = definition.base, own
        if remaining:
            names = {staged_name(p) for p in remaining}
            for f in (repo / POOL).iterdir():
                if f.name not in names:
                    f.unlink()
            from_ref = _install_debs(from_ref, repo / POOL, len(remaining), progress)
    return from_ref


def _index_records(
    image_id: str, packages: list[InstalledPackage], *, pinned: bool
) -> IndexRecords:
    """(sha256, size, filename) of each package's ``.deb``, from apt's index in ``image_id``.

    apt reads the index through the archive's signed Release file, so the
    digests recorded in a lock are the ones the archive signed. Packages
    the index does not offer are absent from the result.
    """
    if not packages:
        return {}
    update = "apt-get -q -o APT::Sandbox::User=root"
    if pinned:
        update += " -o Acquire::Check-Valid-Until=false"
    script = (
        f"set -e; {update} update >/dev/null; "
        'apt-cache -o APT::Sandbox::User=root show --no-all-versions "$@"'
    )
    raw = run_capture(
        image_id,
        ["sh", "-c", script, "sh", *(p.pin() for p in packages)],
        timeout_s=INDEX_TIMEOUT_S,
        network=True,
        tmpfs={"/var/lib/apt/lists": "", "/var/cache/apt": "", "/tmp": ""},  # noqa: S108
    )
    return parse_index_records(raw.decode("utf-8", "replace"))


def lock_environment(
    definition: Definition,
    mirrors_for: Callable[[], Mirrors],
    progress: Progress = _noop,
    *,
    store: PackageStore | None = None,
    keep_versions: bool = False,
) -> tuple[Lock, BuildOutcome]:
    """Build the definition fresh from the mirror and write its new lock file.

    Newest versions of the definition's package names, or with
    ``keep_versions`` exactly the versions the current lock pins (v1 or v2).
    Each installed package's ``.deb`` sha256, size and path come from apt's
    index, and the ``.deb`` is fetched into the package store against them.
    """
    started = time.monotonic()
    store = store or PackageStore()
    keep = read_pinned_versions(definition) if keep_versions else None
    rootfs_tag = f"{IMAGE_REPOSITORY_PREFIX}{definition.name}-rootfs:unlocked"
    unlocked_tag = f"{IMAGE_REPOSITORY_PREFIX}{definition.name}:unlocked"
    try:
        from_ref, parent_lock = _unlocked_base(definition, mirrors_for, rootfs_tag, progress)
        inherited = {p.key: p for p in parent_lock.packages} if parent_lock else {}
        if keep is None:
            install = list(definition.packages)
            progress(f"installing {', '.join(install) or 'updates'} (unpinned)")
        else:
            install = [p.pin() for p in keep if p.key not in inherited]
            progress(f"installing the {len(install)} versions the lock pins")
        with _workdir("rebuild-ctx-") as ctx:
            _prepare_context(ctx, definition)
            image_id, _ = _docker_build(
                ctx,
                _dockerfile(
                    from_ref,
                    definition,
                    install,
                    upgrade=parent_lock is None and keep is None,
                    pinned=keep is not None,
                ),
                unlocked_tag,
                {LABEL_NAME: definition.name},
                progress,
                nocache=True,
            )
        contents = inspect_contents(image_id, [f.target for f in definition.files])
        check_relocked_contents(definition, contents, keep)
        progress("reading the packages' sha256 from the apt index")
        own = [p for p in contents.packages if p.key not in inherited]
        records = _index_records(image_id, own, pinned=keep is not None)
        locked = pin_packages(definition.name, contents.packages, inherited, records)
        lock = make_lock(definition, locked, contents.architecture, parent_lock)
        fetched = ensure_in_store(own_packages(lock, parent_lock), store, mirrors_for, progress)
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
    elapsed = time.monotonic() - started
    return lock, BuildOutcome(
        definition.name, lock.digest, labelled_id, lock.image_tag, True, elapsed, fetched
    )


def _unlocked_base(
    definition: Definition, mirrors_for: Callable[[], Mirrors], rootfs_tag: str, progress: Progress
) -> tuple[str, Lock | None]:
    """The image a (re)lock installs on, and the parent's lock for a builder.

    The parent's image for a builder, a fresh debootstrap from the mirror
    (tagged ``rootfs_tag``) for a base, else the definition's base image.
    """
    if definition.parent is not None:
        return _parent_image(definition)
    if definition.is_debootstrap:
        mirrors = mirrors_for()
        from_ref, _ = _debootstrap_rootfs(
            definition, mirrors.archive, mirrors, rootfs_tag, progress
        )
        return from_ref, None
    assert definition.base is not None
    return definition.base, None


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
    "own_packages",
    "verified_image",
]
