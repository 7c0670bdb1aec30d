"""C2SP tlog-proof@v1: an offline proof that an entry is in a witnessed log.

The text is ``c2sp.org/tlog-proof@v1``, an optional ``extra <base64>`` line,
``index <N>``, the inclusion proof hashes (base64, one per line), an empty
line, and the signed checkpoint verbatim. This module encodes and strictly
parses that text and verifies it against a tlog-policy in the numbered
steps of the spec (documented in docs/log.md). It trusts nothing from the
proof itself: the log key, witness keys and quorum come from the policy,
and the ``extra`` data is returned unauthenticated. No I/O.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Final

from verify.checkpoint import Checkpoint
from verify.checkpoint import parse as parse_checkpoint
from verify.cosignature import Cosignature, verify_cosignatures
from verify.errors import OriginError, ProofFormatError
from verify.keys import VerifierKey
from verify.merkle import HASH_SIZE, MAX_TREE_SIZE, leaf_hash, verify_inclusion
from verify.note import MAX_NOTE_SIZE, open_note, split_note
from verify.parsing import decode_base64, parse_decimal
from verify.tlog_policy import Policy, QuorumResult

HEADER: Final = "c2sp.org/tlog-proof@v1"
MAX_INCLUSION_HASHES: Final = 63
MAX_EXTRA: Final = 64 * 1024
MAX_PROOF_TEXT: Final = MAX_NOTE_SIZE + 2 * MAX_EXTRA


def _b64(text: str, what: str) -> bytes:
    return decode_base64(text, f"tlog-proof: {what}", ProofFormatError)


@dataclass(frozen=True)
class TlogProof:
    """A tlog-proof@v1: index, inclusion hashes, signed checkpoint, extra data."""

    index: int
    proof: tuple[bytes, ...]
    checkpoint: str  # the signed note, verbatim
    extra: bytes | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.index, int) or not 0 <= self.index <= MAX_TREE_SIZE:
            raise ProofFormatError("tlog-proof: index must be in 0..2**63-1")
        if len(self.proof) > MAX_INCLUSION_HASHES:
            raise ProofFormatError("tlog-proof: more than 63 inclusion proof hashes")
        if any(not isinstance(h, bytes) or len(h) != HASH_SIZE for h in self.proof):
            raise ProofFormatError(f"tlog-proof: proof hashes must be {HASH_SIZE} bytes")
        if self.extra is not None and not 0 < len(self.extra) <= MAX_EXTRA:
            raise ProofFormatError("tlog-proof: extra data must be 1..65536 bytes when present")
        split_note(self.checkpoint)  # a well-formed signed note, or NoteFormatError

    def encode(self) -> str:
        """The proof's canonical tlog-proof@v1 text. Never raises."""
        lines = [HEADER]
        if self.extra is not None:
            lines.append("extra " + base64.b64encode(self.extra).decode())
        lines.append(f"index {self.index}")
        lines.extend(base64.b64encode(h).decode() for h in self.proof)
        return "\n".join(lines) + "\n\n" + self.checkpoint

    def checkpoint_body(self) -> Checkpoint:
        """The checkpoint, parsed but NOT verified.

        Raises CheckpointFormatError when the note's text is not a checkpoint
        body (the note itself was checked when this proof was made).
        """
        text, _ = split_note(self.checkpoint)
        return parse_checkpoint(text)


def parse(data: str | bytes) -> TlogProof:
    """Parse tlog-proof@v1 text strictly (every line newline-terminated).

    Raises ProofFormatError for anything but tlog-proof@v1 (oversized, not UTF-8, a
    missing line, non-canonical base64, a bad index), NoteFormatError for a malformed
    checkpoint note.
    """
    if isinstance(data, bytes):
        if len(data) > MAX_PROOF_TEXT:
            raise ProofFormatError("tlog-proof too large")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ProofFormatError("tlog-proof is not UTF-8") from None
    if len(data) > MAX_PROOF_TEXT:
        raise ProofFormatError("tlog-proof too large")
    head, sep, checkpoint = data.partition("\n\n")
    if not sep:
        raise ProofFormatError("tlog-proof: no empty line before the checkpoint")
    lines = head.split("\n")
    if lines[0] != HEADER:
        raise ProofFormatError(f"tlog-proof: first line must be {HEADER}")
    pos = 1
    extra: bytes | None = None
    if pos < len(lines) and lines[pos].startswith("extra "):
        extra = _b64(lines[pos][len("extra ") :], "extra data")
        pos += 1
    if pos >= len(lines) or not lines[pos].startswith("index "):
        raise ProofFormatError("tlog-proof: missing 'index N' line")
    index = parse_decimal(
        lines[pos][len("index ") :], "tlog-proof: index", ProofFormatError, maximum=MAX_TREE_SIZE
    )
    hashes = lines[pos + 1 :]
    if len(hashes) > MAX_INCLUSION_HASHES:
        raise ProofFormatError("tlog-proof: more than 63 inclusion proof hashes")
    proof = tuple(_b64(h, f"proof hash {i}") for i, h in enumerate(hashes))
    return TlogProof(index, proof, checkpoint, extra)


@dataclass(frozen=True)
class VerifiedProof:
    """What a successful verification established."""

    checkpoint: Checkpoint
    index: int
    leaf_hash: bytes
    log_key: VerifierKey
    cosignatures: tuple[Cosignature, ...]
    quorum: QuorumResult
    extra: bytes | None  # NOT authenticated (tlog-proof): never trust it implicitly


def verify_tlog_proof(
    proof: str | bytes | TlogProof,
    entry: bytes,
    policy: Policy,
    *,
    now: int,
) -> VerifiedProof:
    """Verify that ``entry`` is in a log the policy trusts, witnessed by its quorum.

    ``now`` (POSIX seconds, fixed once by the caller, as python-tuf and
    sigstore-python fix their reference time) rejects cosignatures
    timestamped after it; there is no default, so the check cannot be left
    out by accident. A caller that tolerates clock skew adds it to ``now``.
    Raises OriginError / SignatureError / ThresholdError /
    ProofError (TrustError family) or ProofFormatError / NoteFormatError /
    CheckpointFormatError (FormatError family).
    """
    # Step 1: the leaf hash. For this project's logs an entry is stored as
    # its raw bytes (a DSSE envelope), so the leaf is RFC 6962's hash of them.
    return verify_tlog_proof_leaf(proof, leaf_hash(entry), policy, now=now)


def verify_tlog_proof_leaf(
    proof: str | bytes | TlogProof,
    leaf: bytes,
    policy: Policy,
    *,
    now: int,
) -> VerifiedProof:
    """:func:`verify_tlog_proof` for a caller that computed the leaf hash itself.

    Raises what :func:`verify_tlog_proof` raises.
    """
    tp = proof if isinstance(proof, TlogProof) else parse(proof)
    if not isinstance(leaf, bytes) or len(leaf) != HASH_SIZE:
        raise ProofFormatError("leaf hash must be 32 bytes")

    # Step 2: the origin must be a log the policy lists, and the checkpoint
    # must carry a valid signature by that log's key.
    unverified = tp.checkpoint_body()
    log_keys = policy.log_keys(unverified.origin)
    if not log_keys:
        raise OriginError(f"checkpoint origin {unverified.origin!r} is not a log in the policy")
    note = open_note(tp.checkpoint, log_keys)
    log_key = note.verified_keys[0]
    cp = parse_checkpoint(note.text)

    # Step 3: verify every cosignature by a policy witness (unknown signers
    # are ignored), then require the quorum over distinct witnesses.
    cosigs = verify_cosignatures(tp.checkpoint, policy.witness_keys(), now=now)
    quorum = policy.require_quorum(c.key for c in cosigs)

    # Step 4: the inclusion proof binds the leaf to the checkpoint's root. An
    # index outside the tree is a malformed proof, as in verify_inclusion.
    if tp.index >= cp.size:
        raise ProofFormatError(f"index {tp.index} is not in a tree of size {cp.size}")
    verify_inclusion(leaf, tp.index, cp.size, tp.proof, cp.root_hash)
    return VerifiedProof(cp, tp.index, leaf, log_key, cosigs, quorum, tp.extra)
