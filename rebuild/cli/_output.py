"""Output for the CLI: one JSON document with --json, rich text otherwise.

Only the CLI prints. Library code returns values or raises typed errors.

With ``--json`` every command prints exactly one *envelope* on stdout (the
shape is specified in docs/cli.md and docs/cli-output.schema.json)::

    {"format": "rebuild-output/v1", "command": "log add", "exit_code": 0,
     "ok": true, ...the command's own fields...}

``ok`` is ``exit_code == 0``; commands that decide something also give a
``verdict``; a negative verdict (exit 1) may say why in ``reason``; an
``error`` object (``kind``, ``message``, optional ``hint``) is present if and
only if the exit code is 2. Long-running commands may first print *event*
lines (``{"format", "command", "event", ...}``, one JSON object per line);
their final envelope is then one line too, so the whole output is JSON lines.

The envelope is written once, by :meth:`Output.finish`, after the command
returned or raised: so a step that fails after the command's answer is known
(a publish after a verdict) adds an ``error`` to the answer instead of
replacing it.

rich is imported only when something is printed for a human: ``--help`` and
``--json`` runs never load it (it costs tens of milliseconds of start-up).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from rich.console import Console

FORMAT: Final = "rebuild-output/v1"
# Keys of the envelope; a command's own fields never use them for anything else.
ENVELOPE_KEYS: Final = frozenset(
    {"format", "command", "exit_code", "ok", "verdict", "reason", "error", "event"}
)

# The control characters rich drops from printed text (rich.control), dropped
# the same way when a diagnostic is written without rich.
_STRIP = dict.fromkeys((0x07, 0x08, 0x0B, 0x0C, 0x0D))


def error_doc(kind: str, message: str, hint: str | None = None) -> dict[str, str]:
    doc = {"kind": kind, "message": message}
    if hint:
        doc["hint"] = hint
    return doc


class Output:
    """Where a command reports: a JSON envelope on stdout, or human text via rich."""

    def __init__(self, json_mode: bool, command: str = "") -> None:
        self.json_mode = json_mode
        self.command = command
        self._console: Console | None = None
        self._err: Console | None = None
        self._doc: dict[str, Any] = {}
        self._error: dict[str, str] | None = None
        self._reason: dict[str, str] | None = None
        self._streamed = False
        self._finished = False

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

    # --- what a command reports -------------------------------------------

    def result(self, doc: dict[str, Any], human: Callable[[Console], None] | None = None) -> None:
        """The command's answer: ``doc``'s fields go into the envelope; ``human`` is
        printed now when not in JSON mode."""
        self._doc.update(doc)
        if not self.json_mode and human is not None:
            human(self.console)

    def event(self, doc: dict[str, Any], human: Callable[[Console], None] | None = None) -> None:
        """One line of a stream (``doc["event"]`` names it), written at once."""
        if self.json_mode:
            line = {**doc, "format": FORMAT, "command": self.command}
            self._write(line, compact=True)
            self._streamed = True
        elif human is not None:
            human(self.console)

    def note(self, message: str) -> None:
        """A progress or informational line (stderr, never in JSON output)."""
        if self.json_mode:
            self._plain_err(message)
        else:
            self.err.print(message, markup=False)

    def fail(
        self,
        message: str,
        *,
        kind: str = "OperationalError",
        hint: str | None = None,
        quiet: bool = False,
    ) -> None:
        """Record an operational error (the command then returns exit status 2);
        print it on stderr unless ``quiet`` (already said)."""
        self._error = error_doc(kind, message, hint)
        if not quiet:
            self._say(message, hint, style="bold red")

    def reject(self, message: str, *, kind: str) -> None:
        """Record why the verdict is negative (the command then returns exit status 1)."""
        self._reason = {"kind": kind, "message": message}
        self._say(message, None, style="bold red")

    def error(self, message: str, *, kind: str, exit_code: int, hint: str | None = None) -> None:
        """An error raised out of the command: the reason (1) or the error (2)."""
        if exit_code == 1:
            self.reject(message, kind=kind)
        else:
            self.fail(message, kind=kind, hint=hint)

    # --- the envelope ------------------------------------------------------

    def finish(self, exit_code: int, *, negative_verdict: str = "rejected") -> None:
        """Write the envelope (JSON mode); called once, by :func:`rebuild.cli.main`."""
        if self._finished or not self.json_mode:
            self._finished = True
            return
        self._finished = True
        doc = {k: v for k, v in self._doc.items() if k not in ENVELOPE_KEYS or k == "verdict"}
        verdict = self._doc.get("verdict")
        if exit_code == 1 and not isinstance(verdict, str):
            verdict = negative_verdict
        if isinstance(verdict, str):
            doc["verdict"] = verdict
        if exit_code == 1 and self._reason is not None:
            doc["reason"] = self._reason
        if exit_code == 2:
            doc["error"] = self._error or error_doc(
                "OperationalError", f"rebuild {self.command} failed (exit status 2)"
            )
        doc.update(format=FORMAT, command=self.command, exit_code=exit_code, ok=exit_code == 0)
        self._write(doc, compact=self._streamed)

    # --- plumbing -----------------------------------------------------------

    def _say(self, message: str, hint: str | None, *, style: str) -> None:
        lines = [f"rebuild: {message}", *([f"hint: {hint}"] if hint else [])]
        for line in lines:
            if self.json_mode:
                self._plain_err(line)
            else:
                self.err.print(line, markup=False, style=style if line is lines[0] else None)

    @staticmethod
    def _write(doc: dict[str, Any], *, compact: bool) -> None:
        if compact:
            text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
        else:
            text = json.dumps(doc, indent=2, sort_keys=True, default=str)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    @staticmethod
    def _plain_err(line: str) -> None:
        sys.stderr.write(line.translate(_STRIP) + "\n")
        sys.stderr.flush()
