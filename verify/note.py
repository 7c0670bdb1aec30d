"""C2SP signed notes (c2sp.org/signed-note): sign, parse, verify.

A note is UTF-8 text ending in a newline, a blank line, then one or more
signature lines ``— <name> <base64(key ID || signature)>``. Verification
follows Go's golang.org/x/mod/sumdb/note ``Open``: the text must carry no
control characters but newline; signatures from unknown keys are kept aside,
not trusted; a bad signature from a *known* key rejects the whole note; a
note with no signature from a known key is rejected. This module holds no
policy beyond that: which keys are trusted is the caller's decision.
"""

from __future__ import annotations

import base64
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from verify.errors import KeyFormatError, NoteFormatError, SignatureError, UnsignedError
from verify.keys import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    SigningKey,
    VerifierKey,
    is_valid_name,
)
from verify.parsing import decode_base64

SIG_PREFIX: Final = "\u2014 "
MAX_NOTE_SIZE: Final = 1 << 20
# Go rejects notes with more than 100 signature lines; C2SP requires
# verifiers to accept at least 16.
MAX_SIGNATURES: Final = 100
COSIGNATURE_V1_HEADER: Final = b"cosignature/v1\ntime "


@dataclass(frozen=True)
class Signature:
    """One signature line of a note."""

    name: str
    key_hash: int
    signature: bytes  # the bytes after the 4-byte key ID

    def line(self) -> str:
        """The line ``— <name> <base64(key ID || signature)>`` and its newline. Never
        raises.
        """
        raw = struct.pack(">I", self.key_hash) + self.signature
        return f"{SIG_PREFIX}{self.name} {base64.b64encode(raw).decode()}\n"


@dataclass(frozen=True)
class Note:
    """A parsed note; ``verified`` lists signatures by trusted keys."""

    text: str
    verified: tuple[Signature, ...]
    unverified: tuple[Signature, ...]
    verified_keys: tuple[VerifierKey, ...] = ()

    def signed_by(self, key: VerifierKey) -> bool:
        """True when ``key``'s signature verified. Never raises."""
        return key in self.verified_keys


def cosignature_message(text: str, timestamp: int) -> bytes:
    """The message a tlog-cosignature/v1 signature covers. Never raises."""
    return COSIGNATURE_V1_HEADER + str(timestamp).encode() + b"\n" + text.encode()


def cosignature_timestamp(sig: Signature) -> int:
    """The timestamp a cosignature/v1 signature carries (its first 8 bytes).

    Raises NoteFormatError unless the signature is 72 bytes.
    """
    if len(sig.signature) != 72:
        raise NoteFormatError("cosignature/v1 signature must be 72 bytes")
    return int(struct.unpack(">Q", sig.signature[:8])[0])


def signature_valid(key: VerifierKey, text: str, signature: bytes) -> bool:
    """Check one signature (bytes after the key ID) by ``key`` over ``text``.

    Never raises: an invalid or wrong-length signature, or a key of another type, is
    False.
    """
    if key.algorithm == ALG_ED25519:
        return key.verify_raw(text.encode(), signature)
    if key.algorithm == ALG_COSIGNATURE_V1:
        if len(signature) != 72:
            return False
        (timestamp,) = struct.unpack(">Q", signature[:8])
        return key.verify_raw(cosignature_message(text, timestamp), signature[8:])
    return False


# Every control character but newline (one regex search, not a loop per character).
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f]")


def _check_text(text: str) -> None:
    if _CONTROL.search(text):
        raise NoteFormatError("note contains a control character")


def sign_note(text: str, signers: Sequence[SigningKey], *, cosign_time: int | None = None) -> str:
    """Sign ``text``; with ``cosign_time`` produce cosignature/v1 lines instead.

    Raises NoteFormatError for text that does not end in a newline or holds a control
    character, for no signer and for the same signer twice.
    """
    if not text.endswith("\n"):
        raise NoteFormatError("note text must end in a newline")
    _check_text(text)
    lines: list[str] = []
    seen: set[tuple[str, int]] = set()
    for s in signers:
        if cosign_time is None:
            vkey = s.verifier_key(ALG_ED25519)
            sig = s.sign_raw(text.encode())
        else:
            vkey = s.verifier_key(ALG_COSIGNATURE_V1)
            sig = struct.pack(">Q", cosign_time) + s.sign_raw(
                cosignature_message(text, cosign_time)
            )
        ident = (vkey.name, vkey.key_hash)
        if ident in seen:
            raise NoteFormatError(f"duplicate signer {vkey.name}")
        seen.add(ident)
        lines.append(Signature(vkey.name, vkey.key_hash, sig).line())
    if not lines:
        raise NoteFormatError("a note needs at least one signer")
    return text + "\n" + "".join(lines)


def split_note(data: bytes | str) -> tuple[str, list[Signature]]:
    """Parse a note's structure without verifying: (text, signature lines).

    Raises NoteFormatError for an oversized, non-UTF-8 or malformed note: a control
    character, no signature block, a bad signature line, non-canonical base64, more than
    100 signatures.
    """
    if isinstance(data, bytes):
        if len(data) > MAX_NOTE_SIZE:
            raise NoteFormatError("note too large")
        try:
            msg = data.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteFormatError("note is not valid UTF-8") from None
    else:
        msg = data
        if len(msg) > MAX_NOTE_SIZE:
            raise NoteFormatError("note too large")
    _check_text(msg)
    split = msg.rfind("\n\n")
    if split < 0:
        raise NoteFormatError("malformed note: no signature block")
    text, block = msg[: split + 1], msg[split + 2 :]
    if not block or not block.endswith("\n"):
        raise NoteFormatError("malformed note: signature block must end in a newline")
    sigs: list[Signature] = []
    for line in block[:-1].split("\n"):
        if not line.startswith(SIG_PREFIX):
            raise NoteFormatError("malformed note: bad signature line")
        name, sep, b64 = line[len(SIG_PREFIX) :].partition(" ")
        if not sep or not b64 or not is_valid_name(name):
            raise NoteFormatError("malformed note: bad signature line")
        # Canonical base64 only: Go's note.Open refuses "AAAA=" and stray bits.
        raw = decode_base64(b64, "malformed note: signature", NoteFormatError)
        if len(raw) < 5:
            raise NoteFormatError("malformed note: signature too short")
        sigs.append(Signature(name, int(struct.unpack(">I", raw[:4])[0]), raw[4:]))
        if len(sigs) > MAX_SIGNATURES:
            raise NoteFormatError("malformed note: too many signatures")
    return text, sigs


def _index_keys(keys: Iterable[VerifierKey]) -> dict[tuple[str, int], VerifierKey]:
    index: dict[tuple[str, int], VerifierKey] = {}
    for k in keys:
        ident = (k.name, k.key_hash)
        if ident in index and index[ident] != k:
            raise KeyFormatError(f"ambiguous verifier keys for {k.name}+{k.key_id}")
        index[ident] = k
    return index


def open_note(data: bytes | str, known: Iterable[VerifierKey]) -> Note:
    """Parse and verify a note against ``known`` keys.

    Raises NoteFormatError when malformed, SignatureError when a known key's
    signature is invalid or when no known key signed.
    """
    text, sigs = split_note(data)
    index = _index_keys(known)
    verified: list[Signature] = []
    verified_keys: list[VerifierKey] = []
    unverified: list[Signature] = []
    seen: set[tuple[str, int]] = set()
    seen_unverified: set[Signature] = set()
    for sig in sigs:
        ident = (sig.name, sig.key_hash)
        key = index.get(ident)
        if key is None:
            if sig not in seen_unverified:
                seen_unverified.add(sig)
                unverified.append(sig)
            continue
        if ident in seen:
            continue  # repeated signatures by one key count once
        seen.add(ident)
        if not signature_valid(key, text, sig.signature):
            raise SignatureError(f"invalid signature by {key.name}+{key.key_id}")
        verified.append(sig)
        verified_keys.append(key)
    if not verified:
        raise UnsignedError("note has no verifiable signatures (no known key signed it)")
    return Note(text, tuple(verified), tuple(unverified), tuple(verified_keys))
