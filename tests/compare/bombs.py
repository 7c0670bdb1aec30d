"""Real decompression bombs, made quickly: zips whose entries inflate to gigabytes.

Compressing gigabytes of zeros would take the test minutes, so the streams
are assembled instead: a raw deflate block that zlib emits for 1 MiB of one
byte value after a full flush does not depend on what came before, so N
copies of it followed by an empty final block are a valid deflate stream of
N MiB. bzip2 streams are made by bz2 itself (it squeezes 256 MiB of zeros
into about 200 bytes in 2 s) and reused for every entry. CRC-32s and sizes
are the true ones, so every reader (zipfile, unzip, diffoscope) accepts the
archives: they are real bombs, not malformed files.
"""

from __future__ import annotations

import bz2
import functools
import struct
import zlib
from pathlib import Path

MiB = 1 << 20


@functools.cache
def _deflate_block(fill: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(bytes([fill]) * MiB) + c.flush(zlib.Z_FULL_FLUSH)


def deflate_stream(mib: int, fill: int = 0) -> bytes:
    """A raw deflate stream of ``mib`` MiB of byte ``fill`` (about 1 KB per MiB)."""
    return _deflate_block(fill) * mib + zlib.compressobj(9, zlib.DEFLATED, -15).flush()


@functools.cache
def bzip2_stream(mib: int, fill: int = 0) -> bytes:
    """A bzip2 stream of ``mib`` MiB of byte ``fill`` (a few hundred bytes)."""
    c = bz2.BZ2Compressor(9)
    block = bytes([fill]) * (64 * MiB)
    out = b"".join(c.compress(block) for _ in range(mib // 64))
    return out + c.compress(bytes([fill]) * (mib % 64 * MiB)) + c.flush()


@functools.cache
def crc_of(mib: int, fill: int = 0) -> int:
    block = bytes([fill]) * MiB
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(block, crc)
    return crc


def write_zip(path: Path, entries: list[tuple[str, int, bytes, int, int]]) -> Path:
    """Write a zip of (name, method, compressed stream, uncompressed size, crc) entries.

    Sizes up to 4 GiB - 1 fit the classic headers; the bombs here stay below.
    """
    out = bytearray()
    central = bytearray()
    for name, method, stream, usize, crc in entries:
        raw = name.encode()
        offset = len(out)
        version = 46 if method == 12 else 20
        out += struct.pack(
            "<4sHHHHHIIIHH", b"PK\x03\x04", version, 0, method, 0, 0x21,
            crc, len(stream), usize, len(raw), 0,
        )  # fmt: skip
        out += raw + stream
        central += struct.pack(
            "<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 0x0300 | version, version, 0, method, 0,
            0x21, crc, len(stream), usize, len(raw), 0, 0, 0, 0, 0o100644 << 16, offset,
        )  # fmt: skip
        central += raw
    eocd = struct.pack(
        "<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(out), 0
    )
    path.write_bytes(bytes(out + central + eocd))
    return path


def deflate_bomb(path: Path, mib: int, *, fill: int = 0, name: str = "bomb.bin") -> Path:
    """One deflate entry of ``mib`` MiB (1000x: about 1 KB of archive per MiB)."""
    return write_zip(path, [(name, 8, deflate_stream(mib, fill), mib * MiB, crc_of(mib, fill))])


def bzip2_bomb(path: Path, mib: int, count: int, *, fill: int = 0) -> Path:
    """``count`` bzip2 entries of ``mib`` MiB each (a few hundred bytes apiece)."""
    stream = bzip2_stream(mib, fill)
    crc = crc_of(mib, fill)
    return write_zip(path, [(f"bomb{i}.bin", 12, stream, mib * MiB, crc) for i in range(count)])
