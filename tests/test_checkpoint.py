"""Checkpoint parsing and opening: real sum.golang.org and Rekor v2 checkpoints."""

from __future__ import annotations

import pytest

from tests.conftest import load_vector
from verify.checkpoint import Checkpoint, open_checkpoint, parse, sign_checkpoint
from verify.errors import (
    CheckpointFormatError,
    KeyFormatError,
    NoteFormatError,
    OriginError,
    SignatureError,
)
from verify.keys import ALG_COSIGNATURE_V1, SigningKey, VerifierKey
from verify.merkle import EMPTY_ROOT

NOTES = load_vector("signed-note-ed25519.json")
REKOR = load_vector("sigstore-rekor-inclusion.json")


@pytest.mark.parametrize("case", NOTES["sum_golang_org_checkpoints"]["cases"])
def test_real_sum_golang_org_checkpoints_open(case: dict[str, str]) -> None:
    v = NOTES["sum_golang_org_checkpoints"]
    cp, note = open_checkpoint(case["note"], VerifierKey.parse(v["vkey"]), v["origin"])
    assert cp.origin == v["origin"] and cp.size > 0
    assert cp.body() == note.text


def test_rekor_v2_production_checkpoints_open() -> None:
    for extra in REKOR["extra_production_checkpoints"]:
        key = VerifierKey.parse(extra["vkey"])
        for note in extra["notes"]:
            cp, _ = open_checkpoint(note, key)
            assert cp.origin == key.name


def test_checkpoint_for_another_origin_is_refused() -> None:
    v = NOTES["sum_golang_org_checkpoints"]
    with pytest.raises(OriginError):
        open_checkpoint(v["cases"][0]["note"], VerifierKey.parse(v["vkey"]), "evil.example")


def test_checkpoint_signed_by_another_key_is_refused() -> None:
    v = NOTES["sum_golang_org_checkpoints"]
    real = VerifierKey.parse(v["vkey"])
    other = SigningKey.generate(real.name).verifier_key()
    with pytest.raises(SignatureError):
        open_checkpoint(v["cases"][0]["note"], other, v["origin"])


def test_cosignature_key_cannot_stand_in_for_the_log_key() -> None:
    key = SigningKey.generate("log.example")
    with pytest.raises(KeyFormatError):
        open_checkpoint("x\n", key.verifier_key(ALG_COSIGNATURE_V1))


def test_sign_and_open_round_trip_with_extensions() -> None:
    key = SigningKey.generate("log.example/a")
    cp = Checkpoint("log.example/a", 5, b"\x01" * 32, ("ext one", "ext-2"))
    note = sign_checkpoint(cp, key)
    got, opened = open_checkpoint(note, key.verifier_key())
    assert got == cp and opened.text == cp.body()


GOOD = "example.com/log\n10\n" + "A" * 43 + "=\n"


@pytest.mark.parametrize(
    "body",
    [
        "example.com/log\n10\n" + "A" * 43 + "=",  # no final newline
        "\n10\n" + "A" * 43 + "=\n",  # empty origin
        "example.com/log\n010\n" + "A" * 43 + "=\n",  # leading zero
        "example.com/log\n+10\n" + "A" * 43 + "=\n",
        "example.com/log\n-1\n" + "A" * 43 + "=\n",
        "example.com/log\n9223372036854775808\n" + "A" * 43 + "=\n",  # 2**63
        "example.com/log\n1 0\n" + "A" * 43 + "=\n",
        "example.com/log\n10\n" + "A" * 42 + "==\n",  # 31 bytes
        "example.com/log\n10\n" + "A" * 44 + "\n",  # 33 bytes
        "example.com/log\n10\n" + "A" * 42 + "B=\n",  # non-canonical padding bits
        "example.com/log\n10\n" + "A" * 43 + "=\n\next\n",  # empty line
        "example.com/log\n10\n" + "A" * 43 + "=\n\n",
        "example.com/log\n10\n",  # too few lines
        "example.com/log\r\n10\n" + "A" * 43 + "=\n",
        "example.com/log\n١٠\n" + "A" * 43 + "=\n",  # Arabic-Indic digits
    ],
)
def test_malformed_checkpoint_bodies_are_refused(body: str) -> None:
    with pytest.raises(CheckpointFormatError):
        parse(body)


def test_good_body_parses_and_round_trips() -> None:
    cp = parse(GOOD)
    assert cp.size == 10 and cp.body() == GOOD


def test_invalid_utf8_body_is_refused() -> None:
    with pytest.raises(CheckpointFormatError):
        parse(b"\xff\n1\n" + b"A" * 43 + b"=\n")


def test_malformed_note_is_a_format_error() -> None:
    with pytest.raises(NoteFormatError):
        open_checkpoint(GOOD, SigningKey.generate("example.com/log").verifier_key())


def test_empty_tree_root_flag() -> None:
    assert Checkpoint("o", 0, EMPTY_ROOT).has_valid_empty_root
    assert not Checkpoint("o", 0, b"\x00" * 32).has_valid_empty_root
