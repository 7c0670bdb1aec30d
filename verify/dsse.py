"""DSSE envelopes (github.com/secure-systems-lab/dsse v1.0.0): sign, parse, verify.

An envelope is the JSON object ``{"payloadType", "payload", "signatures":
[{"keyid", "sig"}]}``; each signature is Ed25519 over
``PAE(payloadType, payload)``. This module decides one thing: which of the
caller's trusted keys signed exactly these bytes, and whether that reaches a
threshold. It counts *distinct trusted keys* (by public key), never
signatures. The ``keyid`` is an unauthenticated hint (the signer's C2SP
``name+hexid``); it only narrows which trusted key to try.

Rules, in the order :func:`verify_envelope` applies them (numbered as in
docs/formats.md):

1. The envelope is at most :data:`MAX_ENVELOPE_SIZE` bytes of UTF-8 JSON with
   exactly the fields above (no duplicates, no extras), at most
   :data:`MAX_SIGNATURES` signatures, canonical base64 (standard or URL-safe).
2. Two byte-identical signature entries make the envelope malformed: an honest
   signer never writes one, and rejecting it outright means no code path can
   ever count it twice.
3. ``payloadType`` must be the one the caller expects (in-toto by default).
4. A signature whose keyid names a trusted key must verify under that key, or
   the whole envelope is rejected (a trusted key never signs garbage; if it
   appears to, something is wrong). A signature without a keyid is tried
   against every trusted key not yet counted. Anything else is an unknown
   signer and is ignored.
5. The number of distinct trusted public keys with a valid signature must
   reach the threshold.

It never reads files, never fetches keys, and never trusts a key because an
envelope mentions it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from verify.errors import (
    EnvelopeFormatError,
    KeyFormatError,
    SignatureError,
    ThresholdError,
    UnsignedError,
)
from verify.keys import ALG_ED25519, SigningKey, VerifierKey
from verify.parsing import decode_base64

PAYLOAD_TYPE_INTOTO: Final = "application/vnd.in-toto+json"
# The audit log stores envelopes as entries of at most 64 KiB; nothing larger
# can ever be logged, so nothing larger is worth parsing.
MAX_ENVELOPE_SIZE: Final = 64 * 1024
MAX_SIGNATURES: Final = 32
MAX_KEYID_LENGTH: Final = 512
MAX_PAYLOAD_TYPE_LENGTH: Final = 256
# Ed25519 signatures are 64 bytes; leave room for other algorithms' signatures
# from unknown signers (ignored, but they must still parse).
MAX_SIG_BYTES: Final = 1024
_ENVELOPE_FIELDS: Final = frozenset({"payloadType", "payload", "signatures"})
_SIGNATURE_FIELDS: Final = frozenset({"keyid", "sig"})


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSEv1 pre-authentication encoding of ``payload_type`` and ``body``.

    ``"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`` with LEN the ASCII
    decimal byte length (no leading zeros) and type UTF-8 encoded.

    Raises UnicodeEncodeError for a payload type UTF-8 cannot encode (a lone surrogate).
    """
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(body), body)


def key_hint(key: VerifierKey) -> str:
    """The keyid written for ``key``: its C2SP ``name+hexid`` (a hint only). Never raises."""
    return f"{key.name}+{key.key_id}"


def _b64decode(text: object, what: str) -> bytes:
    """Canonical standard or URL-safe base64, padded or not (the DSSE spec allows each)."""
    return decode_base64(text, what, EnvelopeFormatError, urlsafe=True, unpadded=True)


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise EnvelopeFormatError(f"duplicate JSON field {k!r}")
            seen.add(k)
    return obj


def _reject_constant(name: str) -> Any:
    raise EnvelopeFormatError(f"JSON constant {name} is not allowed")


def _reject_lone_surrogates(doc: Any, what: str) -> None:
    """A ``\\udXXX`` escape without its pair decodes to a string no UTF-8 can hold."""
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise EnvelopeFormatError(f"{what} holds a lone UTF-16 surrogate") from None


# One decoder for every call: building one per document cost ~5 us an entry.
_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant
)


def load_json(data: bytes, what: str, limit: int) -> Any:
    """Strict, bounded JSON: UTF-8 (no BOM), no duplicate fields, no NaN/Infinity,
    no lone surrogates, no integer Python cannot convert.

    Raises EnvelopeFormatError for oversized, non-UTF-8, invalid or too deeply nested
    JSON, a duplicate field, NaN/Infinity or a lone surrogate.
    """
    if len(data) > limit:
        raise EnvelopeFormatError(f"{what} larger than the {limit}-byte limit")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise EnvelopeFormatError(f"{what} is not UTF-8 (byte {e.start})") from None
    if text.startswith("\ufeff"):
        raise EnvelopeFormatError(f"{what} starts with a byte order mark (BOM)")
    try:
        doc = _DECODER.decode(text)
    except json.JSONDecodeError as e:
        raise EnvelopeFormatError(
            f"{what} is not valid JSON ({e.msg}: line {e.lineno} column {e.colno})"
        ) from None
    except RecursionError:
        raise EnvelopeFormatError(f"{what} is nested too deeply") from None
    except ValueError:
        # e.g. an integer of more than 4,300 digits (CPython's conversion limit)
        raise EnvelopeFormatError(f"{what} holds a number too long to convert") from None
    if "\\u" in text:  # only an escape can produce a lone surrogate
        _reject_lone_surrogates(doc, what)
    return doc


def dump_json(doc: Any) -> bytes:
    """Compact, key-sorted JSON: the serialization every signed document uses.

    Raises TypeError or ValueError for a value JSON cannot hold (a caller bug).
    """
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class EnvelopeSignature:
    """One entry of ``signatures``: an optional keyid hint and the raw signature."""

    keyid: str
    sig: bytes = field(repr=False)


@dataclass(frozen=True)
class Envelope:
    """A parsed DSSE envelope. Nothing in it is verified yet."""

    payload_type: str
    payload: bytes = field(repr=False)
    signatures: tuple[EnvelopeSignature, ...]

    def to_dict(self) -> dict[str, Any]:
        """The envelope as a JSON object (standard, padded base64). Never raises."""
        sigs: list[dict[str, str]] = []
        for s in self.signatures:
            entry = {"sig": base64.b64encode(s.sig).decode()}
            if s.keyid:
                entry["keyid"] = s.keyid
            sigs.append(entry)
        return {
            "payloadType": self.payload_type,
            "payload": base64.b64encode(self.payload).decode(),
            "signatures": sigs,
        }

    def to_json(self) -> bytes:
        """Compact, key-sorted JSON bytes of the envelope. Never raises."""
        return dump_json(self.to_dict())

    @classmethod
    def parse(cls, data: bytes) -> Envelope:
        """Parse envelope JSON strictly (rules 1 and 2); verify nothing.

        Raises EnvelopeFormatError for anything rules 1 and 2 refuse.
        """
        doc = load_json(data, "envelope", MAX_ENVELOPE_SIZE)
        if not isinstance(doc, dict):
            raise EnvelopeFormatError("envelope must be a JSON object")
        if doc.keys() != _ENVELOPE_FIELDS:  # one comparison on the hot path
            missing = sorted(_ENVELOPE_FIELDS - doc.keys())
            if missing:
                raise EnvelopeFormatError(f"envelope is missing field {missing[0]!r}")
            extra = sorted(doc.keys() - _ENVELOPE_FIELDS)
            raise EnvelopeFormatError(f"envelope has unknown field {extra[0]!r}")
        ptype = doc["payloadType"]
        if not isinstance(ptype, str) or not ptype or len(ptype) > MAX_PAYLOAD_TYPE_LENGTH:
            raise EnvelopeFormatError("envelope payloadType must be a short non-empty string")
        payload = _b64decode(doc["payload"], "envelope payload")
        raw_sigs = doc["signatures"]
        if not isinstance(raw_sigs, list) or not raw_sigs:
            raise EnvelopeFormatError("envelope signatures must be a non-empty list")
        if len(raw_sigs) > MAX_SIGNATURES:
            raise EnvelopeFormatError(f"envelope has more than {MAX_SIGNATURES} signatures")
        sigs: list[EnvelopeSignature] = []
        for i, entry in enumerate(raw_sigs):
            if not isinstance(entry, dict):
                raise EnvelopeFormatError(f"signature {i} must be a JSON object")
            if not entry.keys() <= _SIGNATURE_FIELDS:
                extra = sorted(entry.keys() - _SIGNATURE_FIELDS)
                raise EnvelopeFormatError(f"signature {i} has unknown field {extra[0]!r}")
            if "sig" not in entry:
                raise EnvelopeFormatError(f"signature {i} is missing field 'sig'")
            keyid = entry.get("keyid", "")
            if not isinstance(keyid, str) or len(keyid) > MAX_KEYID_LENGTH:
                raise EnvelopeFormatError(f"signature {i} keyid must be a short string")
            sig = _b64decode(entry["sig"], f"signature {i}")
            if not sig or len(sig) > MAX_SIG_BYTES:
                raise EnvelopeFormatError(f"signature {i} has an implausible length")
            s = EnvelopeSignature(keyid, sig)
            if s in sigs:  # rule 2
                raise EnvelopeFormatError(f"signature {i} duplicates an earlier signature")
            sigs.append(s)
        return cls(ptype, payload, tuple(sigs))


@dataclass(frozen=True)
class VerificationResult:
    """Who signed, measured against a threshold (after python-tuf's result).

    ``signed`` lists distinct trusted keys whose signature verified;
    ``unsigned`` the trusted keys that did not sign; ``ignored`` counts
    signatures from keys the caller does not trust.
    """

    threshold: int
    signed: tuple[VerifierKey, ...]
    unsigned: tuple[VerifierKey, ...]
    ignored: int

    @property
    def verified(self) -> bool:
        """True when at least ``threshold`` distinct trusted keys signed. Never raises."""
        return len(self.signed) >= self.threshold

    @property
    def missing(self) -> int:
        """How many more distinct trusted keys would be needed. Never raises."""
        return max(0, self.threshold - len(self.signed))


@dataclass(frozen=True)
class VerifiedEnvelope:
    """An envelope whose signatures met the threshold, with the result."""

    envelope: Envelope
    result: VerificationResult

    @property
    def payload(self) -> bytes:
        """The payload bytes the threshold of trusted keys signed. Never raises."""
        return self.envelope.payload


def _trusted_index(keys: Iterable[VerifierKey]) -> list[VerifierKey]:
    unique: list[VerifierKey] = []
    hints: dict[str, VerifierKey] = {}
    for k in keys:
        if k.algorithm != ALG_ED25519:
            raise KeyFormatError(
                f"{key_hint(k)}: DSSE keys must be Ed25519 signed-note keys (type 0x01)"
            )
        hint = key_hint(k)
        if hint in hints and hints[hint] != k:
            raise KeyFormatError(f"ambiguous trusted keys for {hint}")
        if k not in unique:
            hints[hint] = k
            unique.append(k)
    return unique


def check_signatures(
    envelope: Envelope, trusted: Iterable[VerifierKey], threshold: int = 1
) -> VerificationResult:
    """Apply rules 4 and 5's counting; raise only when a trusted key's signature is bad.

    The result may fall short of the threshold; :func:`verify_envelope` is the
    call that insists on it.

    Raises SignatureError when a signature names a trusted key and does not verify (rule
    4), KeyFormatError for a trusted key that is not Ed25519 or two trusted keys with
    one name and key ID, ValueError for a threshold below 1.
    """
    if threshold < 1:
        raise ValueError("threshold must be at least 1")
    keys = _trusted_index(trusted)
    message = pae(envelope.payload_type, envelope.payload)
    by_hint = {key_hint(k): k for k in keys}
    signed_pubs: set[bytes] = set()
    signed: list[VerifierKey] = []
    ignored = 0
    for s in envelope.signatures:
        named = by_hint.get(s.keyid) if s.keyid else None
        if named is not None:
            # Rule 4: a trusted key named by the hint must have signed correctly.
            if not named.verify_raw(message, s.sig):
                raise SignatureError(f"invalid signature by trusted key {s.keyid}")
            candidate: VerifierKey | None = named
        elif not s.keyid:
            candidate = next(
                (
                    k
                    for k in keys
                    if k.public_key not in signed_pubs and k.verify_raw(message, s.sig)
                ),
                None,
            )
        else:
            candidate = None
        if candidate is None:
            ignored += 1
            continue
        # Rule 5: count public keys, so one key listed under two names or
        # signing twice still counts once.
        if candidate.public_key not in signed_pubs:
            signed_pubs.add(candidate.public_key)
            signed.append(candidate)
    unsigned = tuple(k for k in keys if k.public_key not in signed_pubs)
    return VerificationResult(threshold, tuple(signed), unsigned, ignored)


def verify_envelope(
    data: bytes,
    trusted: Iterable[VerifierKey],
    threshold: int = 1,
    *,
    payload_type: str = PAYLOAD_TYPE_INTOTO,
) -> VerifiedEnvelope:
    """Parse and verify envelope bytes; return it only if ``threshold`` keys signed.

    Raises EnvelopeFormatError (malformed, wrong payload type), SignatureError
    (a trusted key's signature is invalid) or ThresholdError (too few
    distinct trusted keys signed).
    """
    envelope = Envelope.parse(data)  # rules 1, 2
    if envelope.payload_type != payload_type:  # rule 3
        raise EnvelopeFormatError(
            f"payload type {envelope.payload_type!r} is not the expected {payload_type!r}"
        )
    result = check_signatures(envelope, trusted, threshold)  # rule 4
    if not result.verified:  # rule 5
        if not result.signed:
            raise UnsignedError("no trusted key signed the envelope")
        raise ThresholdError(
            f"{len(result.signed)} of the required {threshold} distinct trusted keys signed"
        )
    return VerifiedEnvelope(envelope, result)


def sign_envelope(
    payload: bytes,
    signers: Sequence[SigningKey],
    *,
    payload_type: str = PAYLOAD_TYPE_INTOTO,
) -> bytes:
    """Sign ``payload`` with each signer; return the envelope's JSON bytes.

    Raises EnvelopeFormatError for no signer, more than 32, the same key twice or an
    envelope over 64 KiB.
    """
    if not signers:
        raise EnvelopeFormatError("an envelope needs at least one signer")
    if len(signers) > MAX_SIGNATURES:
        raise EnvelopeFormatError(f"at most {MAX_SIGNATURES} signers")
    message = pae(payload_type, payload)
    sigs: list[EnvelopeSignature] = []
    seen: set[bytes] = set()
    for s in signers:
        vkey = s.verifier_key()
        if vkey.public_key in seen:
            raise EnvelopeFormatError(f"duplicate signer {key_hint(vkey)}")
        seen.add(vkey.public_key)
        sigs.append(EnvelopeSignature(key_hint(vkey), s.sign_raw(message)))
    data = Envelope(payload_type, payload, tuple(sigs)).to_json()
    if len(data) > MAX_ENVELOPE_SIZE:
        raise EnvelopeFormatError(
            f"envelope would be {len(data)} bytes, over the {MAX_ENVELOPE_SIZE}-byte limit"
        )
    return data
