"""Pinned build environments and the hermetic build runner.

The public surface: definitions and locks (:mod:`rebuild.envs.definition`),
building and checking images (:mod:`rebuild.envs.images`) and running one
build hermetically (:mod:`rebuild.envs.runner`).
"""

from __future__ import annotations

from rebuild.envs.definition import Definition, Lock, load_definition, load_lock
from rebuild.envs.images import DriftError, verified_image
from rebuild.envs.runner import (
    BUILD_DIR,
    DEFAULT_LIMITS,
    OUT_DIR,
    SRC_DIR,
    Limits,
    OutputFile,
    RunResult,
    run_build,
)

__all__ = [
    "BUILD_DIR",
    "DEFAULT_LIMITS",
    "OUT_DIR",
    "SRC_DIR",
    "Definition",
    "DriftError",
    "Limits",
    "Lock",
    "OutputFile",
    "RunResult",
    "load_definition",
    "load_lock",
    "run_build",
    "verified_image",
]
