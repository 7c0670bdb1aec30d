"""A build plan: exactly what one hermetic build needs, fetched and pinned.

A plan is produced on the host by a strategy (a recipe, or inference for a
PyPI wheel) after every input has been fetched and checked. It decides
nothing by itself and holds no secrets; the runner executes it with no
network, and the pipeline compares what it produced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUILD_DIR = "/build"
OUTPUT_DIR = "/out"

# A build's default wall-clock limit in seconds. Defined here, in a module that
# imports only the standard library, so `rebuild verify --help` can show it
# without loading the pipeline (and with it the Docker SDK).
DEFAULT_TIMEOUT = 1800.0


@dataclass(frozen=True)
class InputMount:
    """A host directory or file mounted read-only into the build container."""

    host: Path
    container: str


@dataclass(frozen=True)
class BuildPlan:
    """Inputs, command and normalisation of one build.

    ``source_dir`` is mounted read-only and copied by the runner into the
    writable :data:`BUILD_DIR` (backends such as setuptools write into the
    tree); ``inputs`` are staged under ``/rebuild``, read-only. ``output`` is the file name (a glob
    pattern for recipes) expected in :data:`OUTPUT_DIR` afterwards.
    """

    environment: str
    command: tuple[str, ...]
    source_dir: Path
    source_date_epoch: int
    sde_rule: str
    output: str
    inputs: tuple[InputMount, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    details: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
