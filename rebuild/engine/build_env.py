"""Adapter from a build plan to the pinned environments and the hermetic runner.

Decides nothing: it makes sure the plan's environment image exists and
matches its lock (building it when missing, as ``rebuild env build``
would), and hands the plan to :func:`rebuild.envs.run_build`, the one
place that starts build containers. Plan inputs are staged into one
read-only directory mounted at ``/rebuild``.
"""

from __future__ import annotations

import functools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from rebuild.engine.plan import BuildPlan
from rebuild.envs import Limits, load_definition, load_lock, run_build, verified_image
from rebuild.envs.definition import build_order
from rebuild.envs.images import build_environment, find_image
from rebuild.envs.mirror import resolve_mirrors
from rebuild.envs.runner import BUILD_GID, BUILD_UID
from rebuild.errors import UsageError

INPUT_MOUNT = "/rebuild"


@dataclass(frozen=True)
class BuildOutcome:
    """How the build ended, in one line, and whether it produced clean outputs."""

    ok: bool
    summary: str
    seconds: float


def lock_digest(name: str) -> str:
    """The hex sha256 of environment ``name``'s lock (its identity)."""
    return load_lock(load_definition(name)).digest.removeprefix("sha256:")


def ensure_built(name: str) -> bool:
    """Build the environment (and its parents) when no image for its lock exists."""
    order = build_order([name])
    if find_image(load_lock(order[-1])) is not None:
        return False
    suite = order[0].suite or "bookworm"

    @functools.cache
    def mirrors() -> object:
        return resolve_mirrors(suite)

    for definition in order:
        build_environment(definition, mirrors)  # type: ignore[arg-type]
    return True


def environment_image(name: str) -> tuple[str, str, str]:
    """(name, lock hex digest, image id) of a built image proven to match its lock."""
    ensure_built(name)
    lock, image = verified_image(name)
    return name, lock.digest.removeprefix("sha256:"), image.id


def stage_inputs(plan: BuildPlan, staging: Path) -> dict[str, Path]:
    """Copy the plan's read-only inputs into one directory for ``/rebuild``."""
    if not plan.inputs:
        return {}
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for m in plan.inputs:
        if not m.container.startswith(INPUT_MOUNT + "/"):
            raise UsageError(f"plan input {m.container} is not under {INPUT_MOUNT}")
        rel = m.container.removeprefix(INPUT_MOUNT + "/")
        target = staging / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if m.host.is_dir():
            # A rename, not a copy: the site directory can hold thousands of files.
            shutil.move(str(m.host), str(target))
        else:
            shutil.copy2(m.host, target)
    _readable_by_builder(staging)
    return {INPUT_MOUNT: staging}


def _readable_by_builder(root: Path) -> None:
    """Let the unprivileged build user read ``root`` without changing its modes.

    As root, the tree is handed to the build user (modes are build inputs:
    setuptools' bdist_wheel records them in the wheel). Otherwise read bits
    are added, the best an unprivileged rebuilder can do.
    """
    as_root = os.geteuid() == 0
    for p in [root, *root.rglob("*")]:
        if as_root:
            os.lchown(p, BUILD_UID, BUILD_GID)
        elif not p.is_symlink():
            p.chmod(p.stat().st_mode | 0o444 | (0o111 if p.is_dir() else 0))


def run_plan(
    plan: BuildPlan,
    *,
    source: Path,
    out_dir: Path,
    log_path: Path,
    timeout: float,
    staging: Path,
) -> BuildOutcome:
    """Run the plan's command on ``source`` in its environment; outputs land in ``out_dir``."""
    # The runner copies /src into /build as the unprivileged build user.
    _readable_by_builder(source)
    result = run_build(
        plan.environment,
        plan.command,
        out_dir=out_dir,
        log_path=log_path,
        source_date_epoch=plan.source_date_epoch,
        source_dir=source,
        mounts=stage_inputs(plan, staging),
        env=dict(plan.env),
        limits=Limits(timeout_s=timeout),
    )
    return BuildOutcome(result.ok, result.describe(), result.duration_s)


def build_output(
    plan: BuildPlan, *, out_dir: Path, log_path: Path, timeout: float, staging: Path
) -> tuple[BuildOutcome, Path | str]:
    """Run ``plan`` into a fresh ``out_dir``: its outcome, and its one output or why not."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    outcome = run_plan(
        plan,
        source=plan.source_dir,
        out_dir=out_dir,
        log_path=log_path,
        timeout=timeout,
        staging=staging,
    )
    if not outcome.ok:
        return outcome, f"build {outcome.summary}; see {log_path}"
    return outcome, single_output(out_dir, plan.output)


def single_output(out_dir: Path, pattern: str) -> Path | str:
    """The one regular file in ``out_dir`` matching ``pattern``, or why there is not one."""
    produced = sorted(p for p in out_dir.glob(pattern) if p.is_file() and not p.is_symlink())
    if len(produced) == 1:
        return produced[0]
    names = ", ".join(sorted(p.name for p in out_dir.iterdir())) if out_dir.is_dir() else ""
    return f"build produced {names or 'nothing'}, expected one file matching {pattern!r}"
