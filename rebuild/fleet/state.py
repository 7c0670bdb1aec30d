"""Local state directories of fleet processes: one process per directory, JSON files.

Decides nothing; it holds an exclusive ``flock`` on ``D/lock`` for the
process's life (a second process on the same directory is refused, exit 2)
and reads and writes small JSON documents atomically (temp, fsync, rename,
fsync of the directory).
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from rebuild.errors import StorageError
from rebuild.fsio import atomic_write, read_bounded

MAX_STATE_FILE = 64 * 1024 * 1024


class StateDir:
    """A locked state directory."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        try:
            path.mkdir(parents=True, exist_ok=True)
            fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise StorageError(f"{path}: cannot use as {what} state: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StorageError(f"{path}: another {what} uses this directory") from None
        self._fd: int | None = fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None

    def __enter__(self) -> StateDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_json(self, name: str) -> dict[str, Any] | None:
        path = self.path / name
        if not path.exists():
            return None
        try:
            doc = json.loads(read_bounded(path, MAX_STATE_FILE))
        except ValueError as e:
            # Never treated as "nothing seen": that would enqueue everything again.
            raise StorageError(f"{path}: unreadable state: {e}") from None
        if not isinstance(doc, dict):
            raise StorageError(f"{path}: unreadable state: not a JSON object")
        return doc

    def write_json(self, name: str, doc: dict[str, Any]) -> None:
        atomic_write(self.path / name, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())
