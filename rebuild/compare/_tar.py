"""Tar archives (tar-based phars, sdists) adapted to the neutral diagnosis model.

Headers are read with :mod:`tarfile` over an in-memory view (nothing is
extracted, no member is opened as a path); member data is compared straight
from the archive bytes. Counts and sizes are bounded, and every exception
tarfile can raise on hostile input becomes a :class:`TarFormatError`.
"""

from __future__ import annotations

import datetime
import io
import struct
import tarfile
from collections.abc import Iterator

from rebuild.compare._blob import Blob, Span
from rebuild.compare._errors import TarFormatError
from rebuild.compare._view import ArchiveView, Entry

MAX_ENTRIES = 200_000
MAX_PAX_VALUE = 1 << 20
CHUNK = 1 << 20
_TIME_KEYS = ("mtime", "atime", "ctime")
_OWNER_KEYS = ("uid", "gid", "uname", "gname")


class _ViewReader(io.RawIOBase):
    """A read-only, seekable file over a blob (the archive is never loaded whole)."""

    def __init__(self, buf: Blob) -> None:
        self.buf, self.pos = buf, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: len(self.buf)}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.buf.read(self.pos, len(b))
        n = len(data)
        b[:n] = data
        self.pos += n
        return n


def _utc(ts: float) -> str:
    try:
        return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return str(ts)


def tar_view(data: Blob | bytes | memoryview) -> ArchiveView:
    try:
        return _tar_view(Blob.of(data))
    except (tarfile.TarError, EOFError, UnicodeError, ValueError, OverflowError, struct.error) as e:
        raise TarFormatError(f"malformed tar: {e}") from None


def _tar_view(buf: Blob) -> ArchiveView:
    entries: list[Entry] = []
    spans: dict[str, tuple[int, int]] = {}
    with tarfile.open(fileobj=_ViewReader(buf), mode="r:") as tf:
        while True:
            if len(entries) >= MAX_ENTRIES:
                raise TarFormatError(f"more than {MAX_ENTRIES} members")
            m = tf.next()
            if m is None:
                break
            if m.name in spans:
                raise TarFormatError(f"duplicate member name {m.name!r}")
            if m.offset_data + (m.size if m.isreg() else 0) > len(buf):
                raise TarFormatError(f"{m.name}: data runs past the end of the archive")
            pax = {k: v[:MAX_PAX_VALUE] for k, v in sorted(m.pax_headers.items())}
            times = tuple((k, pax.pop(k, None)) for k in _TIME_KEYS)
            owners = tuple((k, pax.pop(k, None)) for k in _OWNER_KEYS)
            for k in ("path", "linkpath", "size"):
                pax.pop(k, None)
            spans[m.name] = (m.offset_data, m.size if m.isreg() else 0)
            entries.append(
                Entry(
                    name=m.name,
                    timestamps=(m.mtime, times),
                    permissions=(m.mode, m.uid, m.gid, m.uname, m.gname, owners),
                    compression=(),
                    metadata=(m.type, m.linkname, m.devmajor, m.devminor, tuple(pax.items())),
                    layout=(),
                    show_time=_utc(m.mtime),
                    show_perm=f"{m.mode:04o} {m.uname or m.uid}:{m.gname or m.gid}",
                    size=m.size,
                )
            )

    def raw(name: str) -> tuple[object, Span] | None:
        off, size = spans[name]
        return ("stored", Span(buf, off, size))

    def content(name: str) -> Iterator[bytes]:
        off, size = spans[name]
        return buf.chunks(off, size, CHUNK)

    return ArchiveView(format="tar", entries=tuple(entries), raw=raw, content=content)
