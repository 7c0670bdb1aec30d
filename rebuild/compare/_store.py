"""Content-addressed report storage: a report's file name is its SHA-256.

A stored report can be found again from the digest an attestation carries,
and a name never points at two different contents. Writes are atomic.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from rebuild.compare._model import ReportFile
from rebuild.errors import StorageError
from rebuild.fsio import atomic_write

EXTENSIONS = {
    "comparison-json": "json",
    "diffoscope-json": "json",
    "diffoscope-html": "html",
    "diffoscope-text": "txt",
}


def store_report(report_dir: Path, kind: str, data: bytes) -> ReportFile:
    """Store ``data`` as ``<report_dir>/<sha256>.<ext>`` and describe it."""
    ext = EXTENSIONS[kind]
    digest = hashlib.sha256(data).hexdigest()
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"{report_dir}: cannot create report directory: {e.strerror}") from None
    path = report_dir / f"{digest}.{ext}"
    atomic_write(path, data)
    return ReportFile(kind=kind, path=path, sha256=digest, size=len(data))
