"""``rebuild log follow``: a monitor that catches a log presenting a fork.

Each round: fetch the log's checkpoint, verify its signature (and, with a
policy, the witness quorum), then prove it consistent with the last
checkpoint this monitor accepted. The consistency proof is computed here,
from tiles fetched through the tlog-tiles read API, never taken from the
log's word: the tiles must first be the tree the new checkpoint signs
(:func:`verify.tiles.audit_tiles`: on first contact every entry bundle and
hash tile, afterwards those the tree grew by), and the proof derived from
them must then verify against the *old* root. A failure
is a fork (:class:`ForkError`, a negative verdict, exit 1) and both signed
checkpoints are kept in the state directory as evidence. State is written
atomically; a checkpoint is accepted only after every check passed.
"""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rebuild.errors import InputError, NegativeVerdict, StorageError
from rebuild.fsio import atomic_write, read_bounded
from rebuild.log.client import LogClient
from verify import merkle
from verify.checkpoint import Checkpoint, open_checkpoint
from verify.checkpoint import parse as parse_checkpoint
from verify.cosignature import MAX_CLOCK_SKEW, verify_cosignatures
from verify.errors import ProofError, TrustError, VerifyError
from verify.keys import VerifierKey
from verify.note import open_note, split_note
from verify.tiles import TileHashes, audit_tiles
from verify.tlog_policy import Policy

STATE_FILE = "checkpoint.json"
MAX_STATE = 1 << 20


class ForkError(NegativeVerdict):
    """The log presented two checkpoints that cannot both be true."""


@dataclass(frozen=True)
class CheckpointVerifier:
    """Which log key (and optionally which witness quorum) a checkpoint needs."""

    policy: Policy | None = None
    log_key: VerifierKey | None = None

    def verify(self, note: bytes) -> Checkpoint:
        """Verify ``note``'s log signature (and quorum); return its checkpoint."""
        if self.policy is not None:
            opened = open_note(note, self.policy.log_keys())
            cp = parse_checkpoint(opened.text)
            if cp.origin != opened.verified_keys[0].name:
                raise TrustError(
                    f"checkpoint origin {cp.origin!r} is not the name of the log key that signed it"
                )
            now = int(time.time()) + MAX_CLOCK_SKEW
            cosigs = verify_cosignatures(note, self.policy.witness_keys(), now=now)
            self.policy.require_quorum(c.key for c in cosigs)
            return cp
        if self.log_key is None:
            raise InputError("follow needs a policy or a log key")
        cp, _ = open_checkpoint(note, self.log_key)
        return cp


@dataclass(frozen=True)
class FollowResult:
    status: Literal["initial", "unchanged", "grew", "stale"]
    previous_size: int | None
    size: int
    root: bytes
    checkpoint: str

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "previous_size": self.previous_size,
            "size": self.size,
            "root_hash": base64.b64encode(self.root).decode(),
            "checkpoint": self.checkpoint,
        }


def _load_state(state_dir: Path) -> tuple[Checkpoint, str] | None:
    path = state_dir / STATE_FILE
    if not path.exists():
        return None
    data = read_bounded(path, MAX_STATE)
    try:
        doc = json.loads(data)
        note = doc["checkpoint"]
        if not isinstance(note, str):
            raise TypeError
        text, _ = split_note(note)
        return parse_checkpoint(text), note
    except (ValueError, KeyError, TypeError, VerifyError) as e:
        raise StorageError(f"{path}: unreadable monitor state: {e}") from None


def _save_state(state_dir: Path, note: str, log_url: str) -> None:
    doc = {"log": log_url, "checkpoint": note, "saved_at": int(time.time())}
    atomic_write(state_dir / STATE_FILE, (json.dumps(doc, indent=2) + "\n").encode())


def _keep_evidence(state_dir: Path, old_note: str, new_note: bytes) -> Path:
    path = state_dir / f"fork-evidence-{int(time.time())}-{os.getpid()}.txt"
    atomic_write(
        path,
        b"# checkpoint previously accepted\n"
        + old_note.encode()
        + b"\n# conflicting checkpoint\n"
        + new_note,
    )
    return path


def follow_once(client: LogClient, verifier: CheckpointVerifier, state_dir: Path) -> FollowResult:
    """One monitor round (see module docstring); raises ForkError on a fork."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"{state_dir}: cannot create: {e.strerror}") from None
    previous = _load_state(state_dir)
    note = client.checkpoint()
    cp = verifier.verify(note)
    note_text = note.decode()
    if previous is None:
        # First sight: every tile and entry the log serves must be the signed tree.
        _audit(client, cp, 0)
        _save_state(state_dir, note_text, client.url)
        return FollowResult("initial", None, cp.size, cp.root_hash, note_text)
    old, old_note = previous
    if old.origin != cp.origin:
        raise ForkError(f"log origin changed from {old.origin!r} to {cp.origin!r}")
    if cp.size == old.size:
        if cp.root_hash != old.root_hash:
            evidence = _keep_evidence(state_dir, old_note, note)
            raise ForkError(
                f"log fork: two different roots signed for size {cp.size} (evidence: {evidence})"
            )
        _save_state(state_dir, note_text, client.url)  # fresher cosignatures, same tree
        return FollowResult("unchanged", old.size, cp.size, cp.root_hash, note_text)
    small, big = (old, cp) if cp.size > old.size else (cp, old)
    if big is cp:
        _audit(client, cp, old.size)  # what the tree grew by is the signed tree
    tiles = TileHashes(big.size, client.tile)
    try:
        if tiles.root() != big.root_hash:
            raise ProofError(f"the log's tiles do not reproduce the root of size {big.size}")
        if small.size > 0:
            proof = tiles.consistency_proof(small.size)
            merkle.verify_consistency(small.size, big.size, proof, small.root_hash, big.root_hash)
        elif small.root_hash != merkle.EMPTY_ROOT:
            raise ProofError("a size-0 checkpoint must carry the empty tree's root")
    except ProofError as e:
        evidence = _keep_evidence(state_dir, old_note, note)
        raise ForkError(
            f"log fork: checkpoint {cp.size} is not consistent with checkpoint {old.size} "
            f"seen before ({e}; evidence: {evidence})"
        ) from None
    if cp.size < old.size:
        # An older (consistent) checkpoint: a stale cache or mirror, not a fork.
        return FollowResult("stale", old.size, cp.size, cp.root_hash, note_text)
    _save_state(state_dir, note_text, client.url)
    return FollowResult("grew", old.size, cp.size, cp.root_hash, note_text)


def _audit(client: LogClient, cp: Checkpoint, start: int) -> None:
    problems = audit_tiles(
        cp.size, cp.root_hash, client.tile, client.entry_bundle, start=start, max_problems=5
    )
    if problems:
        raise ForkError(
            f"the log's tiles do not reproduce the tree it signed for size {cp.size}: "
            + "; ".join(str(p) for p in problems)
        )
