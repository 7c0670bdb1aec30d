"""rebuild-bundle/v1: everything an updater needs to decide offline, in one file.

A bundle carries the maintainer's release envelope, the rebuild attestation
envelopes for the artifact, a C2SP tlog-proof@v1 for each envelope, the one
cosigned checkpoint all those proofs are against, and optionally consistency
proofs from earlier tree sizes to that checkpoint (so an updater that
accepted an older checkpoint can check the log did not fork). Layout and
limits are in docs/formats.md.

Nothing in a bundle is trusted because it is in the bundle: the gate
(:mod:`verify.gate`) checks every signature, proof and checkpoint against
the updater's policy. This module only parses strictly and within bounds:
at most :data:`MAX_BUNDLE_SIZE` bytes (and the caller's smaller limit),
JSON nested at most :data:`MAX_DEPTH` deep (checked before the JSON parser
runs), exact field sets, no duplicate keys, canonical base64, no duplicate
envelopes, every proof a well-formed tlog-proof@v1. No I/O.
"""

from __future__ import annotations

import base64
import functools
import re
from dataclasses import dataclass, field
from typing import Any, Final

from verify.checkpoint import Checkpoint
from verify.checkpoint import parse as parse_checkpoint
from verify.dsse import MAX_ENVELOPE_SIZE, dump_json, load_json
from verify.errors import BundleFormatError, FormatError
from verify.merkle import HASH_SIZE, MAX_TREE_SIZE
from verify.note import split_note
from verify.parsing import decode_base64, exact_fields
from verify.tlogproof import TlogProof
from verify.tlogproof import parse as parse_proof

FORMAT: Final = "rebuild-bundle/v1"
# Hard cap whatever a policy says: 256 attestations of 64 KiB plus proofs fit.
MAX_BUNDLE_SIZE: Final = 16 << 20
# The format itself nests 4 deep (bundle > consistency > proof > hashes).
MAX_DEPTH: Final = 8
MAX_ATTESTATIONS: Final = 256
MAX_CONSISTENCY_PROOFS: Final = 64
MAX_CONSISTENCY_HASHES: Final = 64
MAX_CHECKPOINT_TEXT: Final = 64 * 1024
MAX_PROOF_TEXT: Final = 128 * 1024

_TOP_FIELDS: Final = frozenset({"format", "checkpoint", "release", "attestations", "consistency"})
_TOP_REQUIRED: Final = frozenset({"format", "checkpoint", "release", "attestations"})
_ENTRY_FIELDS: Final = frozenset({"envelope", "proof"})
_CONSISTENCY_FIELDS: Final = frozenset({"old_size", "hashes"})
_BRACKETS = re.compile(rb"[\[\]{}]")


@dataclass(frozen=True)
class LoggedEnvelope:
    """A DSSE envelope (exact bytes, as logged) and its tlog-proof@v1. Never raises."""

    envelope: bytes = field(repr=False)
    proof: TlogProof

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this entry (base64 envelope, proof text). Never raises."""
        return {"envelope": base64.b64encode(self.envelope).decode(), "proof": self.proof.encode()}


@dataclass(frozen=True)
class ConsistencyProof:
    """RFC 9162 consistency proof from tree size ``old_size`` to the bundle's checkpoint.

    Construction raises BundleFormatError for a size outside 1..2**63-1, more
    than 64 hashes or a hash that is not 32 bytes.
    """

    old_size: int
    hashes: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if type(self.old_size) is not int or not 1 <= self.old_size <= MAX_TREE_SIZE:
            raise BundleFormatError("consistency old_size must be an integer in 1..2**63-1")
        if len(self.hashes) > MAX_CONSISTENCY_HASHES:
            raise BundleFormatError(f"consistency proof has more than {MAX_CONSISTENCY_HASHES}")
        if any(not isinstance(h, bytes) or len(h) != HASH_SIZE for h in self.hashes):
            raise BundleFormatError(f"consistency proof hashes must be {HASH_SIZE} bytes")

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this proof (old size, base64 hashes). Never raises."""
        return {
            "old_size": self.old_size,
            "hashes": [base64.b64encode(h).decode() for h in self.hashes],
        }


@dataclass(frozen=True)
class Bundle:
    """A parsed rebuild-bundle/v1. Nothing in it is verified.

    Construction raises BundleFormatError (a checkpoint that is not a
    well-formed signed checkpoint, too many attestations or consistency
    proofs, a repeated envelope or old size); the accessors never raise.
    """

    checkpoint: str
    """The signed checkpoint note (log signature and cosignatures), verbatim."""
    release: LoggedEnvelope
    attestations: tuple[LoggedEnvelope, ...]
    consistency: tuple[ConsistencyProof, ...] = ()

    def __post_init__(self) -> None:
        _check_checkpoint(self.checkpoint)
        try:
            self._body  # noqa: B018 (parse and cache the checkpoint now)
        except FormatError as e:
            raise BundleFormatError(f"checkpoint: {e}") from None
        if len(self.attestations) > MAX_ATTESTATIONS:
            raise BundleFormatError(f"more than {MAX_ATTESTATIONS} attestations")
        seen = {self.release.envelope}
        for i, a in enumerate(self.attestations):
            if a.envelope in seen:
                raise BundleFormatError(f"attestations[{i}] repeats an envelope already present")
            seen.add(a.envelope)
        if len(self.consistency) > MAX_CONSISTENCY_PROOFS:
            raise BundleFormatError(f"more than {MAX_CONSISTENCY_PROOFS} consistency proofs")
        sizes = [c.old_size for c in self.consistency]
        if len(set(sizes)) != len(sizes):
            raise BundleFormatError("two consistency proofs from the same old_size")

    def checkpoint_body(self) -> Checkpoint:
        """The checkpoint, parsed but NOT verified (parsed at construction). Never raises."""
        return self._body

    @functools.cached_property
    def _body(self) -> Checkpoint:
        text, _ = split_note(self.checkpoint)
        return parse_checkpoint(text)

    def consistency_from(self, old_size: int) -> ConsistencyProof | None:
        """The consistency proof from ``old_size``, if the bundle carries one. Never raises."""
        return next((c for c in self.consistency if c.old_size == old_size), None)

    def to_dict(self) -> dict[str, Any]:
        """The rebuild-bundle/v1 JSON object. Never raises."""
        doc: dict[str, Any] = {
            "format": FORMAT,
            "checkpoint": self.checkpoint,
            "release": self.release.to_dict(),
            "attestations": [a.to_dict() for a in self.attestations],
        }
        if self.consistency:
            doc["consistency"] = [c.to_dict() for c in self.consistency]
        return doc

    def encode(self) -> bytes:
        """Compact, key-sorted JSON and a newline; raises BundleFormatError beyond the cap."""
        data = dump_json(self.to_dict()) + b"\n"
        if len(data) > MAX_BUNDLE_SIZE:
            raise BundleFormatError(f"bundle would be {len(data)} bytes, over {MAX_BUNDLE_SIZE}")
        return data


def _check_checkpoint(note: object) -> None:
    if not isinstance(note, str) or not note:
        raise BundleFormatError("checkpoint must be a signed note string")
    if len(note) > MAX_CHECKPOINT_TEXT:
        raise BundleFormatError(f"checkpoint is longer than {MAX_CHECKPOINT_TEXT} characters")


def json_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in JSON text (strings skipped).

    Runs on raw bytes before any JSON parser so a hostile file of brackets
    cannot drive a recursive parser; malformed text gives some depth and is
    then refused by the parser. Never raises. Escaped backslashes and quotes are dropped
    first, so every remaining quote opens or closes a string and the text
    outside strings is every other piece between quotes.
    """
    plain = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b" ".join(plain.split(b'"')[0::2])
    depth = deepest = 0
    for m in _BRACKETS.finditer(outside):
        if m.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _b64(value: object, what: str) -> bytes:
    return decode_base64(value, what, BundleFormatError)


def _fields(
    doc: object, what: str, allowed: frozenset[str], required: frozenset[str]
) -> dict[str, Any]:
    return exact_fields(doc, what, allowed, required, BundleFormatError)


def _entry(doc: object, what: str) -> LoggedEnvelope:
    d = _fields(doc, what, _ENTRY_FIELDS, _ENTRY_FIELDS)
    envelope = _b64(d["envelope"], f"{what}.envelope")
    if not envelope or len(envelope) > MAX_ENVELOPE_SIZE:
        raise BundleFormatError(f"{what}.envelope must be 1..{MAX_ENVELOPE_SIZE} bytes")
    text = d["proof"]
    if not isinstance(text, str) or len(text) > MAX_PROOF_TEXT:
        raise BundleFormatError(f"{what}.proof must be tlog-proof@v1 text")
    try:
        proof = parse_proof(text)
    except FormatError as e:
        raise BundleFormatError(f"{what}.proof: {e}") from None
    if proof.encode() != text:
        raise BundleFormatError(f"{what}.proof is not in canonical tlog-proof@v1 form")
    return LoggedEnvelope(envelope, proof)


def _consistency(doc: object, what: str) -> ConsistencyProof:
    d = _fields(doc, what, _CONSISTENCY_FIELDS, _CONSISTENCY_FIELDS)
    hashes = d["hashes"]
    if not isinstance(hashes, list) or len(hashes) > MAX_CONSISTENCY_HASHES:
        raise BundleFormatError(f"{what}.hashes must be a list of at most 64 hashes")
    return ConsistencyProof(
        d["old_size"], tuple(_b64(h, f"{what}.hashes[{i}]") for i, h in enumerate(hashes))
    )


def parse_bundle(data: bytes, *, limit: int = MAX_BUNDLE_SIZE) -> Bundle:
    """Parse rebuild-bundle/v1 bytes strictly; verify nothing.

    ``limit`` (at most :data:`MAX_BUNDLE_SIZE`) is the caller's size cap,
    e.g. a package's ``max_bundle_bytes``. Raises BundleFormatError.
    """
    if not isinstance(data, bytes):
        raise BundleFormatError("bundle must be given as bytes")
    cap = min(limit, MAX_BUNDLE_SIZE)
    if len(data) > cap:
        raise BundleFormatError(
            f"bundle is {len(data)} bytes, over the {cap}-byte limit", "bundle-too-large"
        )
    depth = json_depth(data)
    if depth > MAX_DEPTH:
        raise BundleFormatError(
            f"bundle nests {depth} levels deep, more than {MAX_DEPTH}", "bundle-too-deep"
        )
    try:
        doc = load_json(data, "bundle", cap)
    except FormatError as e:
        raise BundleFormatError(str(e)) from None
    d = _fields(doc, "bundle", _TOP_FIELDS, _TOP_REQUIRED)
    if d["format"] != FORMAT:
        raise BundleFormatError(f"bundle format must be {FORMAT!r}")
    attestations = d["attestations"]
    if not isinstance(attestations, list):
        raise BundleFormatError("bundle attestations must be a list")
    if len(attestations) > MAX_ATTESTATIONS:
        raise BundleFormatError(f"bundle has more than {MAX_ATTESTATIONS} attestations")
    consistency = d.get("consistency", [])
    if not isinstance(consistency, list) or len(consistency) > MAX_CONSISTENCY_PROOFS:
        raise BundleFormatError(
            f"bundle consistency must be a list of at most {MAX_CONSISTENCY_PROOFS} proofs"
        )
    return Bundle(
        checkpoint=d["checkpoint"],
        release=_entry(d["release"], "release"),
        attestations=tuple(_entry(a, f"attestations[{i}]") for i, a in enumerate(attestations)),
        consistency=tuple(_consistency(c, f"consistency[{i}]") for i, c in enumerate(consistency)),
    )
