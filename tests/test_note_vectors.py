"""Signed notes against the public golang.org/x/mod and C2SP vectors."""

from __future__ import annotations

import pytest

from tests.conftest import load_vector
from verify.errors import KeyFormatError, NoteFormatError, SignatureError
from verify.keys import SigningKey, VerifierKey
from verify.note import open_note, sign_note, split_note

V = load_vector("signed-note-ed25519.json")
GO = V["go_x_mod_note"]
PETER = VerifierKey.parse(GO["vkeys"]["PeterNeumann"])
ENOCH = VerifierKey.parse(GO["vkeys"]["EnochRoot"])


def test_secret_key_round_trips_and_matches_verifier_key() -> None:
    skey = SigningKey.parse(GO["signer_skey"])
    assert skey.encode() == GO["signer_skey"]
    assert skey.verifier_key() == PETER
    assert PETER.encode() == GO["vkeys"]["PeterNeumann"]


def test_sign_is_byte_exact() -> None:
    skey = SigningKey.parse(GO["signer_skey"])
    assert sign_note(GO["text"], [skey]) == GO["signed_note_peter"]


def test_open_with_one_known_key_keeps_the_other_unverified() -> None:
    note = open_note(GO["signed_note_both"], [PETER])
    assert [s.name for s in note.verified] == ["PeterNeumann"]
    assert [s.name for s in note.unverified] == ["EnochRoot"]
    assert note.text == GO["text"]


def test_open_with_both_keys() -> None:
    note = open_note(GO["signed_note_both"], [PETER, ENOCH])
    assert [s.name for s in note.verified] == ["PeterNeumann", "EnochRoot"]


def test_no_known_key_rejects() -> None:
    with pytest.raises(SignatureError, match="no verifiable signatures"):
        open_note(GO["signed_note_both"], [])


def test_more_than_100_signatures_is_malformed() -> None:
    line = GO["signed_note_peter"].split("\n\n", 1)[1]
    with pytest.raises(NoteFormatError):
        open_note(GO["text"] + "\n" + line * 101, [PETER])


def test_tampered_signature_by_known_key_rejects_the_note() -> None:
    text, block = GO["signed_note_peter"].split("\n\n", 1)
    bad = block[:60] + "ABCD" + block[60:]
    with pytest.raises((SignatureError, NoteFormatError)):
        open_note(text + "\n\n" + bad, [PETER])


@pytest.mark.parametrize("bad", GO["bad_vkeys"])
def test_bad_verifier_keys(bad: str) -> None:
    with pytest.raises(KeyFormatError):
        VerifierKey.parse(bad)


@pytest.mark.parametrize("note", GO["malformed_notes"])
def test_malformed_notes(note: str) -> None:
    with pytest.raises(NoteFormatError):
        split_note(note)


def test_c2sp_example() -> None:
    ex = V["c2sp_signed_note_example"]
    key = VerifierKey.parse(ex["vkey"])
    note = open_note(ex["signed_note"], [key])
    assert note.text == "This is an example message.\n"


@pytest.mark.parametrize("case", V["sum_golang_org_checkpoints"]["cases"])
def test_real_sum_golang_org_checkpoints(case: dict[str, str]) -> None:
    key = VerifierKey.parse(V["sum_golang_org_checkpoints"]["vkey"])
    note = open_note(case["note"], [key])
    assert note.text.startswith(V["sum_golang_org_checkpoints"]["origin"] + "\n")
