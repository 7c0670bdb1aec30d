"""C2SP tlog-cosignature/v1 (Ed25519, key type 0x04) over checkpoints.

A witness cosignature is a note signature line whose signature is
``u64be timestamp || Ed25519("cosignature/v1\\ntime <ts>\\n" || body)``. This
module produces such lines for a witness and verifies them against the
witness keys a caller trusts, returning one :class:`Cosignature` per
*distinct* trusted key. It decides nothing about how many cosignatures are
enough (that is :mod:`verify.tlog_policy`) and never reads files or clocks:
the signing time is always passed in, and so is the reference time ``now``
that every verification needs (POSIX seconds, fixed once by the caller, as
python-tuf and sigstore-python fix theirs): a cosignature dated after it is
refused. There is no default, so the future-timestamp check cannot be left
out by accident; a caller that tolerates clock skew adds
:data:`MAX_CLOCK_SKEW` to its clock.
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
MAX_CLOCK_SKEW: Final = 300
"""Seconds a cosignature may be dated after ``now`` (clocks differ a little)."""


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


def _index_keys(witness_keys: Iterable[VerifierKey]) -> dict[tuple[str, int], VerifierKey]:
    index: dict[tuple[str, int], VerifierKey] = {}
    for k in witness_keys:
        if k.algorithm != ALG_COSIGNATURE_V1:
            raise KeyFormatError(f"witness key {k.name} is not a cosignature/v1 (0x04) key")
        ident = (k.name, k.key_hash)
        if ident in index and index[ident] != k:
            raise KeyFormatError(f"ambiguous witness keys for {k.name}+{k.key_id}")
        index[ident] = k
    return index


def _trusted_cosignatures(
    text: str, sigs: Iterable[Signature], witness_keys: Iterable[VerifierKey]
) -> list[Cosignature]:
    """Every valid line by a trusted key, in order, whatever its date."""
    index = _index_keys(witness_keys)
    valid: list[Cosignature] = []
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
        valid.append(Cosignature(key, ts, sig))
    return valid


def _distinct(cosigs: Iterable[Cosignature]) -> tuple[Cosignature, ...]:
    # Keyed by public key: one witness key listed under two names (two
    # verifier keys, two key IDs) is still one witness, as in verify.dsse.
    found: dict[bytes, Cosignature] = {}
    for c in cosigs:
        found.setdefault(c.key.public_key, c)  # one witness counts once, however often
    return tuple(found.values())


def _check_now(now: int) -> None:
    if type(now) is not int or now < 0:
        raise ValueError("now must be a non-negative integer (POSIX seconds)")


def _refuse_future(cosigs: Iterable[Cosignature], now: int) -> None:
    for c in cosigs:
        if c.timestamp > now:
            raise SignatureError(f"cosignature by {c.key.name} is from the future ({c.timestamp})")


def verify_cosignatures(
    note: str | bytes,
    witness_keys: Iterable[VerifierKey],
    *,
    now: int,
) -> tuple[Cosignature, ...]:
    """Verify every cosignature in a signed checkpoint by a trusted witness key.

    Returns one Cosignature per distinct trusted key that signed (possibly
    none). ``now`` (POSIX seconds) is required: a cosignature dated after it
    is refused.

    Raises SignatureError when a line names a trusted key but its signature
    is bad or its timestamp is zero or after ``now``; KeyFormatError for a
    witness key that is not a 0x04 key or two different keys under one name
    and key ID; NoteFormatError for a malformed note; ValueError only for a
    programming error (``now`` not a non-negative int).
    """
    _check_now(now)
    text, sigs = split_note(note)
    valid = _trusted_cosignatures(text, sigs, witness_keys)
    _refuse_future(valid, now)
    return _distinct(valid)


@dataclass(frozen=True)
class DatedCosignatures:
    """A note's verified cosignatures, split by whether they are dated after ``now``."""

    current: tuple[Cosignature, ...]
    future: tuple[Cosignature, ...]


def date_cosignatures(
    note: str | bytes,
    witness_keys: Iterable[VerifierKey],
    *,
    now: int,
) -> DatedCosignatures:
    """:func:`verify_cosignatures` for a caller that reports each future-dated one.

    Instead of refusing the whole note, returns the distinct trusted
    cosignatures dated at or before ``now`` apart from those dated after it
    (:mod:`verify.gate` names every witness whose clock is ahead). The
    caller must treat a non-empty ``future`` as a failure.

    Raises what :func:`verify_cosignatures` raises, except for a future
    timestamp.
    """
    _check_now(now)
    text, sigs = split_note(note)
    cosigs = _distinct(_trusted_cosignatures(text, sigs, witness_keys))
    return DatedCosignatures(
        tuple(c for c in cosigs if c.timestamp <= now),
        tuple(c for c in cosigs if c.timestamp > now),
    )


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
    now: int,
) -> tuple[Cosignature, ...]:
    """Verify a witness's add-checkpoint response for checkpoint ``body``.

    Returns the valid cosignatures by trusted keys. ``now`` (POSIX seconds)
    is required: a cosignature dated after it is refused.

    Raises UnsignedError when none of the trusted keys cosigned;
    SignatureError for a bad signature by a trusted key or a timestamp that
    is zero or after ``now``; NoteFormatError for a malformed response;
    KeyFormatError and ValueError as :func:`verify_cosignatures`.
    """
    _check_now(now)
    valid = _trusted_cosignatures(body, parse_signature_lines(response), witness_keys)
    _refuse_future(valid, now)
    cosigs = _distinct(valid)
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
