"""The neutral archive model every format reader is adapted to.

Fields are grouped by what a difference in them means; the generic comparison
in _diagnose only compares groups for equality and never looks inside.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from rebuild.compare._blob import Span


@dataclass(frozen=True)
class Entry:
    """One archive member in the neutral model (values only compared for equality)."""

    name: str
    timestamps: tuple[object, ...]
    permissions: tuple[object, ...]
    compression: tuple[object, ...]
    metadata: tuple[object, ...]
    layout: tuple[object, ...]
    # Fields dictated by the compression method (a zip's "version needed"):
    # compared as layout only when the compression is the same.
    derived: tuple[object, ...] = ()
    show_time: str = ""
    show_perm: str = ""
    show_comp: str = ""
    size: int = 0  # uncompressed bytes, as declared
    stored: int = -1  # bytes stored in the archive (-1: same as size)


@dataclass
class ArchiveView:
    """A parsed archive as the generic comparison sees it."""

    format: str
    entries: tuple[Entry, ...]
    # (codec, compressed bytes) for a fast exact comparison, or None.
    raw: Callable[[str], tuple[object, Span] | None]
    content: Callable[[str], Iterator[bytes]]
    # Archive-level fields: name -> (difference kind, comparable value, display).
    fields: dict[str, tuple[str, object, str]] = field(default_factory=dict)
    # Names in physical (data) order when it can differ from the listing order.
    physical_order: tuple[str, ...] | None = None
    # Precomputed SHA-256 digests of content (tar computes them while streaming).
    digests: dict[str, bytes] = field(default_factory=dict)
