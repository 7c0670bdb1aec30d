"""Output for the CLI: one JSON document with --json, rich text otherwise.

Only the CLI prints. Library code returns values or raises typed errors.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console


class Output:
    """Where a command reports: JSON on stdout, or human text via rich."""

    def __init__(self, json_mode: bool) -> None:
        self.json_mode = json_mode
        # Human output goes to the terminal (stdout); diagnostics to stderr.
        self.console = Console(highlight=False, soft_wrap=True)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)

    def result(self, doc: dict[str, Any], human: Callable[[Console], None] | None = None) -> None:
        """Report the command's result: ``doc`` as JSON, or ``human`` as text."""
        if self.json_mode:
            sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
            sys.stdout.flush()
        elif human is not None:
            human(self.console)

    def note(self, message: str) -> None:
        """A progress or informational line (stderr, never in JSON output)."""
        self.err.print(message, markup=False)

    def error(self, message: str, *, kind: str, exit_code: int) -> None:
        if self.json_mode:
            doc = {"error": {"kind": kind, "message": message, "exit_code": exit_code}}
            sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
            sys.stdout.flush()
        self.err.print(f"rebuild: {message}", markup=False, style="bold red")
