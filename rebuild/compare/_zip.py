"""A strict, bounded zip reader for diagnosis (wheels, zip-based phars).

It reads the end-of-central-directory record (and its zip64 form), every
central-directory record and every local header itself, because
:mod:`zipfile` hides what a reproducibility diagnosis needs (local headers,
extra fields, data descriptors, the exact compressed bytes) and tolerates
what a security tool must not (duplicate names, overlapping entries, a local
name that disagrees with the central one). It never extracts to disk and never
decompresses more than an entry declares.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from rebuild.compare._blob import Blob, Span
from rebuild.compare._decompress import decompress_stream
from rebuild.compare._errors import ZipFormatError

EOCD_SIG = b"PK\x05\x06"
EOCD64_SIG = b"PK\x06\x06"
EOCD64_LOC_SIG = b"PK\x06\x07"
CD_SIG = b"PK\x01\x02"
LOCAL_SIG = b"PK\x03\x04"
DESCRIPTOR_SIG = b"PK\x07\x08"

MAX_ENTRIES = 200_000
MAX_CD_SIZE = 128 << 20
MAX_ENTRY_SIZE = 4 << 30  # uncompressed, per entry
CHUNK = 1 << 20

METHOD_NAMES = {0: "stored", 8: "deflate", 9: "deflate64", 12: "bzip2", 14: "lzma", 93: "zstd"}

# Extra fields by what they carry (APPNOTE 4.5, Info-ZIP extra.fld).
EXTRA_TIMESTAMP_IDS = frozenset({0x5455, 0x000A, 0x5855, 0x000D})  # UT, NTFS, Unix1, PKWARE Unix
EXTRA_OWNER_IDS = frozenset({0x7875, 0x7855})  # Info-ZIP Unix uid/gid
EXTRA_ZIP64 = 0x0001

_EOCD = struct.Struct("<4sHHHHIIH")
_EOCD64_LOC = struct.Struct("<4sIQI")
_EOCD64 = struct.Struct("<4sQHHIIQQQQ")
_CD = struct.Struct("<4sHHHHHHIIIHHHHHII")
_LOCAL = struct.Struct("<4sHHHHHIIIHH")


@dataclass(frozen=True)
class ZipEntry:
    index: int
    name: str
    version_made_by: int
    version_needed: int
    flags: int
    method: int
    dos_time: int
    dos_date: int
    crc: int
    csize: int
    usize: int
    extra: tuple[tuple[int, bytes], ...] | bytes  # parsed, or raw if malformed
    comment: bytes
    internal_attr: int
    external_attr: int
    header_offset: int
    local_version: int
    local_flags: int
    local_method: int
    local_time: int
    local_date: int
    local_extra: tuple[tuple[int, bytes], ...] | bytes
    data_offset: int
    gap: int  # bytes after the data up to the next record (data descriptor, padding)
    # The records as stored (fixed parts, the name): normalization copies them.
    raw_name: bytes = b""
    raw_central: bytes = b""  # the 46-byte fixed part of the central record
    raw_local: bytes = b""  # the 30-byte fixed part of the local header


@dataclass(frozen=True)
class ZipArchive:
    entries: tuple[ZipEntry, ...]
    comment: bytes
    prefix: int  # bytes before the first local header
    cd_offset: int
    zip64: bool

    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.entries)


def _parse_extra(raw: bytes) -> tuple[tuple[int, bytes], ...] | bytes:
    fields: list[tuple[int, bytes]] = []
    i = 0
    while i < len(raw):
        if i + 4 > len(raw):
            return raw
        fid, n = struct.unpack_from("<HH", raw, i)
        if i + 4 + n > len(raw):
            return raw
        fields.append((fid, raw[i + 4 : i + 4 + n]))
        i += 4 + n
    return tuple(fields)


def _zip64_values(
    extra: tuple[tuple[int, bytes], ...] | bytes, usize: int, csize: int, offset: int
) -> tuple[int, int, int]:
    if isinstance(extra, bytes):
        return usize, csize, offset
    for fid, data in extra:
        if fid != EXTRA_ZIP64:
            continue
        vals = [usize, csize, offset]
        pos = 0
        for k in range(3):
            if vals[k] == 0xFFFFFFFF:
                if pos + 8 > len(data):
                    raise ZipFormatError("zip64 extra field is too short")
                (vals[k],) = struct.unpack_from("<Q", data, pos)
                pos += 8
        return vals[0], vals[1], vals[2]
    return usize, csize, offset


def find_eocd(buf: Blob) -> int:
    n = len(buf)
    if n < _EOCD.size:
        raise ZipFormatError("too short to be a zip file")
    start = max(0, n - _EOCD.size - 0xFFFF)
    tail = buf.read(start, n - start)
    pos = len(tail)
    while True:
        pos = tail.rfind(EOCD_SIG, 0, pos)
        if pos < 0:
            raise ZipFormatError("no end-of-central-directory record")
        if pos + _EOCD.size <= len(tail):
            (comment_len,) = struct.unpack_from("<H", tail, pos + 20)
            if pos + _EOCD.size + comment_len == len(tail):
                return start + pos


def _decode_name(raw: bytes, flags: int) -> str:
    if flags & 0x800:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ZipFormatError("an entry name flagged UTF-8 is not valid UTF-8") from None
    return raw.decode("cp437")


def parse_zip(data: Blob | bytes | memoryview) -> ZipArchive:
    """Parse a zip (a file's :class:`Blob`, or bytes); ZipFormatError if malformed.

    Reads the end records, the central directory (at most MAX_CD_SIZE bytes)
    and each local header; entry data is not read.
    """
    try:
        return _parse_zip(Blob.of(data))
    except struct.error as e:
        raise ZipFormatError(f"truncated record: {e}") from None


@dataclass(frozen=True)
class _End:
    """The end of central directory record (zip64's when there is one), checked."""

    comment: bytes
    zip64: bool
    cd_end: int  # where the central directory must end: the end record's offset
    n_total: int
    cd_size: int
    cd_offset: int


@dataclass(frozen=True)
class _Local:
    """One local file header, checked against its central record."""

    version: int
    flags: int
    method: int
    time: int
    date: int
    extra: tuple[tuple[int, bytes], ...] | bytes
    data_offset: int
    raw: bytes


def _parse_zip(buf: Blob) -> ZipArchive:
    end = _end_record(buf)
    # The central directory is read once (bounded by _end_record); positions
    # are file offsets, ``cd`` is indexed relative to cd_offset.
    cd = buf.read(end.cd_offset, end.cd_size)
    if len(cd) != end.cd_size:
        raise ZipFormatError("truncated")
    pos = end.cd_offset
    entries: list[ZipEntry] = []
    seen: set[str] = set()
    for index in range(end.n_total):
        entry, pos = _central_record(buf, cd, end, pos, index=index, seen=seen)
        entries.append(entry)
    if pos != end.cd_end:
        raise ZipFormatError("central directory has trailing bytes")
    gaps, prefix = _gaps(entries, end.cd_offset)
    if len(buf) < end.cd_end:
        raise ZipFormatError("truncated")
    final = tuple(
        ZipEntry(**{**e.__dict__, "gap": gaps[e.index]}) for e in entries
    )  # frozen: rebuild with gaps
    return ZipArchive(
        entries=final, comment=end.comment, prefix=prefix, cd_offset=end.cd_offset, zip64=end.zip64
    )


def _end_record(buf: Blob) -> _End:
    """Find and check the end record: one disk, bounded entries and directory size."""
    eocd = find_eocd(buf)
    _, disk, cd_disk, n_disk, n_total, cd_size, cd_offset, comment_len = buf.unpack(_EOCD, eocd)
    comment = buf.read(eocd + _EOCD.size, comment_len)
    zip64 = False
    cd_end = eocd
    if eocd >= _EOCD64_LOC.size and buf.read(eocd - 20, 4) == EOCD64_LOC_SIG:
        _, _, eocd64_off, _ = buf.unpack(_EOCD64_LOC, eocd - 20)
        if eocd64_off + _EOCD64.size > eocd - 20:
            raise ZipFormatError("zip64 end record points outside the file")
        rec = buf.unpack(_EOCD64, eocd64_off)
        if rec[0] != EOCD64_SIG:
            raise ZipFormatError("zip64 end record has a bad signature")
        _, _, _, _, disk, cd_disk, n_disk, n_total, cd_size, cd_offset = rec
        zip64 = True
        cd_end = eocd64_off
    if disk != 0 or cd_disk != 0 or n_disk != n_total:
        raise ZipFormatError("multi-disk zip files are not supported")
    if n_total > MAX_ENTRIES:
        raise ZipFormatError(f"{n_total} entries exceed the {MAX_ENTRIES}-entry limit")
    if cd_size > MAX_CD_SIZE:
        raise ZipFormatError(f"central directory of {cd_size} bytes exceeds the limit")
    if cd_offset + cd_size != cd_end:
        raise ZipFormatError("central directory does not end where the end record begins")
    return _End(comment, zip64, cd_end, n_total, cd_size, cd_offset)


def _central_record(
    buf: Blob, cd: bytes, end: _End, pos: int, *, index: int, seen: set[str]
) -> tuple[ZipEntry, int]:
    """The entry whose central record starts at file offset ``pos``, and where the next starts.

    Its name is added to ``seen`` (names seen before it) unless it is there already.
    """
    if pos + _CD.size > end.cd_end:
        raise ZipFormatError("central directory is truncated")
    raw_central = cd[pos - end.cd_offset : pos - end.cd_offset + _CD.size]
    rec = _CD.unpack_from(cd, pos - end.cd_offset)
    if rec[0] != CD_SIG:
        raise ZipFormatError(f"central directory record {index} has a bad signature")
    _, made_by, needed, flags, method, mtime, mdate, crc, csize, usize = rec[:10]
    name_len, extra_len, comment_len, _disk_start, internal_attr, external_attr = rec[10:16]
    (header_offset,) = struct.unpack_from("<I", cd, pos - end.cd_offset + 42)
    p = pos + 46
    if p + name_len + extra_len + comment_len > end.cd_end:
        raise ZipFormatError(f"central directory record {index} runs past its end")
    q = p - end.cd_offset
    raw_name = cd[q : q + name_len]
    extra = _parse_extra(cd[q + name_len : q + name_len + extra_len])
    ecomment = cd[q + name_len + extra_len : q + name_len + extra_len + comment_len]
    next_pos = p + name_len + extra_len + comment_len
    usize, csize, header_offset = _zip64_values(extra, usize, csize, header_offset)
    name = _decode_name(raw_name, flags)
    if name in seen:
        raise ZipFormatError(f"duplicate entry name {name!r}")
    seen.add(name)
    if flags & 0x1:
        raise ZipFormatError(f"{name}: encrypted entries are not supported")
    if usize > MAX_ENTRY_SIZE:
        raise ZipFormatError(f"{name}: {usize} bytes uncompressed exceeds the limit")
    local = _local_header(
        buf, name, raw_name, header_offset=header_offset, csize=csize, cd_offset=end.cd_offset
    )
    entry = ZipEntry(
        index=index,
        name=name,
        version_made_by=made_by,
        version_needed=needed,
        flags=flags,
        method=method,
        dos_time=mtime,
        dos_date=mdate,
        crc=crc,
        csize=csize,
        usize=usize,
        extra=extra,
        comment=ecomment,
        internal_attr=internal_attr,
        external_attr=external_attr,
        header_offset=header_offset,
        local_version=local.version,
        local_flags=local.flags,
        local_method=local.method,
        local_time=local.time,
        local_date=local.date,
        local_extra=local.extra,
        data_offset=local.data_offset,
        gap=0,
        raw_name=raw_name,
        raw_central=raw_central,
        raw_local=local.raw,
    )
    return entry, next_pos


def _local_header(
    buf: Blob, name: str, raw_name: bytes, *, header_offset: int, csize: int, cd_offset: int
) -> _Local:
    """The local header at ``header_offset``: same name, its data before the directory."""
    if header_offset + _LOCAL.size > cd_offset:
        raise ZipFormatError(f"{name}: local header offset points past the data area")
    raw_local = buf.read(header_offset, _LOCAL.size)
    loc = _LOCAL.unpack(raw_local)
    if loc[0] != LOCAL_SIG:
        raise ZipFormatError(f"{name}: local header has a bad signature")
    _, lver, lflags, lmethod, ltime, ldate, _, _, _, lname_len, lextra_len = loc
    lp = header_offset + _LOCAL.size
    if lp + lname_len + lextra_len > cd_offset:
        raise ZipFormatError(f"{name}: local header runs into the central directory")
    local = buf.read(lp, lname_len + lextra_len)
    if local[:lname_len] != raw_name:
        raise ZipFormatError(f"{name}: local header names a different file")
    local_extra = _parse_extra(local[lname_len:])
    data_offset = lp + lname_len + lextra_len
    if data_offset + csize > cd_offset:
        raise ZipFormatError(f"{name}: compressed data runs into the central directory")
    return _Local(lver, lflags, lmethod, ltime, ldate, local_extra, data_offset, raw_local)


def _gaps(entries: list[ZipEntry], cd_offset: int) -> tuple[dict[int, int], int]:
    """Bytes between each entry and the next (by index), and where the first one starts.

    Entries must not overlap (overlap is how zip bombs and confusion attacks work).
    """
    gaps: dict[int, int] = {}
    ordered = sorted((e.header_offset, e.data_offset + e.csize, e.index) for e in entries)
    for k, (_start, end, index) in enumerate(ordered):
        nxt = ordered[k + 1][0] if k + 1 < len(ordered) else cd_offset
        if end > nxt:
            raise ZipFormatError(f"{entries[index].name}: entry overlaps the next one")
        gaps[index] = nxt - end
    prefix = ordered[0][0] if ordered else cd_offset
    return gaps, prefix


def raw_data(buf: Blob | bytes | memoryview, entry: ZipEntry) -> Span:
    """The entry's compressed bytes (a span of the archive, not read yet)."""
    return Span(Blob.of(buf), entry.data_offset, entry.csize)


def can_decompress(entry: ZipEntry) -> bool:
    return entry.method in (0, 8, 12)


def iter_content(buf: Blob | bytes | memoryview, entry: ZipEntry) -> Iterator[bytes]:
    """Yield the uncompressed bytes in chunks; check size and CRC32 at the end."""
    pieces: Iterator[bytes] = raw_data(buf, entry).chunks(CHUNK)
    if entry.method == 0:
        if entry.csize != entry.usize:
            raise ZipFormatError(f"{entry.name}: stored entry sizes disagree")
        out = pieces
    elif entry.method in (8, 12):
        out = decompress_stream(
            pieces,
            "deflate" if entry.method == 8 else "bzip2",
            limit=entry.usize,
            what=entry.name,
            error=ZipFormatError,
        )
    else:
        raise ZipFormatError(f"{entry.name}: compression method {entry.method} not supported")
    total = 0
    crc = 0
    for piece in out:
        total += len(piece)
        crc = zlib.crc32(piece, crc)
        yield piece
    if total != entry.usize:
        raise ZipFormatError(f"{entry.name}: {total} bytes, but {entry.usize} declared")
    if crc != entry.crc:
        raise ZipFormatError(f"{entry.name}: CRC-32 does not match its content")
