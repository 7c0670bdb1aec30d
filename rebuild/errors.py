"""Typed errors for the producer side.

:class:`OperationalError` and its subclasses mean "could not do the job"
(CLI exit 2); :class:`NegativeVerdict` means "did the job, and the answer is
no" (CLI exit 1). Errors from :mod:`verify` keep their own families:
:class:`verify.errors.TrustError` maps to exit 1 and
:class:`verify.errors.FormatError` to exit 2.
"""

from __future__ import annotations


class RebuildError(Exception):
    """Base class of every error raised by :mod:`rebuild`.

    ``hint`` (optional) tells the user what to try next: the CLI prints it
    on its own line and puts it in the JSON envelope's ``error.hint``.
    """

    def __init__(self, *args: object, hint: str | None = None) -> None:
        super().__init__(*args)
        self.hint = hint


class OperationalError(RebuildError):
    """The operation could not be carried out (bad input, I/O, tools)."""


class UsageError(OperationalError):
    """The command line or a configuration file is unusable."""


class InputError(OperationalError):
    """An input file is missing, unreadable, oversized or malformed."""


class StorageError(OperationalError):
    """A state directory or output file could not be read or written safely."""


class TransportError(OperationalError):
    """A network peer (log, witness, mirror, index) failed or misbehaved."""


class ToolError(OperationalError):
    """An external system (Docker engine, git, pip, diffoscope) failed."""


class NegativeVerdict(RebuildError):
    """The job ran and its answer is negative (mismatch, rejected, invalid)."""
