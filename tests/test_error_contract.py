"""One error for "no trusted key signed", whatever the format.

A DSSE envelope used to raise ThresholdError and a signed note
SignatureError for the same fact. Both now raise UnsignedError, which is
both, so callers catching either family keep working and a caller can
tell "nobody I trust signed" from "a trusted signature is bad".
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

import pytest

from verify.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from verify.cosignature import cosign, verify_witness_response, witness_key
from verify.dsse import sign_envelope, verify_envelope
from verify.errors import SignatureError, ThresholdError, TrustError, UnsignedError
from verify.keys import SigningKey
from verify.note import open_note, sign_note

SIGNER = SigningKey("signer.example", b"\x07" * 32)
TRUSTED = SigningKey("trusted.example", b"\x08" * 32)
BODY = Checkpoint("signer.example", 1, hashlib.sha256(b"x").digest()).body()


def _envelope() -> None:
    verify_envelope(sign_envelope(b"{}", [SIGNER]), [TRUSTED.verifier_key()])


def _note() -> None:
    open_note(sign_note("hello\n", [SIGNER]), [TRUSTED.verifier_key()])


def _checkpoint() -> None:
    cp = Checkpoint("trusted.example", 1, hashlib.sha256(b"x").digest())
    open_checkpoint(sign_checkpoint(cp, SIGNER), TRUSTED.verifier_key())


def _witness_response() -> None:
    verify_witness_response(
        BODY, cosign(BODY, SIGNER, 1_700_000_000), [witness_key(TRUSTED)], now=1_700_000_000
    )


NOBODY_TRUSTED_SIGNED: list[Callable[[], None]] = [
    _envelope,
    _note,
    _checkpoint,
    _witness_response,
]


@pytest.mark.parametrize("check", NOBODY_TRUSTED_SIGNED, ids=lambda f: f.__name__.strip("_"))
def test_nobody_trusted_signed_is_one_error_in_every_format(check: Callable[[], None]) -> None:
    with pytest.raises(UnsignedError) as e:
        check()
    assert isinstance(e.value, SignatureError) and isinstance(e.value, ThresholdError)


def test_a_bad_signature_by_a_trusted_key_is_not_unsigned() -> None:
    note = sign_note("hello\n", [TRUSTED])
    text, line = note.rsplit("— ", 1)
    name, b64 = line.split()
    raw = bytearray(base64.b64decode(b64))
    raw[-1] ^= 1
    forged = f"{text}— {name} {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(SignatureError) as e:
        open_note(forged, [TRUSTED.verifier_key()])
    assert not isinstance(e.value, UnsignedError)
    assert isinstance(e.value, TrustError)
