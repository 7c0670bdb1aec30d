"""Shared helpers for the engine's tests: real Docker, real git, real fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from rebuild.engine.build_env import environment_image, lock_digest
from rebuild.engine.fixtures import MaterializedFixture, materialize
from rebuild.engine.pipeline import RecipeTarget, VerifyOptions, run_verification
from rebuild.engine.result import VerifyResult
from rebuild.errors import ToolError
from tests.indexutil import require_package_index


@pytest.fixture(scope="session")
def docker_envs() -> None:
    """The python-3.11 and php-8.2 images, built (idempotently) if missing.

    Skips only when no Docker engine answers at all (scripts/setup starts one).
    """
    try:
        for name in ("python-3.11", "php-8.2"):
            environment_image(name)
    except ToolError as e:
        if "no Docker engine answers" in str(e):
            pytest.skip(f"no Docker engine: {e}")
        raise


@pytest.fixture(scope="session")
def package_index() -> None:
    """pip's configured index answers from this host, or the test says so and skips
    (scripts/test turns the skip into a failure naming the cause)."""
    require_package_index("attrs")


def make_fixture(name: str, tmp: Path, variant: str | None = None) -> MaterializedFixture:
    return materialize(name, tmp / "fixture", lock_for=lock_digest, variant=variant)


def verify_fixture(
    name: str,
    tmp: Path,
    *,
    variant: str | None = None,
    timeout: float = 300.0,
    key: object = None,
    keep_work: bool = False,
) -> VerifyResult:
    made = make_fixture(name, tmp, variant)
    return run_verification(
        RecipeTarget(made.recipe, made.artifact),
        VerifyOptions(
            report_dir=tmp / "report", timeout=timeout, signing_key=key, keep_work=keep_work
        ),
    )
