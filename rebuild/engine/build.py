"""Build a recipe's artifact in its pinned environment: the maintainer's side of a release.

The same source fetch (:func:`rebuild.engine.targets.recipe_plan`) and the same
hermetic runner (:func:`rebuild.engine.build_env.run_plan`) that ``rebuild
verify`` uses, so what a maintainer builds is exactly what rebuilders rebuild.
It decides nothing and compares nothing: a build that fails, or produces
anything but one output file, is a :class:`~rebuild.errors.ToolError`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from rebuild.engine import build_env, targets
from rebuild.engine.plan import DEFAULT_TIMEOUT
from rebuild.errors import InputError, ToolError
from rebuild.hashing import sha256_file
from rebuild.recipe import load_recipe


@dataclass(frozen=True)
class Built:
    """One artifact built from a recipe."""

    artifact: Path
    sha256: str
    seconds: float
    build_log: Path
    environment: str


def build_recipe(
    recipe_path: Path, out_dir: Path, *, work: Path, timeout: float = DEFAULT_TIMEOUT
) -> Built:
    """Fetch the recipe's source, build it in its environment, return the one output.

    ``out_dir`` receives the output and ``build.log``; ``work`` holds the
    fetched source and is removed afterwards. The recipe must name exactly one
    output (a release statement signs one artifact per recipe output here),
    and this machine's environment must match the recipe's lock digest.
    """
    recipe = load_recipe(recipe_path)
    if len(recipe.outputs) != 1:
        raise InputError(f"{recipe_path}: build_recipe needs exactly one output pattern")
    remarks: list[str] = []
    try:
        output = recipe.outputs[0]
        plan = targets.recipe_plan(recipe, recipe.source, output, work=work, remarks=remarks)
        name, lock, _image = build_env.environment_image(plan.environment)
        if recipe.environment.lock_sha256.removeprefix("sha256:") != lock:
            raise ToolError(
                f"{recipe_path}: the recipe pins {name} lock "
                f"sha256:{recipe.environment.lock_sha256.removeprefix('sha256:')}, this "
                f"machine's is sha256:{lock}"
            )
        built = out_dir / "built"
        log_path = out_dir / "build.log"
        outcome, produced = build_env.build_output(
            plan, out_dir=built, log_path=log_path, timeout=timeout, staging=work / "inputs"
        )
        if isinstance(produced, str):
            raise ToolError(f"build of {recipe_path}: {produced}")
        artifact = out_dir / produced.name
        produced.replace(artifact)
        shutil.rmtree(built, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Built(artifact, sha256_file(artifact), outcome.seconds, log_path, name)
