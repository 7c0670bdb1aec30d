"""How much a comparison may inflate: the caps that stop decompression bombs.

A diagnosis reads every entry's uncompressed bytes (to compare their
SHA-256), and diffoscope extracts them to disk; a few kilobytes of bzip2
can declare gigabytes. Before anything is inflated, each side's declared
sizes are checked against two caps, as the sdist unpacker does:

- the total uncompressed size of all entries (``max_inflated``);
- each entry's expansion ratio, ``uncompressed <= max_ratio x max(stored, 1 KiB)``
  (the floor lets small, very compressible files through).

Decompression itself never produces more than an entry declares, so the
declared sizes bound the work. Whole-file gzip/bzip2 wrappers declare
nothing: their output is cut off at the same caps while streaming.
diffoscope is not run on a side over the caps, and otherwise runs with
``diffoscope_memory`` of address space, files no larger than
``max_inflated``, and at most ``diffoscope_disk`` bytes in its scratch
directory.
"""

from __future__ import annotations

from dataclasses import dataclass

from rebuild.compare._errors import ArchiveFormatError

MiB = 1 << 20
RATIO_FLOOR = 1024  # stored bytes below this count as this much for the ratio


class InflationLimitError(ArchiveFormatError):
    """An artifact declares (or a wrapper produces) more than the caps allow."""


@dataclass(frozen=True)
class InflationLimits:
    """The caps of one comparison (per artifact)."""

    max_inflated: int = 2048 * MiB
    max_ratio: int = 200
    diffoscope_memory: int = 4096 * MiB
    diffoscope_disk: int = 0
    """0: twice ``max_inflated`` plus 256 MiB (diffoscope extracts both sides
    and writes its reports next to them)."""

    def __post_init__(self) -> None:
        if self.max_inflated <= 0 or self.max_ratio <= 0 or self.diffoscope_memory <= 0:
            raise ValueError("inflation limits must be positive")
        if self.diffoscope_disk < 0:
            raise ValueError("the diffoscope disk cap must not be negative")
        if self.diffoscope_disk == 0:
            object.__setattr__(self, "diffoscope_disk", 2 * self.max_inflated + 256 * MiB)

    def entry_cap(self, stored: int) -> int:
        """The most one entry (or a wrapper's payload) stored in ``stored`` bytes may inflate to."""
        return min(self.max_inflated, self.max_ratio * max(stored, RATIO_FLOOR))

    def check(self, entries: list[tuple[str, int, int]], what: str) -> None:
        """Refuse (InflationLimitError) entries of (name, stored, uncompressed) over the caps."""
        total = 0
        for name, stored, size in entries:
            if size > self.max_ratio * max(stored, RATIO_FLOOR):
                raise InflationLimitError(
                    f"{what}: {name} declares {size} bytes from {stored} stored, more than "
                    f"{self.max_ratio}x (--max-ratio)"
                )
            total += size
            if total > self.max_inflated:
                raise InflationLimitError(
                    f"{what}: its entries declare more than {self.max_inflated} bytes "
                    "uncompressed (--max-inflated-mib)"
                )


DEFAULT_LIMITS = InflationLimits()
