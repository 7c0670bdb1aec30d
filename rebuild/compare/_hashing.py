"""Streaming SHA-256 of whole files: the comparison's fast path.

One sequential pass with a large buffer; the file is never held in memory.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from rebuild.errors import InputError

BUFFER = 1 << 20
# An artifact larger than this is refused rather than hashed for minutes.
MAX_ARTIFACT_SIZE = 8 << 30


def sha256_file(path: Path, *, limit: int = MAX_ARTIFACT_SIZE) -> tuple[str, int]:
    """Return (hex sha256, size) of ``path``; InputError if unreadable or too large."""
    h = hashlib.sha256()
    buf = bytearray(BUFFER)
    view = memoryview(buf)
    size = 0
    try:
        with path.open("rb", buffering=0) as f:
            while n := f.readinto(buf):
                h.update(view[:n])
                size += n
                if size > limit:
                    raise InputError(f"{path}: larger than the {limit}-byte artifact limit")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    return h.hexdigest(), size
