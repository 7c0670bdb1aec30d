"""Fixture builders for the comparison tests: real wheels written with zipfile.

Each option changes exactly one property so a test can assert the exact causes.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

DIST = "demo-1.0.dist-info"
FILES: dict[str, bytes] = {
    "demo/__init__.py": b'"""Demo package."""\n\n__version__ = "1.0"\n' * 20,
    "demo/mod.py": b"def f(x):\n    return x * 2\n" * 50,
    "demo/data.txt": b"some data\n" * 100,
    f"{DIST}/METADATA": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
    f"{DIST}/WHEEL": (
        b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    ),
}


def record_for(files: Mapping[str, bytes], order: Sequence[str]) -> bytes:
    rows = []
    for name in order:
        digest = base64.urlsafe_b64encode(hashlib.sha256(files[name]).digest()).rstrip(b"=")
        rows.append(f"{name},sha256={digest.decode()},{len(files[name])}")
    rows.append(f"{DIST}/RECORD,,")
    return ("\n".join(rows) + "\n").encode()


def write_wheel(
    path: Path,
    *,
    files: Mapping[str, bytes] = FILES,
    date_time: tuple[int, int, int, int, int, int] = (2020, 2, 2, 0, 0, 0),
    mode: int = 0o644,
    compression: int = zipfile.ZIP_DEFLATED,
    compresslevel: int | None = 6,
    order: Sequence[str] | None = None,
    record: bytes | None = None,
) -> Path:
    """Write a wheel with RECORD last; every entry gets the same date, mode, method."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(order) if order is not None else sorted(files)
    rec = record if record is not None else record_for(files, names)
    with zipfile.ZipFile(path, "w") as z:
        for name in [*names, f"{DIST}/RECORD"]:
            info = zipfile.ZipInfo(name, date_time)
            info.external_attr = (0o100000 | mode) << 16
            info.create_system = 3
            info.compress_type = compression
            data = rec if name == f"{DIST}/RECORD" else files[name]
            z.writestr(info, data, compress_type=compression, compresslevel=compresslevel)
    return path
