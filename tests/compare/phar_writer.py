"""A small native-PHAR writer for test fixtures (tests only; rebuild/ never writes phars).

It writes what PHP's Phar class writes: stub, manifest (little-endian, API
version as big-endian nibbles), entry data in manifest order, optional
signature trailer. Options expose each field so a test can change exactly one.
tests/compare/test_phar_writer.py checks it byte for byte against hand-laid
bytes (and, when a PHP container is available, against PHP's own reader).
"""

from __future__ import annotations

import bz2
import hashlib
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_STUB = (
    b"<?php\nPhar::mapPhar('demo.phar');\nrequire 'phar://demo.phar/index.php';\n"
    b"__HALT_COMPILER(); ?>\r\n"
)
SIG_FLAGS = {"md5": 1, "sha1": 2, "sha256": 3, "sha512": 4}


@dataclass(frozen=True)
class PharFile:
    name: str
    data: bytes
    timestamp: int = 1_600_000_000
    perms: int = 0o644
    compression: str = "none"  # "none" | "gz" | "bz2"
    metadata: bytes = b""


def _compress(f: PharFile) -> tuple[bytes, int]:
    if f.compression == "gz":
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        return c.compress(f.data) + c.flush(), 0x1000
    if f.compression == "bz2":
        return bz2.compress(f.data), 0x2000
    return f.data, 0


def build_phar(
    files: Sequence[PharFile],
    *,
    stub: bytes = DEFAULT_STUB,
    alias: bytes = b"demo.phar",
    metadata: bytes = b"",
    api: bytes = b"\x11\x10",
    extra_global_flags: int = 0,
    signature: str | None = "sha256",
    openssl_signature: bytes | None = None,
) -> bytes:
    """Return the bytes of a native phar. ``openssl_signature`` writes an
    OpenSSL-style trailer (flag 0x10) with the given opaque signature bytes."""
    records = bytearray()
    data = bytearray()
    gflags = extra_global_flags
    for f in files:
        body, cflag = _compress(f)
        if cflag == 0x1000:
            gflags |= 0x1000
        elif cflag == 0x2000:
            gflags |= 0x2000
        name = f.name.encode()
        records += struct.pack("<I", len(name)) + name
        records += struct.pack(
            "<IIIII",
            len(f.data),
            f.timestamp,
            len(body),
            zlib.crc32(f.data),
            (f.perms & 0x1FF) | cflag,
        )
        records += struct.pack("<I", len(f.metadata)) + f.metadata
        data += body
    if signature is not None or openssl_signature is not None:
        gflags |= 0x10000
    manifest = (
        struct.pack("<I", len(files))
        + api
        + struct.pack("<I", gflags)
        + struct.pack("<I", len(alias))
        + alias
        + struct.pack("<I", len(metadata))
        + metadata
        + bytes(records)
    )
    out = stub + struct.pack("<I", len(manifest)) + manifest + bytes(data)
    if openssl_signature is not None:
        return out + openssl_signature + struct.pack("<II", len(openssl_signature), 0x10) + b"GBMB"
    if signature is not None:
        digest = hashlib.new(signature, out).digest()
        out += digest + struct.pack("<I", SIG_FLAGS[signature]) + b"GBMB"
    return out


DEMO_FILES: tuple[PharFile, ...] = (
    PharFile("index.php", b"<?php\nrequire __DIR__ . '/src/App.php';\n(new App())->run();\n"),
    PharFile(
        "src/App.php", b"<?php\nclass App { public function run(): void { echo 'hi'; } }\n" * 10
    ),
    PharFile("data/readme.txt", b"hello phar\n" * 50),
)
