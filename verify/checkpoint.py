"""C2SP tlog-checkpoint: the signed tree head of a transparency log.

A checkpoint body is ``<origin>\\n<size>\\n<base64 root>\\n`` followed by
optional non-empty extension lines. This module parses that body strictly
(one canonical encoding per checkpoint, so two different byte strings never
mean the same tree head) and opens a signed checkpoint against *one* trusted
log key and origin. It decides nothing about witnesses (see
:mod:`verify.cosignature`) and never reads files or the network.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Final

from verify.errors import CheckpointFormatError, KeyFormatError, OriginError
from verify.keys import ALG_ED25519, SigningKey, VerifierKey
from verify.merkle import EMPTY_ROOT, HASH_SIZE, MAX_TREE_SIZE
from verify.note import Note, open_note, sign_note, split_note
from verify.parsing import decode_base64, parse_decimal

MAX_CHECKPOINT_BODY: Final = 64 * 1024
MAX_EXTENSION_LINES: Final = 64
MAX_ORIGIN_LENGTH: Final = 1024


def _parse_hash(text: str) -> bytes:
    raw = decode_base64(text, "root hash", CheckpointFormatError)
    if len(raw) != HASH_SIZE:
        raise CheckpointFormatError(f"root hash must be {HASH_SIZE} bytes, got {len(raw)}")
    return raw


@dataclass(frozen=True)
class Checkpoint:
    """A parsed checkpoint body. Construction validates every field."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin:
            raise CheckpointFormatError("origin must be a non-empty string")
        if len(self.origin) > MAX_ORIGIN_LENGTH:
            raise CheckpointFormatError("origin is too long")
        if any(ch < "\x20" or ch == "\x7f" for ch in self.origin):
            raise CheckpointFormatError("origin contains a control character")
        if (
            not isinstance(self.size, int)
            or isinstance(self.size, bool)
            or not 0 <= self.size <= MAX_TREE_SIZE
        ):
            raise CheckpointFormatError("tree size must be an integer in 0..2**63-1")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != HASH_SIZE:
            raise CheckpointFormatError(f"root hash must be {HASH_SIZE} bytes")
        if len(self.extensions) > MAX_EXTENSION_LINES:
            raise CheckpointFormatError("too many extension lines")
        for ext in self.extensions:
            if not isinstance(ext, str) or not ext:
                raise CheckpointFormatError("extension lines must be non-empty")
            if any(ch < "\x20" or ch == "\x7f" for ch in ext):
                raise CheckpointFormatError("extension line contains a control character")

    def body(self) -> str:
        """The note text: origin, size, base64 root, extensions, each newline-ended.

        Never raises.
        """
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode()]
        lines.extend(self.extensions)
        return "\n".join(lines) + "\n"

    @property
    def has_valid_empty_root(self) -> bool:
        """False only for a size-0 checkpoint whose root is not SHA-256(""). Never raises."""
        return self.size != 0 or self.root_hash == EMPTY_ROOT


def parse(body: str | bytes) -> Checkpoint:
    """Parse a checkpoint body (the note text, without signatures), strictly.

    Raises CheckpointFormatError for anything but the one canonical body: oversized, not
    UTF-8, missing or empty lines, a carriage return, a size that is not an ASCII
    decimal in 0..2**63-1, a root that is not 32 bytes of canonical base64.
    """
    if isinstance(body, bytes):
        if len(body) > MAX_CHECKPOINT_BODY:
            raise CheckpointFormatError("checkpoint body too large")
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointFormatError("checkpoint body is not UTF-8") from None
    if len(body) > MAX_CHECKPOINT_BODY:
        raise CheckpointFormatError("checkpoint body too large")
    if not body.endswith("\n"):
        raise CheckpointFormatError("checkpoint body must end in a newline")
    lines = body[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointFormatError("checkpoint needs origin, size and root hash lines")
    if any(line == "" for line in lines):
        raise CheckpointFormatError("checkpoint has an empty line")
    if any("\r" in line for line in lines):
        raise CheckpointFormatError("checkpoint contains a carriage return")
    origin, size_text, hash_text, *extensions = lines
    size = parse_decimal(size_text, "tree size", CheckpointFormatError, maximum=MAX_TREE_SIZE)
    cp = Checkpoint(origin, size, _parse_hash(hash_text), tuple(extensions))
    if cp.body() != body:  # pragma: no cover - the checks above make this unreachable
        raise CheckpointFormatError("checkpoint body is not in canonical form")
    return cp


def sign_checkpoint(cp: Checkpoint, key: SigningKey) -> str:
    """Sign a checkpoint as a signed note with the log's Ed25519 key.

    Raises NoteFormatError when the body cannot be a note (a control character in an
    extension).
    """
    return sign_note(cp.body(), [key])


def open_checkpoint(
    note: str | bytes, log_key: VerifierKey, origin: str | None = None
) -> tuple[Checkpoint, Note]:
    """Verify a signed checkpoint by ``log_key`` for ``origin``; parse its body.

    ``origin`` defaults to the key's name (C2SP: a log's key name is its
    origin). Signatures by other keys (witness cosignatures) are kept,
    unverified, in the returned Note. Raises SignatureError when the log did
    not sign or its signature is bad, OriginError for another log's
    checkpoint, CheckpointFormatError / NoteFormatError when malformed.
    """
    if log_key.algorithm != ALG_ED25519:
        raise KeyFormatError(f"log key {log_key.name} is not an Ed25519 (type 0x01) note key")
    expected = log_key.name if origin is None else origin
    opened = open_note(note, [log_key])
    cp = parse(opened.text)
    if cp.origin != expected:
        raise OriginError(f"checkpoint is for origin {cp.origin!r}, expected {expected!r}")
    return cp, opened


def checkpoint_origin(note: str | bytes) -> str:
    """The origin line of a (signed) checkpoint, unverified, for routing only.

    Raises NoteFormatError or CheckpointFormatError when the note or its body is
    malformed.
    """
    text, _ = split_note(note)
    return parse(text).origin
