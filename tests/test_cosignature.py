"""cosignature/v1 (type 0x04) against Sunlight's deterministic skylight vectors."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.conftest import load_vector
from verify.cosignature import (
    add_signatures,
    cosign,
    date_cosignatures,
    parse_signature_lines,
    verify_cosignatures,
    verify_witness_response,
    witness_key,
)
from verify.errors import KeyFormatError, NoteFormatError, SignatureError
from verify.keys import SigningKey, VerifierKey
from verify.note import cosignature_message, split_note

V = load_vector("sunlight-skylight-cosignatures.json")
NOW = 1_800_000_000  # after every timestamp below except the deliberately future one


@pytest.mark.parametrize("case", V["cases"], ids=lambda c: c["cosigner_name"])
def test_skylight_cosignature_verifies_with_its_timestamp(case: dict[str, Any]) -> None:
    key = VerifierKey.parse(case["cosigner_vkey"])
    assert key.algorithm == case["sig_type"] == 4
    assert key.key_id == case["key_id_hex"]
    (cosig,) = verify_cosignatures(case["note"], [key], now=NOW)
    assert cosig.key == key
    assert cosig.timestamp == case["timestamp"]
    text, _ = split_note(case["note"])
    assert cosignature_message(text, cosig.timestamp).decode() == case["signed_message"]


@pytest.mark.parametrize("case", V["cases"], ids=lambda c: c["cosigner_name"])
def test_cosigning_with_the_vector_seed_is_byte_exact(case: dict[str, Any]) -> None:
    skey = SigningKey(case["cosigner_name"], bytes.fromhex(case["ed25519_seed_hex"]))
    assert witness_key(skey) == VerifierKey.parse(case["cosigner_vkey"])
    text, sigs = split_note(case["note"])
    line = cosign(text, skey, case["timestamp"])
    mine = [s for s in sigs if s.name == case["cosigner_name"]]
    assert line == mine[0].line()


@pytest.mark.parametrize("case", V["negative"], ids=lambda c: c["desc"])
def test_cosignature_over_an_altered_checkpoint_is_rejected(case: dict[str, Any]) -> None:
    with pytest.raises(SignatureError):
        verify_cosignatures(case["note"], [VerifierKey.parse(case["cosigner_vkey"])], now=NOW)


def test_unknown_witnesses_are_ignored_not_counted() -> None:
    case = V["cases"][0]
    stranger = witness_key(SigningKey.generate("stranger.example"))
    assert verify_cosignatures(case["note"], [stranger], now=NOW) == ()


def test_a_witness_that_cosigned_twice_counts_once() -> None:
    case = V["cases"][0]
    key = VerifierKey.parse(case["cosigner_vkey"])
    skey = SigningKey(case["cosigner_name"], bytes.fromhex(case["ed25519_seed_hex"]))
    text, _ = split_note(case["note"])
    doubled = add_signatures(case["note"], parse_signature_lines(cosign(text, skey, 1767139999)))
    assert doubled.count("— witness.example.org ") == 2
    assert len(verify_cosignatures(doubled, [key], now=NOW)) == 1


def test_log_key_type_cannot_verify_cosignatures() -> None:
    case = V["cases"][0]
    skey = SigningKey(case["cosigner_name"], bytes.fromhex(case["ed25519_seed_hex"]))
    with pytest.raises(KeyFormatError):
        verify_cosignatures(case["note"], [skey.verifier_key()], now=NOW)


def test_zero_timestamp_is_refused_when_signing_and_verifying() -> None:
    skey = SigningKey.generate("w.example")
    body = "log.example\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
    with pytest.raises(NoteFormatError):
        cosign(body, skey, 0)
    # Build a zero-timestamp cosignature by hand: validly signed, still refused.
    from verify.note import sign_note

    note = sign_note(body, [skey], cosign_time=0)
    with pytest.raises(SignatureError):
        verify_cosignatures(note, [witness_key(skey)], now=NOW)


def test_cosignature_from_the_future_is_refused() -> None:
    """A witness whose clock runs ahead cannot vouch for a freshness not yet seen."""
    skey = SigningKey.generate("w.example")
    body = "log.example\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
    resp = cosign(body, skey, 2_000_000_000)
    note = body + "\n" + resp
    wkey = witness_key(skey)
    assert verify_cosignatures(note, [wkey], now=2_000_000_000)[0].timestamp == 2_000_000_000
    assert verify_witness_response(body, resp, [wkey], now=2_000_000_000)[0].key == wkey
    with pytest.raises(SignatureError, match="from the future"):
        verify_cosignatures(note, [wkey], now=1_999_999_999)
    with pytest.raises(SignatureError, match="from the future"):
        verify_witness_response(body, resp, [wkey], now=1_999_999_999)
    dated = date_cosignatures(note, [wkey], now=1_999_999_999)
    assert dated.current == () and [c.key for c in dated.future] == [wkey]


def test_a_missing_reference_time_is_a_programming_error() -> None:
    """``now`` has no default; None (from an untyped caller) must not switch the check off."""
    skey = SigningKey.generate("w.example")
    body = "log.example\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
    note = body + "\n" + cosign(body, skey, 2_000_000_000)
    with pytest.raises(TypeError):
        verify_cosignatures(note, [witness_key(skey)])  # type: ignore[call-arg]
    for bad in (None, 1.5e9, True, -1):
        with pytest.raises(ValueError, match="now must be"):
            verify_cosignatures(note, [witness_key(skey)], now=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="now must be"):
            date_cosignatures(note, [witness_key(skey)], now=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="now must be"):
            verify_witness_response(body, note[len(body) + 1 :], [witness_key(skey)], now=bad)  # type: ignore[arg-type]


def test_witness_response_must_carry_a_trusted_cosignature() -> None:
    skey, other = SigningKey.generate("w.example"), SigningKey.generate("x.example")
    body = "log.example\n1\n" + base64.b64encode(b"\x01" * 32).decode() + "\n"
    resp = cosign(body, skey, 1_700_000_000)
    assert verify_witness_response(body, resp, [witness_key(skey)], now=NOW)[0].key == witness_key(
        skey
    )
    with pytest.raises(SignatureError):
        verify_witness_response(body, resp, [witness_key(other)], now=NOW)
    for garbage in ("", "hello\n", resp.rstrip("\n"), resp * 17):
        with pytest.raises(NoteFormatError):
            verify_witness_response(body, garbage, [witness_key(skey)], now=NOW)
