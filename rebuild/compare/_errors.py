"""Typed errors for archive parsing and comparison.

Every malformed archive ends in one of these (all :class:`InputError`, so the
CLI exits 2 with a one-line message); parsers never let ``struct.error``,
``zlib.error`` or an ``IndexError`` escape.
"""

from __future__ import annotations

from rebuild.errors import InputError, ToolError


class ArchiveFormatError(InputError):
    """An archive is malformed, truncated, or exceeds a parsing bound."""


class ZipFormatError(ArchiveFormatError):
    """A zip file (wheel, zip-based phar) is malformed or exceeds a bound."""


class PharFormatError(ArchiveFormatError):
    """A native PHAR file is malformed or exceeds a bound."""


class TarFormatError(ArchiveFormatError):
    """A tar file (tar-based phar, sdist) is malformed or exceeds a bound."""


class DiffoscopeError(ToolError):
    """diffoscope ran but failed in a way that is not 'files differ'."""
