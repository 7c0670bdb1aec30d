"""A strict, bounded reader for native PHAR archives (no PHP, no unserialize).

Layout (docs/comparison.md has the field table): a PHP stub ending in
``__HALT_COMPILER();`` (optionally `` ?>`` and a newline), a little-endian
manifest (length, entry count, big-endian API version, global flags, alias,
serialized metadata, one record per entry), the entries' data in manifest
order, and, when the global signature flag is set, a trailer
``signature [length] flags "GBMB"``.

Metadata is PHP-serialized data: it is kept as opaque bytes and compared as
bytes, never unserialized (unserialize on attacker bytes is how phar://
deserialization attacks work). Nothing in the stub is executed or
interpreted beyond locating the halt token. Every length is checked against
the bytes actually present and against fixed caps before it is used.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from rebuild.compare._blob import Blob, Span
from rebuild.compare._decompress import decompress_stream
from rebuild.compare._errors import PharFormatError

HALT_TOKEN = b"__HALT_COMPILER();"
GBMB = b"GBMB"

MAX_STUB = 16 << 20  # where the halt token may be found
MAX_MANIFEST = 100 << 20
MAX_ENTRIES = 200_000
MAX_NAME = 4096
MAX_METADATA = 16 << 20
MAX_ENTRY_SIZE = 4 << 30
MAX_OPENSSL_SIG = 64 << 10
MIN_ENTRY_RECORD = 24  # name length + five u32 fields + metadata length

# Global flags (php-src ext/phar/phar_internal.h names in comments).
HDR_COMPRESSED_GZ = 0x00001000  # PHAR_HDR_COMPRESSED_GZ: some entry is gz (derived)
HDR_COMPRESSED_BZ2 = 0x00002000  # PHAR_HDR_COMPRESSED_BZ2: some entry is bz2 (derived)
HDR_SIGNATURE = 0x00010000  # PHAR_HDR_SIGNATURE
# Entry flags.
ENT_PERM_MASK = 0x000001FF
ENT_COMPRESSED_GZ = 0x00001000
ENT_COMPRESSED_BZ2 = 0x00002000
ENT_COMPRESSION_MASK = 0x0000F000

SIG_MD5 = 0x0001
SIG_SHA1 = 0x0002
SIG_SHA256 = 0x0003
SIG_SHA512 = 0x0004
SIG_OPENSSL = 0x0010
SIG_OPENSSL_SHA256 = 0x0011
SIG_OPENSSL_SHA512 = 0x0012
HASH_SIGS = {SIG_MD5: "md5", SIG_SHA1: "sha1", SIG_SHA256: "sha256", SIG_SHA512: "sha512"}
OPENSSL_SIGS = {
    SIG_OPENSSL: "openssl",
    SIG_OPENSSL_SHA256: "openssl-sha256",
    SIG_OPENSSL_SHA512: "openssl-sha512",
}


@dataclass(frozen=True)
class PharEntry:
    name: str
    usize: int
    timestamp: int
    csize: int
    crc: int
    flags: int
    metadata: bytes
    data_offset: int

    @property
    def permissions(self) -> int:
        return self.flags & ENT_PERM_MASK

    @property
    def compression(self) -> int:
        return self.flags & ENT_COMPRESSION_MASK


@dataclass(frozen=True)
class PharSignature:
    flags: int
    algorithm: str
    value: bytes
    covered: int  # bytes [0, covered) are signed
    valid: bool | None  # None: cannot be checked here (OpenSSL needs the public key)


@dataclass(frozen=True)
class Phar:
    stub: bytes
    manifest_offset: int
    api_version: int
    global_flags: int
    alias: bytes
    metadata: bytes
    entries: tuple[PharEntry, ...]
    signature: PharSignature | None

    @property
    def api_version_text(self) -> str:
        v = self.api_version
        return f"{v >> 12}.{(v >> 8) & 0xF}.{(v >> 4) & 0xF}"


class _Reader:
    """Bounds-checked little-endian reads inside [pos, end) of the manifest.

    ``data`` holds the manifest bytes (at most MAX_MANIFEST) starting at file
    offset ``base``; positions are file offsets."""

    def __init__(self, data: bytes, base: int, pos: int, end: int) -> None:
        self.data, self.base, self.pos, self.end = data, base, pos, end

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise PharFormatError(f"manifest truncated reading {what}")
        out = self.data[self.pos - self.base : self.pos - self.base + n]
        self.pos += n
        return out

    def u32(self, what: str) -> int:
        value: int = struct.unpack("<I", self.take(4, what))[0]
        return value


def find_manifest(data: Blob | bytes | memoryview) -> tuple[bytes, int]:
    """Return (stub, manifest offset): the stub ends after the halt token,
    an optional `` ?>`` (or ``\\n?>``) and an optional ``\\r\\n`` or ``\\n``."""
    head = Blob.of(data).read(0, MAX_STUB + len(HALT_TOKEN) + 5)
    idx = head.find(HALT_TOKEN)
    if idx < 0:
        raise PharFormatError(f"no {HALT_TOKEN.decode()} within the first {MAX_STUB} bytes")
    pos = idx + len(HALT_TOKEN)
    if head[pos : pos + 3] in (b" ?>", b"\n?>"):
        pos += 3
        if head[pos : pos + 2] == b"\r\n":
            pos += 2
        elif head[pos : pos + 1] == b"\n":
            pos += 1
    return head[:pos], pos


def parse_phar(data: Blob | bytes | memoryview, *, verify_signature: bool = True) -> Phar:
    """Parse a native phar; PharFormatError if anything is malformed or out of bounds.

    Reads the stub (at most MAX_STUB) and the manifest (at most MAX_MANIFEST);
    entry data is only streamed, for the signature check.
    """
    buf = Blob.of(data)
    size = len(buf)
    stub, moff = find_manifest(buf)
    if moff + 4 > size:
        raise PharFormatError("file ends before the manifest length")
    (mlen,) = struct.unpack("<I", buf.read(moff, 4))
    if mlen > MAX_MANIFEST:
        raise PharFormatError(f"manifest length {mlen} exceeds the {MAX_MANIFEST}-byte limit")
    mend = moff + 4 + mlen
    if mend > size:
        raise PharFormatError("manifest length runs past the end of the file")
    r = _Reader(buf.read(moff + 4, mlen), moff + 4, moff + 4, mend)
    count = r.u32("entry count")
    if count > MAX_ENTRIES or count * MIN_ENTRY_RECORD > mlen:
        raise PharFormatError(f"entry count {count} is impossible for a {mlen}-byte manifest")
    ver = r.take(2, "API version")
    api = ((ver[0] << 8) | ver[1]) & 0xFFF0
    if api >> 12 != 1:
        raise PharFormatError(f"unsupported manifest API version {api:#06x}")
    gflags = r.u32("global flags")
    alias_len = r.u32("alias length")
    if alias_len > MAX_NAME:
        raise PharFormatError(f"alias of {alias_len} bytes exceeds the limit")
    alias = r.take(alias_len, "alias")
    meta_len = r.u32("metadata length")
    if meta_len > MAX_METADATA:
        raise PharFormatError(f"metadata of {meta_len} bytes exceeds the limit")
    metadata = r.take(meta_len, "metadata")
    entries: list[PharEntry] = []
    seen: set[str] = set()
    offset = mend
    for i in range(count):
        entry = _entry(r, i, seen, offset=offset, size=size)
        entries.append(entry)
        offset += entry.csize
    if r.pos != mend:
        raise PharFormatError(f"{mend - r.pos} unexplained bytes at the end of the manifest")
    signature = _signature(buf, gflags, verify_signature)
    end = signature.value_offset if signature else size
    if offset != end:
        raise PharFormatError(
            f"entry data ends at {offset} but the {'signature' if signature else 'file'} "
            f"starts at {end}"
        )
    return Phar(
        stub=stub,
        manifest_offset=moff,
        api_version=api,
        global_flags=gflags,
        alias=alias,
        metadata=metadata,
        entries=tuple(entries),
        signature=signature.sig if signature else None,
    )


def _entry(r: _Reader, i: int, seen: set[str], *, offset: int, size: int) -> PharEntry:
    """Manifest entry ``i``, its data at ``offset`` in a file of ``size`` bytes.

    Its name is added to ``seen`` (the names before it) unless it is there already.
    """
    name_len = r.u32(f"entry {i} name length")
    if name_len == 0 or name_len > MAX_NAME:
        raise PharFormatError(f"entry {i}: name length {name_len} out of range")
    raw_name = r.take(name_len, f"entry {i} name")
    try:
        name = raw_name.decode("utf-8")
    except UnicodeDecodeError:
        raise PharFormatError(f"entry {i}: name is not UTF-8") from None
    if "\x00" in name:
        raise PharFormatError(f"entry {i}: name contains NUL")
    if name in seen:
        raise PharFormatError(f"duplicate entry name {name!r}")
    seen.add(name)
    usize = r.u32(f"{name}: size")
    timestamp = r.u32(f"{name}: timestamp")
    csize = r.u32(f"{name}: compressed size")
    crc = r.u32(f"{name}: CRC-32")
    flags = r.u32(f"{name}: flags")
    emeta_len = r.u32(f"{name}: metadata length")
    if emeta_len > MAX_METADATA:
        raise PharFormatError(f"{name}: metadata of {emeta_len} bytes exceeds the limit")
    emeta = r.take(emeta_len, f"{name}: metadata")
    comp = flags & ENT_COMPRESSION_MASK
    if comp not in (0, ENT_COMPRESSED_GZ, ENT_COMPRESSED_BZ2):
        raise PharFormatError(f"{name}: unknown compression flags {comp:#x}")
    if comp == 0 and csize != usize:
        raise PharFormatError(f"{name}: uncompressed entry with differing sizes")
    if usize > MAX_ENTRY_SIZE:
        raise PharFormatError(f"{name}: {usize} bytes exceeds the entry limit")
    if offset + csize > size:
        raise PharFormatError(f"{name}: data runs past the end of the file")
    return PharEntry(name, usize, timestamp, csize, crc, flags, emeta, offset)


@dataclass(frozen=True)
class _SigAt:
    sig: PharSignature
    value_offset: int


def _signature(buf: Blob, gflags: int, verify: bool) -> _SigAt | None:
    size = len(buf)
    if not gflags & HDR_SIGNATURE:
        return None
    if size < 8 or buf.read(size - 4, 4) != GBMB:
        raise PharFormatError("signature flag set but no GBMB trailer")
    (sflags,) = struct.unpack("<I", buf.read(size - 8, 4))
    if sflags in HASH_SIGS:
        algo = HASH_SIGS[sflags]
        n = hashlib.new(algo).digest_size
        start = size - 8 - n
        if start < 0:
            raise PharFormatError("signature trailer runs past the start of the file")
        value = buf.read(start, n)
        valid: bool | None = None
        if verify:
            h = hashlib.new(algo)
            for piece in buf.chunks(0, start):
                h.update(piece)
            valid = h.digest() == value
        return _SigAt(PharSignature(sflags, algo, value, start, valid), start)
    if sflags in OPENSSL_SIGS:
        if size < 12:
            raise PharFormatError("OpenSSL signature trailer is truncated")
        (n,) = struct.unpack("<I", buf.read(size - 12, 4))
        if n == 0 or n > MAX_OPENSSL_SIG or n > size - 12:
            raise PharFormatError(f"OpenSSL signature length {n} out of range")
        start = size - 12 - n
        value = buf.read(start, n)
        return _SigAt(PharSignature(sflags, OPENSSL_SIGS[sflags], value, start, None), start)
    raise PharFormatError(f"unknown signature algorithm flag {sflags:#x}")


def entry_data(buf: Blob | bytes | memoryview, e: PharEntry) -> Span:
    """The entry's stored (possibly compressed) bytes, as a span of the archive."""
    return Span(Blob.of(buf), e.data_offset, e.csize)


def iter_entry(buf: Blob | bytes | memoryview, e: PharEntry) -> Iterator[bytes]:
    """Yield an entry's uncompressed bytes; size and CRC-32 are checked at the end."""
    pieces: Iterator[bytes] = entry_data(buf, e).chunks()
    if e.compression == ENT_COMPRESSED_GZ:
        pieces = decompress_stream(
            pieces, "deflate", limit=e.usize, what=e.name, error=PharFormatError
        )
    elif e.compression == ENT_COMPRESSED_BZ2:
        pieces = decompress_stream(
            pieces, "bzip2", limit=e.usize, what=e.name, error=PharFormatError
        )
    total = 0
    crc = 0
    for piece in pieces:
        total += len(piece)
        crc = zlib.crc32(piece, crc)
        yield piece
    if total != e.usize:
        raise PharFormatError(f"{e.name}: {total} bytes, but {e.usize} declared")
    if crc != e.crc:
        raise PharFormatError(f"{e.name}: CRC-32 does not match its content")
