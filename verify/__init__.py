"""Consumer side of rebuild: decide from bytes whether to trust a release.

Everything in this package runs with PyNaCl and the Python standard library
alone, so that an updater can vendor it. It decides; it never fetches, never
installs, never prints and never reads a clock: every time-dependent check
takes ``now``. I/O lives in thin callers (``rebuild`` and the updater's
orchestrator).

The names below (``__all__``, pinned by tests/test_verify_api.py) are the
supported surface; each loads its module on first use, so ``import verify``
costs nothing. Errors come in two families: :class:`TrustError` (the bytes
were judged and must not be trusted) and :class:`FormatError` (they could
not be judged).

A maintainer signs a release statement; anyone checks it with the public
key alone:

>>> import hashlib, verify
>>> key = verify.SigningKey("maintainer.example", bytes(32))
>>> recipe = "format = 'rebuild-recipe/v1'\\n"
>>> source = verify.GitSource("https://git.example.org/hello.git", "v1.0.0", "1" * 40)
>>> statement = verify.make_statement(
...     [verify.Subject("hello.phar", hashlib.sha256(b"artifact").hexdigest())],
...     verify.ReleasePredicate(
...         "hello", "1.0.0", source, recipe, hashlib.sha256(recipe.encode()).hexdigest()
...     ),
... )
>>> envelope = verify.sign_statement(statement, [key])
>>> trusted = verify.VerifierKey.parse(str(key.verifier_key()))
>>> verify.verify_statement(envelope, [trusted]).statement == statement
True
>>> stranger = verify.SigningKey("stranger.example", bytes([1]) * 32).verifier_key()
>>> verify.verify_statement(envelope, [stranger])
Traceback (most recent call last):
...
verify.errors.UnsignedError: no trusted key signed the envelope

An updater decides from the artifact, a bundle (``rebuild bundle``), its
policy and what it accepted before, offline, with one reference time::

    policy = verify.parse_update_policy(policy_bytes, load_tlog_policy)
    state = verify.parse_state(state_bytes)  # or verify.EMPTY_STATE
    decision = verify.decide(artifact, bundle, policy, state, now=int(time.time()))
    if decision.accepted:
        new_state = decision.apply(state, installed=True)  # persist, then install
    else:
        for failure in decision.failures:
            print(failure.step, failure.code, failure.reason)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> (module, name in that module). Loaded on first access.
_EXPORTS: dict[str, tuple[str, str]] = {
    # errors
    **{
        name: ("verify.errors", name)
        for name in (
            "BundleFormatError",
            "CheckpointFormatError",
            "DigestMismatchError",
            "EnvelopeFormatError",
            "FormatError",
            "KeyFormatError",
            "NoteFormatError",
            "OriginError",
            "PassphraseError",
            "PolicyError",
            "ProofError",
            "ProofFormatError",
            "SignatureError",
            "StateFormatError",
            "ThresholdError",
            "TileFormatError",
            "TrustError",
            "UnsignedError",
            "VerifyError",
            "VersionError",
        )
    },
    # keys and signed notes
    "SigningKey": ("verify.keys", "SigningKey"),
    "VerifierKey": ("verify.keys", "VerifierKey"),
    "decode_secret_key_file": ("verify.keys", "decode_secret_key_file"),
    "encode_secret_key_file": ("verify.keys", "encode_secret_key_file"),
    "Note": ("verify.note", "Note"),
    "open_note": ("verify.note", "open_note"),
    "sign_note": ("verify.note", "sign_note"),
    # DSSE and in-toto
    "PAYLOAD_TYPE_INTOTO": ("verify.dsse", "PAYLOAD_TYPE_INTOTO"),
    "Envelope": ("verify.dsse", "Envelope"),
    "VerificationResult": ("verify.dsse", "VerificationResult"),
    "VerifiedEnvelope": ("verify.dsse", "VerifiedEnvelope"),
    "sign_envelope": ("verify.dsse", "sign_envelope"),
    "verify_envelope": ("verify.dsse", "verify_envelope"),
    "REBUILD_PREDICATE_TYPE": ("verify.intoto", "REBUILD_PREDICATE_TYPE"),
    "RELEASE_PREDICATE_TYPE": ("verify.intoto", "RELEASE_PREDICATE_TYPE"),
    "EnvironmentRef": ("verify.intoto", "EnvironmentRef"),
    "GitSource": ("verify.intoto", "GitSource"),
    "RebuildPredicate": ("verify.intoto", "RebuildPredicate"),
    "ReleasePredicate": ("verify.intoto", "ReleasePredicate"),
    "SdistSource": ("verify.intoto", "SdistSource"),
    "Statement": ("verify.intoto", "Statement"),
    "Subject": ("verify.intoto", "Subject"),
    "VerifiedStatement": ("verify.intoto", "VerifiedStatement"),
    "make_statement": ("verify.intoto", "make_statement"),
    "sign_statement": ("verify.intoto", "sign_statement"),
    "verify_statement": ("verify.intoto", "verify_statement"),
    # the log: checkpoints, cosignatures, proofs, tlog-policy
    "Checkpoint": ("verify.checkpoint", "Checkpoint"),
    "open_checkpoint": ("verify.checkpoint", "open_checkpoint"),
    "parse_checkpoint": ("verify.checkpoint", "parse"),
    "sign_checkpoint": ("verify.checkpoint", "sign_checkpoint"),
    "Cosignature": ("verify.cosignature", "Cosignature"),
    "cosign": ("verify.cosignature", "cosign"),
    "verify_cosignatures": ("verify.cosignature", "verify_cosignatures"),
    "witness_key": ("verify.cosignature", "witness_key"),
    "leaf_hash": ("verify.merkle", "leaf_hash"),
    "verify_consistency": ("verify.merkle", "verify_consistency"),
    "verify_inclusion": ("verify.merkle", "verify_inclusion"),
    "TlogProof": ("verify.tlogproof", "TlogProof"),
    "VerifiedProof": ("verify.tlogproof", "VerifiedProof"),
    "parse_tlog_proof": ("verify.tlogproof", "parse"),
    "verify_tlog_proof": ("verify.tlogproof", "verify_tlog_proof"),
    "TlogPolicy": ("verify.tlog_policy", "Policy"),
    "parse_tlog_policy": ("verify.tlog_policy", "parse_policy"),
    # the updater's gate
    "PackagePolicy": ("verify.policy", "PackagePolicy"),
    "UpdatePolicy": ("verify.policy", "UpdatePolicy"),
    "parse_update_policy": ("verify.policy", "parse_policy"),
    "Bundle": ("verify.bundle", "Bundle"),
    "parse_bundle": ("verify.bundle", "parse_bundle"),
    "EMPTY_STATE": ("verify.state", "EMPTY_STATE"),
    "InstalledRelease": ("verify.state", "InstalledRelease"),
    "TrustedState": ("verify.state", "TrustedState"),
    "parse_state": ("verify.state", "parse_state"),
    "MAX_CLOCK_SKEW": ("verify.cosignature", "MAX_CLOCK_SKEW"),
    "Decision": ("verify.gate", "Decision"),
    "decide": ("verify.gate", "decide"),
    "Version": ("verify.version", "Version"),
    "parse_version": ("verify.version", "parse_version"),
}

__all__ = [
    "EMPTY_STATE",
    "MAX_CLOCK_SKEW",
    "PAYLOAD_TYPE_INTOTO",
    "REBUILD_PREDICATE_TYPE",
    "RELEASE_PREDICATE_TYPE",
    "Bundle",
    "BundleFormatError",
    "Checkpoint",
    "CheckpointFormatError",
    "Cosignature",
    "Decision",
    "DigestMismatchError",
    "Envelope",
    "EnvelopeFormatError",
    "EnvironmentRef",
    "FormatError",
    "GitSource",
    "InstalledRelease",
    "KeyFormatError",
    "Note",
    "NoteFormatError",
    "OriginError",
    "PackagePolicy",
    "PassphraseError",
    "PolicyError",
    "ProofError",
    "ProofFormatError",
    "RebuildPredicate",
    "ReleasePredicate",
    "SdistSource",
    "SignatureError",
    "SigningKey",
    "StateFormatError",
    "Statement",
    "Subject",
    "ThresholdError",
    "TileFormatError",
    "TlogPolicy",
    "TlogProof",
    "TrustError",
    "TrustedState",
    "UnsignedError",
    "UpdatePolicy",
    "VerificationResult",
    "VerifiedEnvelope",
    "VerifiedProof",
    "VerifiedStatement",
    "VerifierKey",
    "VerifyError",
    "Version",
    "VersionError",
    "cosign",
    "decide",
    "decode_secret_key_file",
    "encode_secret_key_file",
    "leaf_hash",
    "make_statement",
    "open_checkpoint",
    "open_note",
    "parse_bundle",
    "parse_checkpoint",
    "parse_state",
    "parse_tlog_policy",
    "parse_tlog_proof",
    "parse_update_policy",
    "parse_version",
    "sign_checkpoint",
    "sign_envelope",
    "sign_note",
    "sign_statement",
    "verify_consistency",
    "verify_cosignatures",
    "verify_envelope",
    "verify_inclusion",
    "verify_statement",
    "verify_tlog_proof",
    "witness_key",
]


def __getattr__(name: str) -> Any:
    """Load a public name's module on first use. Raises AttributeError for any other name."""
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'verify' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    """The module's names and every public name, loaded or not. Never raises."""
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:  # the same names, for type checkers (tests/test_verify_api.py compares)
    from verify.bundle import Bundle, parse_bundle
    from verify.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
    from verify.checkpoint import parse as parse_checkpoint
    from verify.cosignature import (
        MAX_CLOCK_SKEW,
        Cosignature,
        cosign,
        verify_cosignatures,
        witness_key,
    )
    from verify.dsse import (
        PAYLOAD_TYPE_INTOTO,
        Envelope,
        VerificationResult,
        VerifiedEnvelope,
        sign_envelope,
        verify_envelope,
    )
    from verify.errors import (
        BundleFormatError,
        CheckpointFormatError,
        DigestMismatchError,
        EnvelopeFormatError,
        FormatError,
        KeyFormatError,
        NoteFormatError,
        OriginError,
        PassphraseError,
        PolicyError,
        ProofError,
        ProofFormatError,
        SignatureError,
        StateFormatError,
        ThresholdError,
        TileFormatError,
        TrustError,
        UnsignedError,
        VerifyError,
        VersionError,
    )
    from verify.gate import Decision, decide
    from verify.intoto import (
        REBUILD_PREDICATE_TYPE,
        RELEASE_PREDICATE_TYPE,
        EnvironmentRef,
        GitSource,
        RebuildPredicate,
        ReleasePredicate,
        SdistSource,
        Statement,
        Subject,
        VerifiedStatement,
        make_statement,
        sign_statement,
        verify_statement,
    )
    from verify.keys import (
        SigningKey,
        VerifierKey,
        decode_secret_key_file,
        encode_secret_key_file,
    )
    from verify.merkle import leaf_hash, verify_consistency, verify_inclusion
    from verify.note import Note, open_note, sign_note
    from verify.policy import PackagePolicy, UpdatePolicy
    from verify.policy import parse_policy as parse_update_policy
    from verify.state import EMPTY_STATE, InstalledRelease, TrustedState, parse_state
    from verify.tlog_policy import Policy as TlogPolicy
    from verify.tlog_policy import parse_policy as parse_tlog_policy
    from verify.tlogproof import TlogProof, VerifiedProof, verify_tlog_proof
    from verify.tlogproof import parse as parse_tlog_proof
    from verify.version import Version, parse_version
