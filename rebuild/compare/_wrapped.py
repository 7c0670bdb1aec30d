"""Whole-file compression (``.tar.gz``, ``.phar.gz``, ``.phar.bz2``): diagnose the
wrapper's header, then the decompressed payload.

Decompression is streamed into a private temporary file with a hard size cap,
so a compression bomb cannot exhaust memory or disk beyond the cap.
"""

from __future__ import annotations

import hashlib
import struct
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

from rebuild.compare._decompress import Codec, decompress_stream
from rebuild.compare._errors import ArchiveFormatError
from rebuild.compare._limits import DEFAULT_LIMITS, InflationLimitError, InflationLimits
from rebuild.compare._model import Difference

MAX_PAYLOAD = 4 << 30
CHUNK = 1 << 20
_FTEXT, _FHCRC, _FEXTRA, _FNAME, _FCOMMENT = 1, 2, 4, 8, 16


class WrapperFormatError(ArchiveFormatError):
    """A gzip or bzip2 wrapper is malformed or decompresses past the cap."""


def gzip_header(head: bytes) -> dict[str, tuple[str, object]]:
    """The gzip header fields (RFC 1952) as field -> (difference kind, value).

    ``header length`` is where the compressed stream starts."""
    if len(head) < 10 or head[:2] != b"\x1f\x8b" or head[2] != 8:
        raise WrapperFormatError("not a deflate gzip stream")
    flags, mtime, xfl, os_ = head[3], struct.unpack_from("<I", head, 4)[0], head[8], head[9]
    pos = 10
    extra = name = comment = b""
    if flags & _FEXTRA:
        (n,) = struct.unpack_from("<H", head, pos)
        extra = head[pos + 2 : pos + 2 + n]
        pos += 2 + n
    if flags & _FNAME:
        end = head.find(b"\x00", pos)
        name, pos = head[pos:end], end + 1
    if flags & _FCOMMENT:
        end = head.find(b"\x00", pos)
        comment, pos = head[pos:end], end + 1
    if flags & _FHCRC:
        pos += 2
    if pos > len(head):
        raise WrapperFormatError("gzip header is truncated")
    return {
        "header length": ("layout", pos),
        "gzip mtime": ("timestamps", mtime),
        "gzip file name": ("metadata", name),
        "gzip comment": ("metadata", comment),
        "gzip extra field": ("metadata", extra),
        "gzip operating system": ("metadata", os_),
        "gzip flags": ("layout", flags & ~(_FNAME | _FCOMMENT | _FEXTRA)),
        "gzip level hint (XFL)": ("compression", xfl),
    }


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while piece := f.read(CHUNK):
            yield piece


def unwrap(
    path: Path, codec: Codec, stack: ExitStack, limits: InflationLimits = DEFAULT_LIMITS
) -> tuple[Path, str]:
    """Decompress ``path`` into a temporary file; return it and its sha256.

    The payload is cut off at the inflation caps (total size, and the ratio to
    the file's size), so a bomb costs at most that much disk and time."""
    tmpdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rebuild-unwrap-")))
    out = tmpdir / path.name.rsplit(".", 1)[0]
    h = hashlib.sha256()
    cap = min(MAX_PAYLOAD, limits.entry_cap(path.stat().st_size))
    with out.open("wb") as f:
        for piece in decompress_stream(
            _chunks(path),
            codec,
            limit=cap,
            what=str(path),
            error=WrapperFormatError,
            limit_error=InflationLimitError,
        ):
            h.update(piece)
            f.write(piece)
    return out, h.hexdigest()


def _same_tail(expected: Path, actual: Path, off_e: int, off_a: int) -> bool:
    with expected.open("rb") as fe, actual.open("rb") as fa:
        fe.seek(off_e)
        fa.seek(off_a)
        while True:
            x, y = fe.read(CHUNK), fa.read(CHUNK)
            if x != y:
                return False
            if not x:
                return True


def header_differences(expected: Path, actual: Path) -> list[Difference]:
    with expected.open("rb") as f:
        he = gzip_header(f.read(1 << 16))
    with actual.open("rb") as f:
        ha = gzip_header(f.read(1 << 16))
    out = []
    body_e, body_a = he.pop("header length")[1], ha.pop("header length")[1]
    if not _same_tail(expected, actual, body_e, body_a):  # type: ignore[arg-type]
        out.append(Difference("compression", None, "the compressed stream differs"))
    for key in he:
        if he[key][1] != ha[key][1]:
            out.append(
                Difference(he[key][0], None, f"{key} differs", repr(he[key][1]), repr(ha[key][1]))
            )
    return out
