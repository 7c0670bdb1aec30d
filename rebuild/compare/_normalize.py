"""Normalized forms of a zip: what "equivalent" means, byte for byte.

Two artifacts are *equivalent* when they are not identical but a fixed,
documented set of rules turns both into the same bytes. The rules (named in
:data:`verify.intoto.NORMALIZATION_RULES`, documented in docs/comparison.md)
touch only what no installer writes or runs:

- ``zip-entry-times``: the DOS time and date of both headers become
  1980-01-01 00:00:00 and the time-carrying extra fields (UT ``0x5455``,
  NTFS ``0x000a``, Unix ``0x5855``/``0x000d``) are dropped from both;
- ``zip-entry-order``: the local records (header, data, and any data
  descriptor after it) and the central records are ordered by the entry
  name's bytes;
- ``zip-permission-bits``: for entries made on Unix, the nine rwx bits
  become ``0644``, or ``0755`` when any execute bit is set (what pip
  applies); the file type, setuid/setgid/sticky bits and the low (DOS)
  attribute bytes are kept.

The normalized form is itself a valid zip: every other byte (names,
methods, flags, CRCs, sizes, compressed data, comments, other extra fields,
the end record's disk fields) is copied as stored, and offsets are
recomputed. Compressed bytes are never recompressed, so the form does not
depend on the zlib on this machine and any rebuilder recomputes the same
digest. Archives with zip64 records (or a malformed extra field that the
time rule would have to edit) have no normalized form here.

It streams: memory is one record plus one chunk of data.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from rebuild.compare._blob import Blob, Span
from rebuild.compare._errors import ArchiveFormatError
from rebuild.compare._zip import (
    EXTRA_TIMESTAMP_IDS,
    EXTRA_ZIP64,
    ZipArchive,
    ZipEntry,
    find_eocd,
    parse_zip,
)
from verify.intoto import NORMALIZATION_RULES, NormalizationRule

# The rule each diagnosis cause may be removed by; any other cause rules equivalence out.
RULE_FOR_CAUSE: dict[str, NormalizationRule] = {
    "timestamps": "zip-entry-times",
    "order": "zip-entry-order",
    "permissions": "zip-permission-bits",
}
_DOS_EPOCH = struct.pack("<HH", 0, 0x21)  # 00:00:00, 1980-01-01
_UNIX = 3


@dataclass(frozen=True)
class NormalizedPair:
    """Both sides normalized by the same rules, and the digests of the results."""

    rules: tuple[NormalizationRule, ...]
    expected_sha256: str
    actual_sha256: str

    @property
    def equal(self) -> bool:
        return self.expected_sha256 == self.actual_sha256

    def to_json(self) -> dict[str, object]:
        return {
            "rules": list(self.rules),
            "sha256s": {"expected": self.expected_sha256, "actual": self.actual_sha256},
        }


def _extra_bytes(extra: tuple[tuple[int, bytes], ...] | bytes, drop_times: bool) -> bytes:
    if isinstance(extra, bytes):
        return extra
    return b"".join(
        struct.pack("<HH", fid, len(data)) + data
        for fid, data in extra
        if not (drop_times and fid in EXTRA_TIMESTAMP_IDS)
    )


def _normalizable(z: ZipArchive, rules: frozenset[str]) -> bool:
    if z.zip64:
        return False
    for e in z.entries:
        for extra in (e.extra, e.local_extra):
            if isinstance(extra, bytes):
                if "zip-entry-times" in rules:
                    return False  # cannot drop time fields from an unparsable extra
            elif any(fid == EXTRA_ZIP64 for fid, _ in extra):
                return False
    return True


def _mode(e: ZipEntry, rules: frozenset[str]) -> int:
    if "zip-permission-bits" not in rules or e.version_made_by >> 8 != _UNIX:
        return e.external_attr
    mode = e.external_attr >> 16
    perms = 0o755 if mode & 0o111 else 0o644
    return (((mode & ~0o777) | perms) << 16) | (e.external_attr & 0xFFFF)


def _stream(blob: Blob, z: ZipArchive, rules: frozenset[str]) -> Iterator[bytes]:
    times = "zip-entry-times" in rules
    if "zip-entry-order" in rules:
        physical = sorted(z.entries, key=lambda e: e.raw_name)
        listed = physical
    else:  # as stored: data in file order, the central directory in its own order
        physical = sorted(z.entries, key=lambda e: e.header_offset)
        listed = list(z.entries)
    yield from Span(blob, 0, z.prefix).chunks()
    offset = z.prefix
    centrals: dict[int, bytes] = {}
    for e in physical:
        local_extra = _extra_bytes(e.local_extra, times)
        local = bytearray(e.raw_local)
        if times:
            local[10:14] = _DOS_EPOCH
        struct.pack_into("<H", local, 28, len(local_extra))
        header = bytes(local) + e.raw_name + local_extra
        central_extra = _extra_bytes(e.extra, times)
        central = bytearray(e.raw_central)
        if times:
            central[12:16] = _DOS_EPOCH
        struct.pack_into("<H", central, 30, len(central_extra))
        struct.pack_into("<I", central, 38, _mode(e, rules))
        struct.pack_into("<I", central, 42, offset)
        centrals[e.index] = bytes(central) + e.raw_name + central_extra + e.comment
        yield header
        yield from Span(blob, e.data_offset, e.csize + e.gap).chunks()
        offset += len(header) + e.csize + e.gap
    cd = b"".join(centrals[e.index] for e in listed)
    yield cd
    eocd_at = find_eocd(blob)
    eocd = bytearray(blob.read(eocd_at, 22))
    struct.pack_into("<II", eocd, 12, len(cd), offset)
    yield bytes(eocd) + z.comment


def normalized_chunks(
    data: Blob | bytes, rules: tuple[NormalizationRule, ...]
) -> Iterator[bytes] | None:
    """The normalized form of a zip, in chunks; None when it has none (zip64, ...)."""
    blob = Blob.of(data)
    z = parse_zip(blob)
    active = frozenset(rules)
    if not _normalizable(z, active):
        return None
    return _stream(blob, z, active)


def normalize_pair(expected: Path, actual: Path, causes: tuple[str, ...]) -> NormalizedPair | None:
    """Normalize both zips by exactly the rules their causes call for.

    None when a cause has no rule (content, layout, compression, metadata,
    owners, ...), when a side has no normalized form, or when a side cannot be
    read. The caller decides equivalence from :attr:`NormalizedPair.equal`.
    """
    if not causes or any(c not in RULE_FOR_CAUSE for c in causes):
        return None
    rules = tuple(r for r in NORMALIZATION_RULES if r in {RULE_FOR_CAUSE[c] for c in causes})
    digests: list[str] = []
    for path in (expected, actual):
        try:
            with path.open("rb") as f:
                chunks = normalized_chunks(Blob.open_fd(f.fileno()), rules)
                if chunks is None:
                    return None
                h = hashlib.sha256()
                for piece in chunks:
                    h.update(piece)
        except (ArchiveFormatError, OSError, struct.error):
            return None
        digests.append(h.hexdigest())
    return NormalizedPair(rules, digests[0], digests[1])


def write_normalized(
    source: Path, out: BinaryIO, rules: tuple[NormalizationRule, ...] = NORMALIZATION_RULES
) -> bool:
    """Write ``source``'s normalized form to ``out``; False when it has none."""
    with source.open("rb") as f:
        chunks = normalized_chunks(Blob.open_fd(f.fileno()), rules)
        if chunks is None:
            return False
        for piece in chunks:
            out.write(piece)
    return True
