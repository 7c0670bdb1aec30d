"""DSSE envelopes: PAE per the spec, and attacks on signature counting and parsing."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from verify.dsse import (
    MAX_ENVELOPE_SIZE,
    MAX_SIGNATURES,
    PAYLOAD_TYPE_INTOTO,
    Envelope,
    EnvelopeSignature,
    check_signatures,
    key_hint,
    pae,
    sign_envelope,
    verify_envelope,
)
from verify.errors import (
    EnvelopeFormatError,
    KeyFormatError,
    SignatureError,
    ThresholdError,
    TrustError,
)
from verify.keys import ALG_COSIGNATURE_V1, SigningKey

PAYLOAD = b'{"hello":"world"}'
KEYS = {n: SigningKey(n, bytes([i + 1]) * 32) for i, n in enumerate(["alice", "bob", "carol"])}
MALLORY = SigningKey("mallory", b"\x66" * 32)


def vk(name: str) -> Any:
    return KEYS[name].verifier_key()


def envelope_dict(data: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(data)
    return doc


def to_bytes(doc: Any) -> bytes:
    return json.dumps(doc).encode()


# -- PAE and the spec's own example ---------------------------------------------


def test_pae_matches_the_dsse_spec_test_vector() -> None:
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters() -> None:
    assert pae("t\u00e9", b"") == b"DSSEv1 3 t\xc3\xa9 0 "


def test_spec_example_envelope_parses_and_its_ecdsa_signer_is_unknown_to_us() -> None:
    """The DSSE spec's example (P-256 signature, no keyid) parses; no Ed25519 key verifies it."""
    example = (
        b'{"payload": "aGVsbG8gd29ybGQ=", "payloadType": "http://example.com/HelloWorld", '
        b'"signatures": [{"sig": "A3JqsQGtVsJ2O2xqrI5IcnXip5GToJ3F+FnZ+O88SjtR6rDAajabZKci'
        b'JTfUiHqJPcIAriEGAHTVeCUjW2JIZA=="}]}'
    )
    env = Envelope.parse(example)
    assert env.payload == b"hello world"
    assert env.signatures[0].keyid == ""
    with pytest.raises(ThresholdError, match="no trusted key"):
        verify_envelope(example, [vk("alice")], payload_type="http://example.com/HelloWorld")


# -- happy path -------------------------------------------------------------------


def test_signed_envelope_verifies_and_reports_the_signer() -> None:
    data = sign_envelope(PAYLOAD, [KEYS["alice"]])
    v = verify_envelope(data, [vk("alice"), vk("bob")])
    assert v.payload == PAYLOAD
    assert v.result.signed == (vk("alice"),)
    assert v.result.unsigned == (vk("bob"),)
    assert v.result.verified and v.result.missing == 0
    sig = envelope_dict(data)["signatures"][0]
    assert sig["keyid"] == key_hint(vk("alice")) == f"alice+{vk('alice').key_id}"


def test_url_safe_and_unpadded_base64_is_accepted_as_the_spec_requires() -> None:
    doc = envelope_dict(sign_envelope(b"\xfb\xff" * 10 + b"!", [KEYS["alice"]]))
    doc["payload"] = base64.urlsafe_b64encode(b"\xfb\xff" * 10 + b"!").decode().rstrip("=")
    assert "-" in doc["payload"] or "_" in doc["payload"]
    assert verify_envelope(to_bytes(doc), [vk("alice")]).payload == b"\xfb\xff" * 10 + b"!"


# -- counting: distinct trusted keys, never signatures ------------------------------


@pytest.mark.parametrize(
    ("signers", "threshold", "ok"),
    [
        (["alice"], 1, True),
        (["alice"], 2, False),
        (["alice", "bob"], 2, True),
        (["alice", "bob"], 3, False),
        (["alice", "bob", "carol"], 3, True),
        ([], 1, False),
    ],
)
def test_threshold_table(signers: list[str], threshold: int, ok: bool) -> None:
    signing = [KEYS[n] for n in signers] + [MALLORY]  # an unknown signer never helps
    data = sign_envelope(PAYLOAD, signing)
    trusted = [vk(n) for n in KEYS]
    if ok:
        assert verify_envelope(data, trusted, threshold).result.signed == tuple(
            vk(n) for n in signers
        )
    else:
        with pytest.raises(ThresholdError):
            verify_envelope(data, trusted, threshold)


def test_one_key_signing_twice_does_not_meet_a_threshold_of_two() -> None:
    """A second signature entry by the same key (different keyid hint) counts once."""
    doc = envelope_dict(sign_envelope(PAYLOAD, [KEYS["alice"]]))
    doc["signatures"].append({"sig": doc["signatures"][0]["sig"]})  # no keyid: tried on all
    result = check_signatures(Envelope.parse(to_bytes(doc)), [vk("alice"), vk("bob")], 2)
    assert result.signed == (vk("alice"),) and not result.verified
    with pytest.raises(ThresholdError, match="1 of the required 2"):
        verify_envelope(to_bytes(doc), [vk("alice"), vk("bob")], 2)


def test_one_public_key_trusted_under_two_names_counts_once() -> None:
    """Listing the same Ed25519 key twice in a policy must not double its weight."""
    alias = SigningKey("alice-again", KEYS["alice"].seed)
    message = pae(PAYLOAD_TYPE_INTOTO, PAYLOAD)
    env = Envelope(
        PAYLOAD_TYPE_INTOTO,
        PAYLOAD,
        (
            EnvelopeSignature(key_hint(vk("alice")), KEYS["alice"].sign_raw(message)),
            EnvelopeSignature(key_hint(alias.verifier_key()), alias.sign_raw(message)),
        ),
    )
    with pytest.raises(ThresholdError):
        verify_envelope(env.to_json(), [vk("alice"), alias.verifier_key()], 2)


def test_byte_identical_duplicate_signatures_make_the_envelope_malformed() -> None:
    doc = envelope_dict(sign_envelope(PAYLOAD, [KEYS["alice"]]))
    doc["signatures"].append(dict(doc["signatures"][0]))
    with pytest.raises(EnvelopeFormatError, match="duplicates an earlier signature"):
        verify_envelope(to_bytes(doc), [vk("alice")])


def test_signers_unknown_to_the_verifier_are_ignored() -> None:
    data = sign_envelope(PAYLOAD, [MALLORY, KEYS["alice"]])
    v = verify_envelope(data, [vk("alice")])
    assert v.result.signed == (vk("alice"),) and v.result.ignored == 1


def test_only_unknown_signers_is_rejected() -> None:
    with pytest.raises(ThresholdError, match="no trusted key"):
        verify_envelope(sign_envelope(PAYLOAD, [MALLORY]), [vk("alice")])


def test_empty_trust_set_fails_closed() -> None:
    with pytest.raises(ThresholdError):
        verify_envelope(sign_envelope(PAYLOAD, [KEYS["alice"]]), [])


def test_threshold_below_one_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="threshold"):
        verify_envelope(sign_envelope(PAYLOAD, [KEYS["alice"]]), [vk("alice")], 0)


# -- invalid signatures from trusted keys reject -------------------------------------


def test_bad_signature_from_a_trusted_key_rejects_even_when_threshold_is_met() -> None:
    doc = envelope_dict(sign_envelope(PAYLOAD, [KEYS["alice"], KEYS["bob"]]))
    sig = bytearray(base64.b64decode(doc["signatures"][1]["sig"]))
    sig[0] ^= 1
    doc["signatures"][1]["sig"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(SignatureError, match=f"bob\\+{vk('bob').key_id}"):
        verify_envelope(to_bytes(doc), [vk("alice"), vk("bob")], 1)


def test_tampered_payload_is_rejected() -> None:
    doc = envelope_dict(sign_envelope(PAYLOAD, [KEYS["alice"]]))
    doc["payload"] = base64.b64encode(b'{"hello":"mallory"}').decode()
    with pytest.raises(SignatureError):
        verify_envelope(to_bytes(doc), [vk("alice")])


def test_attacker_claiming_a_trusted_keyid_is_rejected() -> None:
    """Mallory signs and labels the signature with alice's keyid: the hint is never trusted."""
    doc = envelope_dict(sign_envelope(PAYLOAD, [MALLORY]))
    doc["signatures"][0]["keyid"] = key_hint(vk("alice"))
    with pytest.raises(SignatureError):
        verify_envelope(to_bytes(doc), [vk("alice")])


def test_payload_type_confusion_is_caught_by_pae() -> None:
    """A signature over another payload type does not verify once the type is relabelled."""
    doc = envelope_dict(sign_envelope(PAYLOAD, [KEYS["alice"]], payload_type="application/json"))
    doc["payloadType"] = PAYLOAD_TYPE_INTOTO
    with pytest.raises(SignatureError):
        verify_envelope(to_bytes(doc), [vk("alice")])


def test_truncated_signature_from_trusted_key_rejects() -> None:
    doc = envelope_dict(sign_envelope(PAYLOAD, [KEYS["alice"]]))
    doc["signatures"][0]["sig"] = base64.b64encode(b"\x01" * 63).decode()
    with pytest.raises(SignatureError):
        verify_envelope(to_bytes(doc), [vk("alice")])


def test_cosignature_keys_cannot_be_trusted_for_envelopes() -> None:
    witness = KEYS["alice"].verifier_key(ALG_COSIGNATURE_V1)
    with pytest.raises(KeyFormatError, match="0x01"):
        verify_envelope(sign_envelope(PAYLOAD, [KEYS["alice"]]), [witness])


# -- malformed input ----------------------------------------------------------------


def _mutate(fn: Any) -> bytes:
    doc = envelope_dict(sign_envelope(PAYLOAD, [KEYS["alice"]]))
    fn(doc)
    return to_bytes(doc)


MALFORMED: list[tuple[str, bytes, str]] = [
    ("not json", b"{not json", "not valid JSON"),
    ("truncated", sign_envelope(PAYLOAD, [KEYS["alice"]])[:-10], "not valid JSON"),
    ("not utf-8", b'{"payload": "\xff"}', "not UTF-8"),
    ("a list", b"[]", "must be a JSON object"),
    ("missing payload", _mutate(lambda d: d.pop("payload")), "missing field 'payload'"),
    ("missing payloadType", _mutate(lambda d: d.pop("payloadType")), "'payloadType'"),
    ("missing signatures", _mutate(lambda d: d.pop("signatures")), "'signatures'"),
    ("extra field", _mutate(lambda d: d.update(extra=1)), "unknown field 'extra'"),
    ("empty signatures", _mutate(lambda d: d.update(signatures=[])), "non-empty list"),
    ("sig missing", _mutate(lambda d: d["signatures"][0].pop("sig")), "missing field 'sig'"),
    ("sig not a string", _mutate(lambda d: d["signatures"][0].update(sig=5)), "base64"),
    ("keyid not a string", _mutate(lambda d: d["signatures"][0].update(keyid=[])), "keyid"),
    ("sig extra field", _mutate(lambda d: d["signatures"][0].update(x="")), "unknown field"),
    ("payload not base64", _mutate(lambda d: d.update(payload="!!!!")), "invalid base64"),
    # 'aGl=' decodes to b"hi" like 'aGk=' but with stray low bits set
    ("payload non-canonical", _mutate(lambda d: d.update(payload="aGl=")), "non-canonical"),
    ("mixed alphabets", _mutate(lambda d: d.update(payload="a-b+")), "mixes"),
    ("empty payloadType", _mutate(lambda d: d.update(payloadType="")), "payloadType"),
    ("NaN", b'{"payload": NaN}', "constant NaN"),
    ("duplicate field", b'{"payload": "", "payload": ""}', "duplicate JSON field"),
    ("deep nesting", b"[" * 20000 + b"]" * 20000, "nested too deeply"),
    # a lone surrogate parses into a str that PAE cannot UTF-8 encode
    (
        "lone surrogate keyid",
        _mutate(lambda d: d["signatures"][0].update(keyid="\ud800")),
        "lone UTF-16 surrogate",
    ),
    ("lone surrogate type", _mutate(lambda d: d.update(payloadType="a\udfff")), "surrogate"),
    # CPython refuses to convert integers of more than 4,300 digits (ValueError)
    ("4301-digit integer", b'{"n": ' + b"1" * 4301 + b"}", "number too long"),
    ("UTF-8 BOM", b"\xef\xbb\xbf" + sign_envelope(PAYLOAD, [KEYS["alice"]]), "BOM"),
    ("UTF-16", sign_envelope(PAYLOAD, [KEYS["alice"]]).decode().encode("utf-16"), "not UTF-8"),
    ("oversized", b" " * (MAX_ENVELOPE_SIZE + 1), "larger than the 65536-byte limit"),
    (
        "too many signatures",
        _mutate(
            lambda d: d.update(
                signatures=[
                    {"keyid": str(i), "sig": d["signatures"][0]["sig"]}
                    for i in range(MAX_SIGNATURES + 1)
                ]
            )
        ),
        "more than 32 signatures",
    ),
]


@pytest.mark.parametrize(("case", "data", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_envelope_is_a_format_error(case: str, data: bytes, message: str) -> None:
    with pytest.raises(EnvelopeFormatError, match=message) as info:
        verify_envelope(data, [vk("alice")])
    assert not isinstance(info.value, TrustError)
    assert "\n" not in str(info.value)


def test_wrong_payload_type_is_rejected_before_signatures_are_checked() -> None:
    data = sign_envelope(PAYLOAD, [KEYS["alice"]], payload_type="application/json")
    with pytest.raises(EnvelopeFormatError, match="not the expected"):
        verify_envelope(data, [vk("alice")])


def test_signing_refuses_an_envelope_the_log_could_not_store() -> None:
    with pytest.raises(EnvelopeFormatError, match="over the 65536-byte limit"):
        sign_envelope(b"x" * MAX_ENVELOPE_SIZE, [KEYS["alice"]])


def test_signing_refuses_the_same_key_twice() -> None:
    with pytest.raises(EnvelopeFormatError, match="duplicate signer"):
        sign_envelope(PAYLOAD, [KEYS["alice"], SigningKey("alias", KEYS["alice"].seed)])
