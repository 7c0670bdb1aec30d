"""Adapt a parsed zip to the neutral diagnosis model (see _view.Entry).

Which zip field counts as what is decided here, once: DOS time/date and the
time-carrying extra fields are timestamps; the creating system, external
attributes and uid/gid extra fields are permissions; the method and the
deflate-option flag bits are compression; comments, the UTF-8 flag, the
internal attributes and unknown extra fields are metadata; the data-descriptor
flag, zip64 fields and inter-entry gaps are layout, and so are the zip spec
versions, but only when the method is the same (the method dictates them).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator

from rebuild.compare._blob import Blob, Span, span_digest
from rebuild.compare._view import ArchiveView, Entry
from rebuild.compare._zip import (
    EXTRA_OWNER_IDS,
    EXTRA_TIMESTAMP_IDS,
    EXTRA_ZIP64,
    METHOD_NAMES,
    ZipEntry,
    iter_content,
    parse_zip,
    raw_data,
)

_COMPRESSION_FLAGS = 0x6
_UTF8_FLAG = 0x800


def _pick(extra: tuple[tuple[int, bytes], ...] | bytes, ids: frozenset[int]) -> tuple[object, ...]:
    if isinstance(extra, bytes):
        return ()
    return tuple(f for f in extra if f[0] in ids)


def _other(extra: tuple[tuple[int, bytes], ...] | bytes) -> tuple[object, ...]:
    if isinstance(extra, bytes):
        return (extra,)
    known = EXTRA_TIMESTAMP_IDS | EXTRA_OWNER_IDS | {EXTRA_ZIP64}
    return tuple(f for f in extra if f[0] not in known)


def dos_datetime(date: int, time: int) -> str:
    y, mo, d = 1980 + (date >> 9), (date >> 5) & 0xF, date & 0x1F
    h, mi, s = time >> 11, (time >> 5) & 0x3F, (time & 0x1F) * 2
    try:
        return datetime.datetime(y, mo, d, h, mi, s).isoformat()
    except ValueError:
        return f"invalid DOS date/time {date:#06x}/{time:#06x}"


def _show_perm(e: ZipEntry) -> str:
    system = e.version_made_by >> 8
    if system == 3:
        return f"unix {e.external_attr >> 16:07o} (external {e.external_attr:#010x})"
    return f"system {system} external {e.external_attr:#010x}"


def _entry(e: ZipEntry) -> Entry:
    ts = (
        e.dos_date,
        e.dos_time,
        e.local_date,
        e.local_time,
        _pick(e.extra, EXTRA_TIMESTAMP_IDS),
        _pick(e.local_extra, EXTRA_TIMESTAMP_IDS),
    )
    extra_ts = " +extended" if ts[4] or ts[5] else ""
    return Entry(
        name=e.name,
        timestamps=ts,
        permissions=(
            e.version_made_by >> 8,
            e.external_attr,
            _pick(e.extra, EXTRA_OWNER_IDS),
            _pick(e.local_extra, EXTRA_OWNER_IDS),
        ),
        compression=(
            e.method,
            e.local_method,
            e.flags & _COMPRESSION_FLAGS,
            e.local_flags & _COMPRESSION_FLAGS,
        ),
        metadata=(
            e.flags & _UTF8_FLAG,
            e.local_flags & _UTF8_FLAG,
            e.comment,
            e.internal_attr,
            _other(e.extra),
            _other(e.local_extra),
        ),
        layout=(
            e.flags & ~(_COMPRESSION_FLAGS | _UTF8_FLAG),
            e.local_flags & ~(_COMPRESSION_FLAGS | _UTF8_FLAG),
            _pick(e.extra, frozenset({EXTRA_ZIP64})),
            _pick(e.local_extra, frozenset({EXTRA_ZIP64})),
            e.gap,
        ),
        derived=(e.version_made_by & 0xFF, e.version_needed, e.local_version),
        show_time=dos_datetime(e.dos_date, e.dos_time) + extra_ts,
        show_perm=_show_perm(e),
        show_comp=f"{METHOD_NAMES.get(e.method, str(e.method))} (flags {e.flags & 6:#x})",
        size=e.usize,
        stored=e.csize,
    )


def zip_view(buf: Blob, fmt: str) -> ArchiveView:
    z = parse_zip(buf)
    by_name = {e.name: e for e in z.entries}

    def raw(name: str) -> tuple[object, Span] | None:
        e = by_name[name]
        return (e.method, raw_data(buf, e))

    def content(name: str) -> Iterator[bytes]:
        return iter_content(buf, by_name[name])

    return ArchiveView(
        format=fmt,
        entries=tuple(_entry(e) for e in z.entries),
        raw=raw,
        content=content,
        fields={
            "zip comment": ("metadata", z.comment, repr(z.comment[:80])),
            "bytes before the first entry": (
                "layout",
                span_digest(Span(buf, 0, z.prefix)),
                f"{z.prefix} bytes",
            ),
            "zip64 end records": ("layout", z.zip64, str(z.zip64)),
        },
        physical_order=tuple(e.name for e in sorted(z.entries, key=lambda x: x.header_offset)),
    )
