"""One strict parser per format element, and every format refuses the same spellings.

verify.parsing holds the only base64 and decimal parsers in verify/; each
format passes its own error class. The tables below feed every format that
carries base64 or a decimal the spellings an attacker could use to make one
value look like two (or two values look like one), and expect the format's
own FormatError every time.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from verify import checkpoint, tlogproof
from verify.bundle import parse_bundle
from verify.dsse import Envelope
from verify.errors import (
    BundleFormatError,
    CheckpointFormatError,
    EnvelopeFormatError,
    FormatError,
    KeyFormatError,
    PolicyError,
    ProofFormatError,
)
from verify.keys import SigningKey, VerifierKey
from verify.parsing import MAX_INT63, decode_base64, parse_decimal
from verify.tlog_policy import parse_policy

KEY = SigningKey("log.example", b"\x05" * 32)
VKEY = KEY.verifier_key()
ROOT = base64.b64encode(hashlib.sha256(b"root").digest()).decode()  # 32 bytes: ends "="


def _vkey(b64: str) -> object:
    return VerifierKey.parse(f"{VKEY.name}+{VKEY.key_id}+{b64}")


def _checkpoint_root(b64: str) -> object:
    return checkpoint.parse(f"log.example\n5\n{b64}\n")


def _proof_hash(b64: str) -> object:
    note = checkpoint.sign_checkpoint(checkpoint.parse(f"log.example\n5\n{ROOT}\n"), KEY)
    return tlogproof.parse(f"c2sp.org/tlog-proof@v1\nindex 1\n{b64}\n\n{note}")


def _envelope_payload(b64: str) -> object:
    doc = {"payloadType": "t", "payload": b64, "signatures": [{"sig": "AAAA"}]}
    return Envelope.parse(json.dumps(doc).encode())


# (name, build from a base64 string, the canonical base64 it accepts, error)
BASE64_FIELDS: list[tuple[str, Callable[[str], object], str, type[FormatError]]] = [
    ("verifier key", _vkey, VKEY.encode().split("+", 2)[2], KeyFormatError),
    ("checkpoint root", _checkpoint_root, ROOT, CheckpointFormatError),
    ("tlog-proof hash", _proof_hash, ROOT, ProofFormatError),
    ("DSSE payload", _envelope_payload, "aGk=", EnvelopeFormatError),
]


def _variants(good: str) -> list[str]:
    """Other spellings of ``good``'s bytes, and near misses."""
    out = [
        good + "=",  # padding after the end
        good + "==",
        " " + good,  # white space
        good[:4] + "\n" + good[4:],
        "=" + good,
    ]
    if good.endswith("="):
        out.append(good.rstrip("=") + "=" * (len(good) - len(good.rstrip("=")) + 1))
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        body = good.rstrip("=")
        last = alphabet.index(body[-1])
        out.append(body[:-1] + alphabet[last ^ 1] + good[len(body) :])  # stray unused bit
    return out


@pytest.mark.parametrize(("field", "build", "good", "error"), BASE64_FIELDS, ids=lambda x: x)
def test_every_base64_field_takes_one_spelling_only(
    field: str, build: Callable[[str], object], good: str, error: type[FormatError]
) -> None:
    build(good)
    for variant in _variants(good):
        with pytest.raises(error):
            build(variant)


def test_standard_fields_refuse_unpadded_and_urlsafe_base64() -> None:
    with pytest.raises(CheckpointFormatError):
        _checkpoint_root(ROOT.rstrip("="))
    urlsafe = base64.urlsafe_b64encode(hashlib.sha256(b"?>>").digest()).decode()
    assert "-" in urlsafe or "_" in urlsafe
    with pytest.raises(CheckpointFormatError):
        _checkpoint_root(urlsafe)


def test_dsse_takes_urlsafe_and_unpadded_but_never_both_alphabets() -> None:
    """The DSSE spec requires both alphabets, padded or not; each still has one spelling."""
    assert _envelope_payload("aGk").payload == b"hi"  # type: ignore[attr-defined]
    assert _envelope_payload("-_8=").payload == b"\xfb\xff"  # type: ignore[attr-defined]
    for bad in ("-_+/", "aGk==", "aGl="):
        with pytest.raises(EnvelopeFormatError):
            _envelope_payload(bad)


def test_a_bundle_refuses_a_non_canonical_envelope() -> None:
    doc = {
        "format": "rebuild-bundle/v1",
        "checkpoint": "x",
        "release": {"envelope": "aGk==", "proof": "x"},
        "attestations": [],
    }
    with pytest.raises(BundleFormatError, match="base64"):
        parse_bundle(json.dumps(doc).encode())


NOT_DECIMALS = ["", "01", "00", "+1", "-1", " 1", "1 ", "1_0", "0x1", "1e3", "١", "1١", "²", "٠"]


@pytest.mark.parametrize("text", NOT_DECIMALS)
def test_decimals_are_ascii_digits_without_sign_space_or_leading_zero(text: str) -> None:
    with pytest.raises(CheckpointFormatError):
        checkpoint.parse(f"log.example\n{text}\n{ROOT}\n")
    note = checkpoint.sign_checkpoint(checkpoint.parse(f"log.example\n5\n{ROOT}\n"), KEY)
    with pytest.raises(ProofFormatError):
        tlogproof.parse(f"c2sp.org/tlog-proof@v1\nindex {text}\n\n{note}")
    if text.strip() and " " not in text:  # a space would only split the field
        w = SigningKey("w.example", b"\x06" * 32).verifier_key(4)
        policy = f"log {VKEY}\nwitness W {w}\ngroup G {text} W\nquorum G\n"
        with pytest.raises(PolicyError):
            parse_policy(policy)


def test_decimal_bounds() -> None:
    assert parse_decimal(str(MAX_INT63), "n", ValueError) == MAX_INT63
    with pytest.raises(ValueError, match="larger than"):
        parse_decimal(str(MAX_INT63 + 1), "n", ValueError)
    with pytest.raises(ValueError, match="larger than"):
        parse_decimal("1" * 5000, "n", ValueError)  # never handed to int()'s digit limit
    assert parse_decimal("0", "n", ValueError) == 0
    with pytest.raises(ValueError):
        parse_decimal(7, "n", ValueError)


@given(st.binary(max_size=80), st.booleans())
def test_base64_round_trips_exactly(data: bytes, urlsafe: bool) -> None:
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(data).decode()
    assert decode_base64(text, "x", ValueError, urlsafe=urlsafe) == data
    assert decode_base64(text.rstrip("="), "x", ValueError, urlsafe=True, unpadded=True) == data


@given(st.text(alphabet="AB+/-_=a0 \n", max_size=12))
def test_any_accepted_base64_is_the_canonical_encoding_of_its_bytes(text: str) -> None:
    try:
        raw = decode_base64(text, "x", ValueError)
    except ValueError:
        return
    assert base64.b64encode(raw).decode() == text
