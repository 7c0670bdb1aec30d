"""The zip reader refuses the tricks that make two tools see two different archives."""

from __future__ import annotations

import io
import struct
import zipfile

import pytest

from rebuild.compare._errors import ZipFormatError
from rebuild.compare._zip import iter_content, parse_zip


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    return buf.getvalue()


def test_duplicate_names_are_rejected() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.py", b"good")
        with pytest.warns(UserWarning, match="Duplicate name"):
            z.writestr("a.py", b"evil")
    with pytest.raises(ZipFormatError, match="duplicate"):
        parse_zip(memoryview(buf.getvalue()))


def test_local_header_naming_another_file_is_rejected() -> None:
    data = bytearray(_zip({"a.py": b"x"}))
    data[30:34] = b"b.py"  # the local header's copy of the name
    with pytest.raises(ZipFormatError, match="local header names a different file"):
        parse_zip(memoryview(bytes(data)))


def test_overlapping_entries_are_rejected() -> None:
    data = bytearray(_zip({"a.txt": b"A" * 100, "b.txt": b"B" * 100}))
    cd = data.rfind(b"PK\x01\x02")  # the second central record: point it at the first entry
    struct.pack_into("<I", data, cd + 42, 0)
    with pytest.raises(ZipFormatError):
        parse_zip(memoryview(bytes(data)))


def test_missing_end_record_is_rejected() -> None:
    with pytest.raises(ZipFormatError, match="end-of-central-directory"):
        parse_zip(memoryview(_zip({"a": b"x"})[:-22]))


def test_deflate_bomb_stops_at_the_declared_size() -> None:
    data = bytearray(_zip({"bomb": b"\x00" * 1_000_000}))
    cd = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, cd + 24, 10)  # declared uncompressed size
    buf = memoryview(bytes(data))
    entry = parse_zip(buf).entries[0]
    with pytest.raises(ZipFormatError, match="more than 10 bytes"):
        b"".join(iter_content(buf, entry))
