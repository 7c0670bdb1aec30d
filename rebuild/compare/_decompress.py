"""Bounded streaming decompression shared by the zip, phar and tar readers.

Output is produced in chunks and never exceeds the caller's limit, so a
decompression bomb costs at most ``limit`` bytes of work and one chunk of
memory. Corrupt streams become the caller's typed error.
"""

from __future__ import annotations

import bz2
import zlib
from collections.abc import Iterable, Iterator
from typing import Literal

from rebuild.compare._errors import ArchiveFormatError

CHUNK = 1 << 20
Codec = Literal["deflate", "zlib", "gzip", "bzip2"]


def decompress_stream(
    chunks: Iterable[bytes],
    codec: Codec,
    *,
    limit: int,
    what: str,
    error: type[ArchiveFormatError],
    allow_trailing: bool = False,
    limit_error: type[ArchiveFormatError] | None = None,
) -> Iterator[bytes]:
    """Yield the decompressed form of ``chunks``, at most ``limit`` bytes in all.

    Going past ``limit`` raises ``limit_error`` (default ``error``)."""
    total = 0

    def take(piece: bytes) -> bytes:
        nonlocal total
        total += len(piece)
        if total > limit:
            raise (limit_error or error)(f"{what}: decompresses to more than {limit} bytes")
        return piece

    try:
        if codec == "bzip2":
            b = bz2.BZ2Decompressor()
            for chunk in chunks:
                if b.eof:
                    if chunk and not allow_trailing:
                        raise error(f"{what}: data after the end of the compressed stream")
                    continue
                out = b.decompress(chunk, CHUNK)
                yield take(out)
                while not b.eof and not b.needs_input:
                    yield take(b.decompress(b"", CHUNK))
            if not b.eof:
                raise error(f"{what}: compressed stream is truncated")
            if b.unused_data and not allow_trailing:
                raise error(f"{what}: data after the end of the compressed stream")
            return
        wbits = {"deflate": -15, "zlib": 15, "gzip": 31}[codec]
        d = zlib.decompressobj(wbits)
        for chunk in chunks:
            if d.eof:
                if chunk and not allow_trailing:
                    raise error(f"{what}: data after the end of the compressed stream")
                continue
            data = chunk
            while data:
                yield take(d.decompress(data, CHUNK))
                data = d.unconsumed_tail
                if d.eof:
                    break
        if not d.eof:
            # Output may still be pending from the last bounded call.
            yield take(d.flush())
        if not d.eof:
            raise error(f"{what}: compressed stream is truncated")
        if d.unused_data and not allow_trailing:
            raise error(f"{what}: data after the end of the compressed stream")
    except (zlib.error, OSError, EOFError, ValueError) as e:
        raise error(f"{what}: cannot decompress: {e}") from None
