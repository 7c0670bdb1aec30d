"""Output for the CLI: one JSON document with --json, rich text otherwise.

Only the CLI prints. Library code returns values or raises typed errors.

rich is imported only when something is printed for a human: ``--help`` and
``--json`` runs never load it (it costs tens of milliseconds of start-up).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

# The control characters rich drops from printed text (rich.control), dropped
# the same way when a JSON-mode diagnostic is written without rich.
_STRIP = dict.fromkeys((0x07, 0x08, 0x0B, 0x0C, 0x0D))


class Output:
    """Where a command reports: JSON on stdout, or human text via rich."""

    def __init__(self, json_mode: bool) -> None:
        self.json_mode = json_mode
        self._console: Console | None = None
        self._err: Console | None = None

    @property
    def console(self) -> Console:
        """Human output: the terminal (stdout)."""
        if self._console is None:
            from rich.console import Console  # noqa: PLC0415

            self._console = Console(highlight=False, soft_wrap=True)
        return self._console

    @property
    def err(self) -> Console:
        """Diagnostics and progress: stderr."""
        if self._err is None:
            from rich.console import Console  # noqa: PLC0415

            self._err = Console(stderr=True, highlight=False, soft_wrap=True)
        return self._err

    def result(self, doc: dict[str, Any], human: Callable[[Console], None] | None = None) -> None:
        """Report the command's result: ``doc`` as JSON, or ``human`` as text."""
        if self.json_mode:
            sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
            sys.stdout.flush()
        elif human is not None:
            human(self.console)

    def note(self, message: str) -> None:
        """A progress or informational line (stderr, never in JSON output)."""
        if self.json_mode:
            self._plain_err(message)
        else:
            self.err.print(message, markup=False)

    def error(self, message: str, *, kind: str, exit_code: int) -> None:
        if self.json_mode:
            doc = {"error": {"kind": kind, "message": message, "exit_code": exit_code}}
            sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
            sys.stdout.flush()
            self._plain_err(f"rebuild: {message}")
        else:
            self.err.print(f"rebuild: {message}", markup=False, style="bold red")

    @staticmethod
    def _plain_err(line: str) -> None:
        sys.stderr.write(line.translate(_STRIP) + "\n")
        sys.stderr.flush()
