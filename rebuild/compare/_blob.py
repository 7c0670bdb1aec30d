"""Random access to an artifact's bytes without holding them in memory.

The diagnosis reads headers, central directories and manifests (bounded)
and streams entry data in 1 MiB chunks; nothing maps or reads a whole
archive, so its memory does not grow with the archive's size. A
:class:`Blob` reads a file with ``pread`` or wraps bytes already in memory
(the parsers' tests and fuzzers hand them bytes).
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

CHUNK = 1 << 20


class Blob:
    """Read-only random access to ``size`` bytes."""

    def __init__(self, size: int, fd: int | None = None, data: bytes | None = None) -> None:
        self.size = size
        self._fd = fd
        self._data = data

    @classmethod
    def of(cls, data: Blob | bytes | bytearray | memoryview) -> Blob:
        """A blob over bytes in memory (a Blob is returned unchanged)."""
        if isinstance(data, Blob):
            return data
        raw = bytes(data)
        return cls(len(raw), data=raw)

    @classmethod
    def open_fd(cls, fd: int) -> Blob:
        return cls(os.fstat(fd).st_size, fd=fd)

    def __len__(self) -> int:
        return self.size

    def read(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes at ``offset`` (fewer only at the end of the blob)."""
        if offset < 0 or n < 0:
            raise ValueError("negative offset or length")
        n = max(0, min(n, self.size - offset))
        if self._data is not None:
            return self._data[offset : offset + n]
        assert self._fd is not None
        parts: list[bytes] = []
        got = 0
        while got < n:
            piece = os.pread(self._fd, n - got, offset + got)
            if not piece:
                break  # the file shrank under us; callers check lengths
            parts.append(piece)
            got += len(piece)
        return b"".join(parts)

    def unpack(self, fmt: struct.Struct, offset: int) -> tuple[Any, ...]:
        """``fmt`` unpacked at ``offset``; struct.error when the blob ends first."""
        return fmt.unpack(self.read(offset, fmt.size))

    def chunks(self, offset: int, n: int, chunk: int = CHUNK) -> Iterator[bytes]:
        """The ``n`` bytes at ``offset`` in pieces of at most ``chunk``."""
        end = min(self.size, offset + n)
        for pos in range(offset, end, chunk):
            yield self.read(pos, min(chunk, end - pos))


@dataclass(frozen=True)
class Span:
    """A range of a blob: an entry's compressed bytes, compared without loading them."""

    blob: Blob
    offset: int
    length: int

    def __len__(self) -> int:
        return self.length

    def chunks(self, chunk: int = CHUNK) -> Iterator[bytes]:
        return self.blob.chunks(self.offset, self.length, chunk)

    def bytes(self) -> bytes:
        return self.blob.read(self.offset, self.length)


def spans_equal(a: Span, b: Span) -> bool:
    """Byte equality of two spans, streamed."""
    if a.length != b.length:
        return False
    return all(x == y for x, y in zip(a.chunks(), b.chunks(), strict=True))


def span_digest(span: Span) -> bytes:
    """SHA-256 of a span, streamed."""
    h = hashlib.sha256()
    for piece in span.chunks():
        h.update(piece)
    return h.digest()
