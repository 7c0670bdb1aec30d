"""The PHAR reader is strict, and the test PHAR writer writes the documented layout."""

from __future__ import annotations

import hashlib
import struct
import zlib

import pytest

from rebuild.compare._errors import PharFormatError
from rebuild.compare._phar import find_manifest, iter_entry, parse_phar
from tests.compare.phar_writer import DEMO_FILES, PharFile, build_phar


def _read_all(data: bytes) -> list[bytes]:
    buf = memoryview(data)
    p = parse_phar(buf)
    return [b"".join(iter_entry(buf, e)) for e in p.entries]


def test_writer_matches_hand_laid_bytes_of_the_manual_layout() -> None:
    stub = b"<?php __HALT_COMPILER(); ?>\r\n"
    # Laid out field by field from the PHP manual's tables, not through the writer.
    entry = (
        b"\x05\x00\x00\x00" + b"a.php"  # filename length, filename
        b"\x02\x00\x00\x00"  # uncompressed size
        b"\x01\x00\x00\x00"  # timestamp
        b"\x02\x00\x00\x00"  # compressed size
        + struct.pack("<I", zlib.crc32(b"hi"))  # CRC-32 of the uncompressed data
        + b"\xa4\x01\x00\x00"  # flags: permissions 0644, no compression
        b"\x00\x00\x00\x00"  # metadata length
    )
    manifest = (
        b"\x01\x00\x00\x00"  # number of files
        b"\x11\x10"  # API version 1.1.1 (big-endian nibbles)
        b"\x00\x00\x01\x00"  # global flags: has signature
        b"\x01\x00\x00\x00" + b"x"  # alias length, alias
        b"\x00\x00\x00\x00"  # metadata length
         + entry
    )
    body = stub + struct.pack("<I", len(manifest)) + manifest + b"hi"
    expected = body + hashlib.sha1(body).digest() + b"\x02\x00\x00\x00GBMB"
    written = build_phar(
        [PharFile("a.php", b"hi", timestamp=1, perms=0o644)],
        stub=stub,
        alias=b"x",
        signature="sha1",
    )
    assert written == expected
    p = parse_phar(memoryview(written))
    assert p.api_version_text == "1.1.1" and p.alias == b"x" and p.stub == stub
    assert p.signature is not None and p.signature.algorithm == "sha1" and p.signature.valid


@pytest.mark.parametrize(
    ("tail", "stub_end"),
    [
        (b"", b"__HALT_COMPILER();"),
        (b" ?>", b"__HALT_COMPILER(); ?>"),
        (b" ?>\n", b"__HALT_COMPILER(); ?>\n"),
        (b" ?>\r\n", b"__HALT_COMPILER(); ?>\r\n"),
        (b"\n?>\r\n", b"__HALT_COMPILER();\n?>\r\n"),
    ],
)
def test_stub_ends_where_php_ends_it(tail: bytes, stub_end: bytes) -> None:
    data = build_phar(DEMO_FILES, stub=b"<?php __HALT_COMPILER();" + tail)
    stub, _ = find_manifest(memoryview(data))
    assert stub.endswith(stub_end)
    assert _read_all(data) == [f.data for f in DEMO_FILES]


def test_compressed_entries_round_trip() -> None:
    files = [
        PharFile("gz.txt", b"gz " * 1000, compression="gz"),
        PharFile("bz.txt", b"bz " * 1000, compression="bz2"),
        PharFile("raw.txt", b"raw"),
    ]
    assert _read_all(build_phar(files)) == [f.data for f in files]


def _manifest_offset(data: bytes) -> int:
    return find_manifest(memoryview(data))[1]


def test_manifest_length_past_end_of_file_is_rejected() -> None:
    data = bytearray(build_phar(DEMO_FILES))
    struct.pack_into("<I", data, _manifest_offset(bytes(data)), 0x7FFFFFFF)
    with pytest.raises(PharFormatError, match=r"limit|past the end"):
        parse_phar(memoryview(bytes(data)))


def test_impossible_entry_count_is_rejected_before_allocating() -> None:
    data = bytearray(build_phar(DEMO_FILES))
    struct.pack_into("<I", data, _manifest_offset(bytes(data)) + 4, 0xFFFFFFFF)
    with pytest.raises(PharFormatError, match="entry count"):
        parse_phar(memoryview(bytes(data)))


def test_bytes_smuggled_after_the_data_are_rejected() -> None:
    data = build_phar(DEMO_FILES, signature=None) + b"<?php evil();"
    with pytest.raises(PharFormatError, match="entry data ends"):
        parse_phar(memoryview(data))


def test_duplicate_entry_names_are_rejected() -> None:
    data = build_phar([PharFile("a", b"1"), PharFile("a", b"2")])
    with pytest.raises(PharFormatError, match="duplicate"):
        parse_phar(memoryview(data))


def test_unknown_signature_algorithm_is_rejected() -> None:
    data = bytearray(build_phar(DEMO_FILES))
    struct.pack_into("<I", data, len(data) - 8, 0x99)
    with pytest.raises(PharFormatError, match="unknown signature"):
        parse_phar(memoryview(bytes(data)))


def test_entry_inflating_past_its_declared_size_is_rejected() -> None:
    bomb = PharFile("bomb.txt", b"\x00" * 200_000, compression="gz")
    data = bytearray(build_phar([bomb], signature=None))
    p = parse_phar(memoryview(bytes(data)))
    # Shrink the declared size: the reader must stop at it, not inflate everything.
    off = (
        _manifest_offset(bytes(data)) + 4 + 4 + 2 + 4 + 4 + len(p.alias) + 4 + 4 + len(b"bomb.txt")
    )
    struct.pack_into("<I", data, off, 1000)
    buf = memoryview(bytes(data))
    entry = parse_phar(buf).entries[0]
    assert entry.usize == 1000
    with pytest.raises(PharFormatError, match="more than 1000 bytes"):
        b"".join(iter_entry(buf, entry))


def test_content_not_matching_its_crc_is_rejected() -> None:
    data = bytearray(build_phar([PharFile("a.txt", b"hello")], signature=None))
    data[-1] ^= 0x20
    buf = memoryview(bytes(data))
    with pytest.raises(PharFormatError, match="CRC-32"):
        b"".join(iter_entry(buf, parse_phar(buf).entries[0]))


def test_openssl_signature_trailer_is_read_with_its_length() -> None:
    data = build_phar(DEMO_FILES, signature=None, openssl_signature=b"\x07" * 256)
    p = parse_phar(memoryview(data))
    assert p.signature is not None
    assert (p.signature.algorithm, p.signature.value, p.signature.valid) == (
        "openssl",
        b"\x07" * 256,
        None,
    )
