"""The hermetic build runner: one build command in a verified environment image.

Decides nothing about artifacts; it runs a command and reports what happened.
Every build runs with no network, all capabilities dropped,
no-new-privileges, a read-only root file system (only /build, /tmp and /out
are writable), memory/pids/time limits, a fixed non-root user and hostname
and a fixed environment. It refuses an image that does not match its lock
(checked once per image id, then cached), never runs a build without a
timeout, and never leaves a container behind: the container is removed on
success, failure, timeout and Ctrl-C alike.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import docker.errors
import requests

from rebuild.engine.plan import BUILD_DIR, OUTPUT_DIR
from rebuild.envs._docker import client as docker_client
from rebuild.envs._docker import engine_errors
from rebuild.envs.definition import Lock
from rebuild.envs.images import ImageRef, verified_image
from rebuild.errors import StorageError, ToolError, UsageError
from rebuild.fsio import atomic_write

OUT_DIR: Final = OUTPUT_DIR  # the name rebuild.envs exports
SRC_DIR = "/src"
TMP_DIR = "/tmp"  # noqa: S108 - a path inside the container (a private tmpfs)
BUILD_UID = 1000
BUILD_GID = 1000
HOSTNAME = "rebuild"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RUN_LABEL = "org.rebuild.run"
# After Ctrl-C, how long to wait for the engine calls in flight to end.
INTERRUPT_GRACE_S = 30.0

MiB = 1024 * 1024
GiB = 1024 * MiB

# Set by the runner; a caller's env may not override these.
FIXED_ENV = ("PATH", "HOME", "TZ", "LC_ALL", "LANG", "SOURCE_DATE_EPOCH", "TMPDIR", "USER")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_MOUNT_RE = re.compile(r"^/[a-z][a-z0-9_-]{0,31}$")
_RESERVED_MOUNTS = {
    "/bin", "/boot", BUILD_DIR, "/dev", "/etc", "/home", "/lib", "/lib64", "/media", "/mnt",
    "/opt", OUT_DIR, "/proc", "/root", "/run", "/sbin", SRC_DIR, "/srv", "/sys", TMP_DIR,
    "/usr", "/var",
}  # fmt: skip
MAX_ENV = 64
MAX_ENV_VALUE = 4096
MAX_ARGV = 256
MAX_ARG = 8192

# sh wraps the command: umask, copy the read-only source into the writable
# build dir (keeping modes and mtimes: they end up in archives), then exec.
_WRAPPER = (
    'umask 022 && mkdir -p "$HOME" && '
    f"if [ -d {SRC_DIR} ]; then cp -R --preserve=mode,timestamps,links {SRC_DIR}/. {BUILD_DIR}/; "
    f'fi && cd {BUILD_DIR} && exec "$@"'
)


@dataclass(frozen=True)
class Limits:
    """Resource limits of one build run."""

    timeout_s: float = 1800.0
    memory_bytes: int = 4 * GiB
    pids: int = 512
    build_tmpfs_bytes: int = 2 * GiB  # /build (counts against memory)
    tmp_tmpfs_bytes: int = 1 * GiB  # /tmp
    max_log_bytes: int = 16 * MiB
    max_output_files: int = 10_000
    max_output_bytes: int = 4 * GiB

    def __post_init__(self) -> None:
        if not 0 < self.timeout_s <= 24 * 3600:
            raise UsageError(f"timeout must be within (0, 86400] s, not {self.timeout_s}")
        if self.memory_bytes < 64 * MiB or self.pids < 8:
            raise UsageError("memory limit below 64 MiB or pids limit below 8")


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class OutputFile:
    """A regular file the build left in its output directory."""

    path: str  # relative to the output directory, '/'-separated
    size: int
    sha256: str  # hex


@dataclass(frozen=True)
class RunResult:
    """What one build run did. ``ok`` means exit 0, in time, with clean outputs."""

    environment: str
    lock_digest: str
    image_id: str
    command: tuple[str, ...]
    exit_code: int | None  # None when killed at the timeout
    timed_out: bool
    oom_killed: bool
    duration_s: float
    log_path: Path
    out_dir: Path
    outputs: tuple[OutputFile, ...]
    problems: tuple[str, ...]  # e.g. a symlink or device left in the output directory

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.problems

    def describe(self) -> str:
        if self.timed_out:
            return f"killed after the {self.duration_s:.0f} s timeout"
        if self.oom_killed:
            return f"killed at the memory limit (exit {self.exit_code})"
        if self.exit_code != 0:
            return f"exit status {self.exit_code}"
        if self.problems:
            return "; ".join(self.problems)
        return "ok"


def _check_env(env: Mapping[str, str]) -> None:
    if len(env) > MAX_ENV:
        raise UsageError(f"more than {MAX_ENV} environment variables")
    for k, v in env.items():
        if not _ENV_NAME_RE.match(k):
            raise UsageError(f"bad environment variable name {k!r}")
        if k in FIXED_ENV:
            raise UsageError(f"{k} is fixed by the build runner and cannot be overridden")
        if len(v) > MAX_ENV_VALUE or "\x00" in v:
            raise UsageError(f"environment variable {k} is too long or contains NUL")


def _check_command(command: Sequence[str]) -> tuple[str, ...]:
    argv = tuple(command)
    if not argv or len(argv) > MAX_ARGV:
        raise UsageError(f"a build command needs 1 to {MAX_ARGV} arguments")
    for a in argv:
        if not isinstance(a, str) or len(a) > MAX_ARG or "\x00" in a:
            raise UsageError(f"bad build command argument {a!r:.60}")
    return argv


def _prepare_out_dir(out_dir: Path) -> None:
    """Create an empty output directory the build user can write to."""
    try:
        out_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        if any(out_dir.iterdir()):
            raise UsageError(f"{out_dir}: output directory is not empty")
        if os.geteuid() == 0:
            os.chown(out_dir, BUILD_UID, BUILD_GID)
        else:
            # Not root: the build user can only write to a world-writable directory.
            os.chmod(out_dir, 0o777)  # noqa: S103 - fresh, empty, ours, for the container user
    except OSError as e:
        raise StorageError(
            f"{out_dir}: cannot prepare the output directory: {e.strerror}"
        ) from None


def collect_outputs(out_dir: Path, limits: Limits) -> tuple[tuple[OutputFile, ...], list[str]]:
    """Hash every regular file under ``out_dir``; anything else is a problem.

    Links are never followed: a build could point one at a host file.
    """
    outputs: list[OutputFile] = []
    problems: list[str] = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(out_dir, followlinks=False):
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(out_dir).as_posix()
            st = full.lstat()
            if stat.S_ISDIR(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                problems.append(f"output {rel} is not a regular file")
                continue
            if len(outputs) >= limits.max_output_files:
                problems.append(f"more than {limits.max_output_files} output files")
                return tuple(outputs), problems
            total += st.st_size
            if total > limits.max_output_bytes:
                problems.append(f"outputs exceed {limits.max_output_bytes} bytes")
                return tuple(outputs), problems
            outputs.append(OutputFile(rel, st.st_size, _sha256_file(full)))
    outputs.sort(key=lambda o: o.path)
    return tuple(outputs), problems


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class BuildSpec:
    """One build container, decided before the engine is asked: nothing here does I/O."""

    environment: str
    argv: tuple[str, ...]
    volumes: dict[str, dict[str, str]]  # host path -> {"bind": container path, "mode"}
    env: dict[str, str]
    limits: Limits


def build_spec(
    environment: str,
    command: Sequence[str],
    *,
    out_dir: Path,
    source_date_epoch: int,
    source_dir: Path | None = None,
    mounts: Mapping[str, Path] | None = None,
    env: Mapping[str, str] | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> BuildSpec:
    """Check a build request and decide its container's mounts and environment.

    Raises UsageError for a command, environment variable, SOURCE_DATE_EPOCH
    or mount the runner refuses (see :func:`run_build`), or an input
    directory that does not exist.
    """
    argv = _check_command(command)
    extra_env = dict(env or {})
    _check_env(extra_env)
    if not 0 <= source_date_epoch < 2**33:
        raise UsageError(f"SOURCE_DATE_EPOCH {source_date_epoch} is out of range")
    volumes: dict[str, dict[str, str]] = {}
    if source_dir is not None:
        if not source_dir.is_dir():
            raise UsageError(f"{source_dir}: source directory does not exist")
        volumes[str(source_dir.resolve())] = {"bind": SRC_DIR, "mode": "ro"}
    for target, host in (mounts or {}).items():
        if not _MOUNT_RE.match(target) or target in _RESERVED_MOUNTS:
            raise UsageError(f"cannot mount an input at {target!r}")
        if not host.is_dir():
            raise UsageError(f"{host}: input directory for {target} does not exist")
        key = str(host.resolve())
        if key in volumes:
            raise UsageError(f"{host} is mounted twice")
        volumes[key] = {"bind": target, "mode": "ro"}
    volumes[str(out_dir.resolve())] = {"bind": OUT_DIR, "mode": "rw"}
    run_env = {
        "PATH": PATH,
        "HOME": f"{TMP_DIR}/home",
        "USER": "build",
        "TMPDIR": TMP_DIR,
        "TZ": "UTC",
        "LC_ALL": "C.UTF-8",
        "LANG": "C.UTF-8",
        "SOURCE_DATE_EPOCH": str(source_date_epoch),
        **extra_env,
    }
    return BuildSpec(environment, argv, volumes, run_env, limits)


def container_options(spec: BuildSpec, name: str) -> dict[str, Any]:
    """The Docker SDK's ``containers.create`` arguments (but the image) for ``spec``.

    No network, every capability dropped, no new privileges, a read-only root
    with tmpfs at /build and /tmp, memory, pid and log limits, a fixed user and
    host name. Never raises.
    """
    limits = spec.limits
    tmpfs_opts = "rw,nosuid,nodev,exec"
    return {
        "command": ["sh", "-c", _WRAPPER, "rebuild-build", *spec.argv],
        "name": name,
        "user": f"{BUILD_UID}:{BUILD_GID}",
        "hostname": HOSTNAME,
        "working_dir": "/",
        "environment": spec.env,
        "network_mode": "none",
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "read_only": True,
        "tmpfs": {
            BUILD_DIR: (
                f"{tmpfs_opts},size={limits.build_tmpfs_bytes},"
                f"uid={BUILD_UID},gid={BUILD_GID},mode=0755"
            ),
            TMP_DIR: f"{tmpfs_opts},size={limits.tmp_tmpfs_bytes},mode=1777",
        },
        "volumes": spec.volumes,
        "mem_limit": limits.memory_bytes,
        "memswap_limit": limits.memory_bytes,
        "pids_limit": limits.pids,
        "ipc_mode": "private",
        "labels": {RUN_LABEL: spec.environment},
        "log_config": {
            "type": "json-file",
            "config": {"max-size": str(limits.max_log_bytes), "max-file": "1"},
        },
    }


def run_build(
    environment: str,
    command: Sequence[str],
    *,
    out_dir: Path,
    log_path: Path,
    source_date_epoch: int,
    source_dir: Path | None = None,
    mounts: Mapping[str, Path] | None = None,
    env: Mapping[str, str] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    containers_dir: Path | None = None,
) -> RunResult:
    """Run ``command`` hermetically in ``environment``'s verified image.

    ``source_dir`` (read-only at /src) is copied into the writable /build, the
    working directory; ``mounts`` maps extra container paths (e.g. "/wheels")
    to host directories mounted read-only; ``out_dir`` (created empty) is the
    only host path the build can write, at /out. The build log (stdout and
    stderr) is written to ``log_path``. A build that fails or times out is a
    result, not an exception. Raises UsageError for a request the runner
    refuses, StorageError when the output directory cannot be prepared,
    DriftError for an image that does not match its lock and ToolError when
    the engine could not run the build.
    """
    spec = build_spec(
        environment,
        command,
        out_dir=out_dir,
        source_date_epoch=source_date_epoch,
        source_dir=source_dir,
        mounts=mounts,
        env=env,
        limits=limits,
    )
    _prepare_out_dir(out_dir)
    ran = _run_container(spec, log_path, containers_dir)
    outputs, problems = collect_outputs(out_dir, limits)
    return RunResult(
        environment=environment,
        lock_digest=ran.lock_digest,
        image_id=ran.image_id,
        command=spec.argv,
        exit_code=None if ran.timed_out else ran.exit_code,
        timed_out=ran.timed_out,
        oom_killed=ran.oom_killed,
        duration_s=ran.duration_s,
        log_path=log_path,
        out_dir=out_dir,
        outputs=outputs,
        problems=tuple(problems),
    )


@dataclass(frozen=True)
class _Ran:
    """How the container ended, and which verified image it ran."""

    lock_digest: str
    image_id: str
    exit_code: int | None
    timed_out: bool
    oom_killed: bool
    duration_s: float


def _run_container(spec: BuildSpec, log_path: Path, containers_dir: Path | None) -> _Ran:
    """Create, start and wait for the build container; write its log; always remove it.

    The engine calls run in a worker thread while this one only waits, so a
    Ctrl-C never lands inside one of them (it left that call's socket open
    and the call's outcome unknown). On Ctrl-C the container is removed by
    its unique name, which ends the worker's wait, and the interrupt is
    raised once the worker is done (or after INTERRUPT_GRACE_S).
    """
    lock, image = verified_image(spec.environment, containers_dir)
    # A unique name lets the cleanup find the container even when it is
    # removed before the SDK returned its handle.
    name = f"rebuild-build-{uuid.uuid4().hex[:16]}"
    interrupted = threading.Event()
    outcome: list[_Ran | BaseException] = []

    def work() -> None:
        try:
            verified = (lock, image)
            outcome.append(
                _lifecycle(spec, log_path, containers_dir, verified, name=name, stop=interrupted)
            )
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            outcome.append(e)

    worker = threading.Thread(target=work, name=name, daemon=True)
    worker.start()
    try:
        worker.join()
    except KeyboardInterrupt:
        interrupted.set()
        _remove(name)
        worker.join(timeout=INTERRUPT_GRACE_S)
        raise
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


def _remove(name: str) -> None:
    with contextlib.suppress(Exception):
        docker_client().api.remove_container(name, force=True)


def _lifecycle(
    spec: BuildSpec,
    log_path: Path,
    containers_dir: Path | None,
    verified: tuple[Lock, ImageRef],
    *,
    name: str,
    stop: threading.Event,
) -> _Ran:
    """The worker's part of :func:`_run_container`: the container from creation to removal.

    ``verified`` is the lock and image :func:`verified_image` returned.
    """
    lock, image = verified
    c = docker_client()
    options = container_options(spec, name)
    container: Any = None
    try:
        with engine_errors(f"starting the build in {spec.environment}"):
            try:
                container = c.containers.create(image.id, **options)
            except docker.errors.ImageNotFound:
                # The remembered image was deleted (e.g. rebuilt): look it up again.
                lock, image = verified_image(spec.environment, containers_dir, refresh=True)
                container = c.containers.create(image.id, **options)
            if stop.is_set():  # Ctrl-C: removed by name before it existed
                raise ToolError("interrupted before the build started")
            container.start()
        exit_code, timed_out, duration = _wait(container, spec.limits)
        with engine_errors("reading the build log"):
            oom = False
            if not timed_out and exit_code != 0:
                # Only a failed build can have been OOM-killed; spare the inspect otherwise.
                container.reload()
                oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
            _write_log(container, log_path, spec.limits, timed_out, duration)
    finally:
        _remove(name)
    return _Ran(lock.digest, image.id, exit_code, timed_out, oom, duration)


def _wait(container: Any, limits: Limits) -> tuple[int | None, bool, float]:
    """Wait for the build: (exit code, timed out, seconds). Kills it at the timeout."""
    started = time.monotonic()
    exit_code: int | None = None
    timed_out = False
    with engine_errors("waiting for the build"):
        try:
            status = container.wait(timeout=limits.timeout_s)
            exit_code = int(status.get("StatusCode", -1))
        except requests.RequestException as e:
            if time.monotonic() - started < limits.timeout_s - 1:
                raise ToolError(f"lost the Docker engine during the build: {e}") from e
            timed_out = True
            # Kill now so the log ends here; the caller removes it regardless.
            with contextlib.suppress(Exception):
                container.kill()
    return exit_code, timed_out, time.monotonic() - started


def _write_log(container: Any, log_path: Path, limits: Limits, timed_out: bool, dt: float) -> None:
    chunks: list[bytes] = []
    size = 0
    truncated = False
    for chunk in container.logs(stdout=True, stderr=True, stream=True, follow=False):
        if size + len(chunk) > limits.max_log_bytes:
            chunks.append(chunk[: limits.max_log_bytes - size])
            truncated = True
            break
        chunks.append(chunk)
        size += len(chunk)
    if truncated:
        chunks.append(f"\n[rebuild: log truncated at {limits.max_log_bytes} bytes]\n".encode())
    if timed_out:
        chunks.append(f"\n[rebuild: killed after the {dt:.1f} s timeout]\n".encode())
    log_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(log_path, b"".join(chunks))
