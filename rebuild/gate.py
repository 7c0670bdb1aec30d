"""The updater's I/O around :func:`verify.gate.decide`: files, state, commits.

The decision is pure and lives in :mod:`verify.gate`. This module reads the
artifact, the bundle and the policy (bounded), holds the state directory's
lock from the moment the previous state is read until the new one is
written, keeps fork evidence, and writes the new state atomically (temp
file, fsync, rename, fsync of the directory) only when asked to commit an
acceptance.

State directory ``D`` (created 0700 if missing):

    D/lock                          flock, held for one gate run and its commits
    D/state.json                    rebuild-gate-state/v1 (verify.state)
    D/fork-evidence-<time>-<origin hash>.txt   both checkpoints of a detected fork

Interface for updaters (``rebuild gate`` and ``rebuild update`` use it)::

    policy = load_policy(Path("policy.toml"))
    with open_gate(artifact_path, bundle_bytes, policy, state_dir) as run:
        if not run.decision.accepted:
            ...                          # run.decision.failures says why
        run.commit_checkpoint()          # the log view is accepted ...
        install(run.artifact)            # ... install exactly the bytes judged ...
        run.commit_installed()           # ... and only then record the version

``rebuild gate`` (no installer) calls :meth:`GateRun.commit_installed`
directly, which records both. Leaving the ``with`` block without a commit
records nothing; a fork's evidence is written before the block is entered,
whatever happens next. Nothing here prints or exits.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from rebuild.errors import InputError, StorageError
from rebuild.fsio import atomic_write, read_bounded
from verify.bundle import MAX_BUNDLE_SIZE, ConsistencyProof
from verify.errors import FormatError, PolicyError
from verify.gate import Decision, ForkEvidence, decide
from verify.policy import MAX_POLICY_SIZE, UpdatePolicy, parse_policy
from verify.state import EMPTY_STATE, MAX_STATE_SIZE, TrustedState, parse_state
from verify.tlog_policy import MAX_POLICY_SIZE as MAX_TLOG_POLICY_SIZE

STATE_FILE: Final = "state.json"
LOCK_FILE: Final = "lock"
LOCK_TIMEOUT: Final = 60.0
MAX_EVIDENCE_FILES_PER_SECOND: Final = 1000


def load_policy(path: Path) -> UpdatePolicy:
    """Read a rebuild-policy/v1 file and the tlog-policy it names.

    A relative ``tlog_policy`` is relative to the policy file's directory.
    Raises InputError (unreadable file, or a policy that is malformed or
    unsafe: exit 2, the updater's own configuration is wrong).
    """
    data = read_bounded(path, MAX_POLICY_SIZE)

    def load_tlog(name: str) -> bytes:
        target = Path(name)
        if not target.is_absolute():
            target = path.parent / target
        return read_bounded(target, MAX_TLOG_POLICY_SIZE)

    try:
        return parse_policy(data, load_tlog)
    except PolicyError as e:
        raise InputError(f"{path}: {e}") from None


def _read_prefix(path: Path, limit: int, what: str) -> bytes:
    """Up to ``limit`` bytes of a regular file (more is the gate's to refuse)."""
    try:
        with path.open("rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise InputError(f"{path}: {what} is not a regular file")
            return f.read(limit)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected the {what}") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read the {what}: {e.strerror}") from None


def read_artifact(path: Path, policy: UpdatePolicy) -> bytes:
    """The artifact's bytes, refusing a file larger than every package's cap.

    Raises InputError. The gate checks the cap of the package the release
    names (step 1); this only keeps an absurd file out of memory.
    """
    cap = max(p.max_artifact_bytes for p in policy.packages)
    data = _read_prefix(path, cap + 1, "artifact")
    if len(data) > cap:
        raise InputError(f"{path}: artifact is larger than every package's max_artifact_bytes")
    return data


def read_bundle(path: Path) -> bytes:
    """The bundle's bytes, read up to one byte past the hard cap (the gate refuses more).

    Raises InputError when the file cannot be read.
    """
    return _read_prefix(path, MAX_BUNDLE_SIZE + 1, "bundle")


class StateDir:
    """A locked gate state directory (use as a context manager)."""

    def __init__(self, path: Path, *, timeout: float = LOCK_TIMEOUT) -> None:
        self.path = path
        self._timeout = timeout
        self._fd: int | None = None

    def __enter__(self) -> StateDir:
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise StorageError(f"{self.path}: cannot open the gate state: {e.strerror}") from None
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    os.close(fd)
                    raise StorageError(
                        f"{self.path}: the gate state is locked by another process"
                    ) from None
                time.sleep(0.05)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None

    def _check_locked(self) -> None:
        if self._fd is None:
            raise StorageError(f"{self.path}: the gate state is not locked")

    def load(self) -> TrustedState:
        """The stored state; the empty state only when no state file exists.

        A state file that cannot be read or parsed is a StorageError, never
        "nothing accepted yet" (which would let anyone roll the updater back).
        """
        self._check_locked()
        path = self.path / STATE_FILE
        if not path.exists():
            return EMPTY_STATE
        try:
            return parse_state(read_bounded(path, MAX_STATE_SIZE))
        except (InputError, FormatError) as e:
            raise StorageError(
                f"{path}: unreadable gate state ({e}); refusing to reset it"
            ) from None

    def save(self, state: TrustedState) -> None:
        """Replace the state file atomically and durably."""
        self._check_locked()
        atomic_write(self.path / STATE_FILE, state.encode(), mode=0o600)

    def keep_fork_evidence(self, fork: ForkEvidence, now: int) -> Path:
        """Write both checkpoints of a fork to a new evidence file; return its path."""
        self._check_locked()
        tag = hashlib.sha256(fork.origin.encode()).hexdigest()[:16]
        base = f"fork-evidence-{now}-{tag}-{os.getpid()}"
        # The same fork can be refused twice in one second by one process (an
        # updater trying two mirrors, a daemon handling two requests): under
        # the lock, take the first free name rather than fail the second time.
        for n in range(MAX_EVIDENCE_FILES_PER_SECOND):
            path = self.path / (f"{base}.txt" if n == 0 else f"{base}-{n}.txt")
            if not os.path.lexists(path):
                break
        else:
            raise StorageError(
                f"{self.path}: {MAX_EVIDENCE_FILES_PER_SECOND} fork evidence files for "
                f"{fork.origin} in one second; refusing to write more"
            )
        text = (
            f"# log fork detected by rebuild gate at {now}: {fork.reason}\n"
            f"# origin: {fork.origin}\n"
            "# checkpoint accepted before:\n"
            f"{fork.accepted}"
            "# conflicting checkpoint (from the bundle):\n"
            f"{fork.conflicting}"
        )
        atomic_write(path, text.encode(), mode=0o600, overwrite=False)
        return path


@dataclass
class GateRun:
    """A decision, taken under the state lock, and the commits it allows."""

    decision: Decision
    artifact: bytes
    """The exact bytes judged: install these, not a file that may have changed since."""
    state_dir: Path
    previous: TrustedState
    evidence: Path | None = None
    committed: Literal["nothing", "checkpoint", "installed"] = "nothing"
    _store: StateDir | None = field(default=None, repr=False)
    _current: TrustedState | None = field(default=None, repr=False)

    def _commit(self, installed: bool) -> None:
        if self._store is None or self._current is None:
            raise StorageError(f"{self.state_dir}: the gate run is over; nothing can be committed")
        new = self.decision.apply(self._current, installed=installed)  # ValueError if rejected
        self._store.save(new)
        self._current = new

    def commit_checkpoint(self) -> None:
        """Record the accepted checkpoint only (before installing).

        Raises ValueError for a rejected decision, StorageError on I/O failure.
        """
        self._commit(installed=False)
        if self.committed == "nothing":
            self.committed = "checkpoint"

    def commit_installed(self) -> None:
        """Record the checkpoint and the release as installed (after installing).

        Raises ValueError for a rejected decision, StorageError on I/O failure.
        """
        self._commit(installed=True)
        self.committed = "installed"


@contextlib.contextmanager
def open_gate(
    artifact: Path | bytes,
    bundle: Path | bytes,
    policy: UpdatePolicy,
    state_dir: Path,
    *,
    now: int | None = None,
    strict: bool = False,
    allow_downgrade: bool = False,
    lock_timeout: float = LOCK_TIMEOUT,
    consistency: Sequence[ConsistencyProof] = (),
) -> Iterator[GateRun]:
    """Lock ``state_dir``, run the gate, and yield the run for the caller to commit.

    ``artifact`` and ``bundle`` are file paths or bytes already in memory.
    ``now`` defaults to the clock, read once. ``consistency`` are proofs
    from outside the bundle (computed from the log's tiles for what a
    previous run's ``decision.needs_consistency`` named; the gate checks
    them like the bundle's). Fork evidence is written
    before the run is yielded. Raises InputError (unreadable input) and
    StorageError (state directory unusable or locked for ``lock_timeout``
    seconds); a rejection is not an error, it is ``run.decision``.
    """
    data = artifact if isinstance(artifact, bytes) else read_artifact(artifact, policy)
    bundle_bytes = bundle if isinstance(bundle, bytes) else read_bundle(bundle)
    reference = int(time.time()) if now is None else now
    with StateDir(state_dir, timeout=lock_timeout) as store:
        previous = store.load()
        decision = decide(
            data,
            bundle_bytes,
            policy,
            previous,
            now=reference,
            strict=strict,
            allow_downgrade=allow_downgrade,
            consistency=consistency,
        )
        run = GateRun(decision, data, state_dir, previous, _store=store, _current=previous)
        if decision.fork is not None:
            run.evidence = store.keep_fork_evidence(decision.fork, reference)
        try:
            yield run
        finally:
            run._store = None
            run._current = None
