"""Pinned build environments and the hermetic build runner.

The public surface: definitions and locks (:mod:`rebuild.envs.definition`),
building and checking images (:mod:`rebuild.envs.images`) and running one
build hermetically (:mod:`rebuild.envs.runner`).

Only the definitions load with the package. The names from ``images`` and
``runner`` load on first use (:func:`__getattr__`), because those modules
bring the Docker SDK, which reading or checking a definition does not
need, and because they import parts of this package: loading them from here
would make the package and its modules import each other.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rebuild.envs.definition import Definition, Lock, load_definition, load_lock

if TYPE_CHECKING:
    from rebuild.engine.plan import BUILD_DIR
    from rebuild.envs.images import DriftError, verified_image
    from rebuild.envs.runner import (
        DEFAULT_LIMITS,
        OUT_DIR,
        SRC_DIR,
        Limits,
        OutputFile,
        RunResult,
        run_build,
    )

_LAZY: dict[str, str] = {
    "DriftError": "rebuild.envs.images",
    "verified_image": "rebuild.envs.images",
    "BUILD_DIR": "rebuild.engine.plan",
    **dict.fromkeys(
        (
            "DEFAULT_LIMITS",
            "OUT_DIR",
            "SRC_DIR",
            "Limits",
            "OutputFile",
            "RunResult",
            "run_build",
        ),
        "rebuild.envs.runner",
    ),
}

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


def __getattr__(name: str) -> Any:
    """Load ``name`` from ``images`` or ``runner`` on first use (PEP 562).

    Raises AttributeError for a name this package does not export.
    """
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
