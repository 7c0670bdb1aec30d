"""SHA-256 of artifacts at memory speed.

Decides nothing; computes digests. Large files are hashed through ``mmap``
so the kernel's page cache feeds hashlib directly (no copies through a
Python buffer); small files are read in one bounded call.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from pathlib import Path

from rebuild.errors import InputError

_MMAP_THRESHOLD = 1024 * 1024


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Return the lowercase hex SHA-256 of a file."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < _MMAP_THRESHOLD:
                return hashlib.sha256(f.read()).hexdigest()
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return hashlib.sha256(mm).hexdigest()
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{p}: is a directory, expected a file") from None
    except OSError as e:
        raise InputError(f"{p}: cannot read: {e.strerror}") from None
