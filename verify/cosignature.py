"""C2SP tlog-cosignature/v1 (Ed25519, key type 0x04) over checkpoints.

A witness cosignature is a note signature line whose signature is
``u64be timestamp || Ed25519("cosignature/v1\\ntime <ts>\\n" || body)``. This
module produces such lines for a witness and verifies them against the
witness keys a caller trusts, returning one :class:`Cosignature` per
*distinct* trusted key. It decides nothing about how many cosignatures are
enough (that is :mod:`verify.tlog_policy`) and never reads files or clocks:
the signing time is always passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from verify.errors import KeyFormatError, NoteFormatError, SignatureError, UnsignedError
from verify.keys import ALG_COSIGNATURE_V1, SigningKey, VerifierKey
from verify.note import (
    SIG_PREFIX,
    Signature,
    cosignature_timestamp,
    sign_note,
    signature_valid,
    split_note,
)

MAX_TIMESTAMP: Final = (1 << 63) - 1
MAX_RESPONSE_LINES: Final = 16


@dataclass(frozen=True)
class Cosignature:
    """A verified cosignature: which trusted witness key, and when it signed."""

    key: VerifierKey
    timestamp: int
    signature: Signature


def _check_timestamp(ts: int) -> int:
    if not isinstance(ts, int) or isinstance(ts, bool) or not 0 < ts <= MAX_TIMESTAMP:
        raise NoteFormatError("cosignature timestamp must be in 1..2**63-1")
    return ts


def cosign(body: str, key: SigningKey, timestamp: int) -> str:
    """The cosignature/v1 signature line (newline-ended) of ``key`` over ``body``.

    ``body`` is the checkpoint text without signatures; ``timestamp`` is
    POSIX seconds and must not be zero (tlog-witness forbids it).

    Raises NoteFormatError for a timestamp outside 1..2**63-1 or a body that cannot be a
    note.
    """
    _check_timestamp(timestamp)
    note = sign_note(body, [key], cosign_time=timestamp)
    return note[len(body) + 1 :]


def witness_key(key: SigningKey) -> VerifierKey:
    """The type-0x04 verifier key under which ``key``'s cosignatures verify. Never raises."""
    return key.verifier_key(ALG_COSIGNATURE_V1)


def _verify(
    text: str,
    sigs: Iterable[Signature],
    witness_keys: Iterable[VerifierKey],
    max_timestamp: int | None,
) -> tuple[Cosignature, ...]:
    index: dict[tuple[str, int], VerifierKey] = {}
    for k in witness_keys:
        if k.algorithm != ALG_COSIGNATURE_V1:
            raise KeyFormatError(f"witness key {k.name} is not a cosignature/v1 (0x04) key")
        ident = (k.name, k.key_hash)
        if ident in index and index[ident] != k:
            raise KeyFormatError(f"ambiguous witness keys for {k.name}+{k.key_id}")
        index[ident] = k
    # Keyed by public key: one witness key listed under two names (two
    # verifier keys, two key IDs) is still one witness, as in verify.dsse.
    found: dict[bytes, Cosignature] = {}
    for sig in sigs:
        key = index.get((sig.name, sig.key_hash))
        if key is None:
            continue  # unknown signers are ignored (signed-note, tlog-witness)
        if not signature_valid(key, text, sig.signature):
            # A line naming a trusted key with a bad signature makes the note
            # malformed (signed-note); fail closed rather than skip it.
            raise SignatureError(f"invalid cosignature by {key.name}+{key.key_id}")
        ts = cosignature_timestamp(sig)
        if ts == 0 or ts > MAX_TIMESTAMP:
            raise SignatureError(f"cosignature by {key.name} has timestamp {ts} out of range")
        if max_timestamp is not None and ts > max_timestamp:
            raise SignatureError(f"cosignature by {key.name} is from the future ({ts})")
        if key.public_key not in found:  # one witness counts once, however often it signed
            found[key.public_key] = Cosignature(key, ts, sig)
    return tuple(found.values())


def verify_cosignatures(
    note: str | bytes,
    witness_keys: Iterable[VerifierKey],
    *,
    max_timestamp: int | None = None,
) -> tuple[Cosignature, ...]:
    """Verify every cosignature in a signed checkpoint by a trusted witness key.

    Returns one Cosignature per distinct trusted key that signed (possibly
    none). Raises SignatureError when a line names a trusted key but its
    signature is bad or its timestamp is zero or beyond ``max_timestamp``.
    """
    text, sigs = split_note(note)
    return _verify(text, sigs, witness_keys, max_timestamp)


def parse_signature_lines(data: str | bytes) -> list[Signature]:
    """Parse a tlog-witness 200 response body: one or more signature lines.

    Raises NoteFormatError for more than 64 KiB, non-UTF-8 text, anything but 1 to 16
    well-formed signature lines.
    """
    if isinstance(data, bytes):
        if len(data) > 64 * 1024:
            raise NoteFormatError("cosignature response too large")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteFormatError("cosignature response is not UTF-8") from None
    if not data.startswith(SIG_PREFIX) or data.count("\n") > MAX_RESPONSE_LINES:
        raise NoteFormatError("cosignature response must be 1..16 signature lines")
    # Reuse the note parser: a dummy text plus the lines is a note.
    _, sigs = split_note("x\n\n" + data)
    return sigs


def verify_witness_response(
    body: str,
    response: str | bytes,
    witness_keys: Iterable[VerifierKey],
    *,
    max_timestamp: int | None = None,
) -> tuple[Cosignature, ...]:
    """Verify a witness's add-checkpoint response for checkpoint ``body``.

    Returns the valid cosignatures by trusted keys; raises SignatureError
    when none of the trusted keys cosigned.
    """
    cosigs = _verify(body, parse_signature_lines(response), witness_keys, max_timestamp)
    if not cosigs:
        raise UnsignedError("witness response has no cosignature by a trusted witness key")
    return cosigs


def add_signatures(note: str, lines: Iterable[Signature]) -> str:
    """Append signature lines to a signed note, skipping exact duplicates.

    Raises NoteFormatError when ``note`` is not a well-formed signed note.
    """
    text, sigs = split_note(note)
    merged = list(sigs)
    for s in lines:
        if s not in merged:
            merged.append(s)
    return text + "\n" + "".join(s.line() for s in merged)
