"""Typed errors for the consumer side.

Two families, as in python-tuf: :class:`TrustError` means the bytes were
examined and must not be trusted (a negative verdict, CLI exit 1);
:class:`FormatError` means the input could not be understood at all (CLI exit
2). Callers catch the family they can act on; nothing here ever exits.
"""


class VerifyError(Exception):
    """Base class of every error raised by :mod:`verify`."""


class FormatError(VerifyError):
    """Input is malformed, oversized or of the wrong type: it cannot be judged."""


class KeyFormatError(FormatError):
    """A key (verifier key, secret key file) is malformed or inconsistent."""


class NoteFormatError(FormatError):
    """A signed note is malformed."""


class EnvelopeFormatError(FormatError):
    """A DSSE envelope or in-toto statement is malformed."""


class ProofFormatError(FormatError):
    """A Merkle proof, its arguments or a tlog-proof text are malformed.

    Wrong hash lengths, an index outside the tree, a size beyond 2**63-1, a
    tlog-proof that does not follow c2sp.org/tlog-proof@v1.
    """


class CheckpointFormatError(FormatError):
    """A checkpoint body does not follow c2sp.org/tlog-checkpoint."""


class TileFormatError(FormatError):
    """A tlog-tiles path or tile's data is malformed or of the wrong width."""


class PolicyError(FormatError):
    """A tlog-policy or rebuild-policy text is malformed, ambiguous or beyond the limits."""


class BundleFormatError(FormatError):
    """A rebuild-bundle/v1 document is malformed, oversized or nested too deeply.

    ``code`` says which: ``bundle-too-large``, ``bundle-too-deep`` or
    ``bundle-malformed`` (the gate reports it as step 1's failure code).
    """

    def __init__(self, message: str, code: str = "bundle-malformed") -> None:
        super().__init__(message)
        self.code = code


class StateFormatError(FormatError):
    """An updater's trusted-state document (rebuild-gate-state/v1) is malformed."""


class VersionError(FormatError):
    """A release version is outside the orderable subset, so it cannot be compared."""


class PassphraseError(VerifyError):
    """A secret key file could not be decrypted with the passphrase given."""


class TrustError(VerifyError):
    """The input is well-formed but fails verification: do not trust it."""


class SignatureError(TrustError):
    """A signature by a trusted key is invalid (or, as :class:`UnsignedError`, none exists)."""


class ThresholdError(TrustError):
    """Fewer distinct trusted keys than required signed or agreed (k of n)."""


class UnsignedError(SignatureError, ThresholdError):
    """No trusted key signed at all: the one error for that, in every format.

    Raised by :func:`verify.note.open_note` (and so
    :func:`verify.checkpoint.open_checkpoint`), :func:`verify.dsse.verify_envelope`
    and :func:`verify.cosignature.verify_witness_response`. It is zero of the
    required distinct keys, so it is a :class:`ThresholdError`, and no valid
    signature, so it is a :class:`SignatureError`: a caller catching either
    family catches it.
    """


class ProofError(TrustError):
    """A Merkle inclusion or consistency proof does not verify."""


class OriginError(TrustError):
    """A checkpoint is for another log (origin) than the one trusted."""


class DigestMismatchError(TrustError):
    """Bytes do not match the digest a signed statement commits to."""
