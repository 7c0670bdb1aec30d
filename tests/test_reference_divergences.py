"""Four places where verify/ accepted what a reference implementation refuses.

Differential testing of verify/ against Go's golang.org/x/mod note and tlog
packages and an independent verifier found nothing accepted that a reference
rejects in a way that changes a trust decision, and these four divergences.
Each test below failed before its fix.
"""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest

from tests.test_intoto import release
from verify.cosignature import cosign, verify_cosignatures, witness_key
from verify.errors import EnvelopeFormatError, NoteFormatError, PolicyError
from verify.intoto import Statement, Subject
from verify.keys import SigningKey
from verify.note import open_note, sign_note
from verify.tlog_policy import parse_policy

LOG = SigningKey("log.example", b"\x01" * 32)
WITNESS_SEED = b"\x02" * 32


def test_note_signature_padded_after_a_complete_group_is_malformed() -> None:
    """Go's note.Open: "malformed note". Python's base64 took ``AAAA=`` as ``AAAA``."""
    note = sign_note("hello\n", [LOG])
    # A foreign signer's line of 4 + 65 = 69 bytes: whole groups, then "=".
    foreign = base64.b64encode(struct.pack(">I", 7) + b"\x01" * 65).decode()
    assert open_note(note + f"— other.example {foreign}\n", [LOG.verifier_key()])
    for padded in (foreign + "=", foreign + "=="):
        with pytest.raises(NoteFormatError, match="non-canonical base64"):
            open_note(note + f"— other.example {padded}\n", [LOG.verifier_key()])


def test_note_signature_with_stray_bits_in_its_last_character_is_malformed() -> None:
    """One signature, one spelling: the base64 must encode back to itself."""
    note = sign_note("hello\n", [LOG])
    body, line = note.rsplit("— ", 1)
    name, b64 = line.rstrip("\n").split(" ")
    # 68 bytes: the character before "=" carries 4 bits and 2 unused ones.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(b64[-2])
    assert b64.endswith("=") and last & 3 == 0
    stray = b64[:-2] + alphabet[last | 1] + "="
    assert base64.b64decode(stray) == base64.b64decode(b64)  # the same bytes
    with pytest.raises(NoteFormatError, match="non-canonical base64"):
        open_note(f"{body}— {name} {stray}\n", [LOG.verifier_key()])


def test_one_witness_key_under_two_names_counts_once() -> None:
    """Distinct keys are distinct *public* keys, as in verify.dsse (no policy here)."""
    body = "log.example\n1\n" + base64.b64encode(hashlib.sha256(b"x").digest()).decode() + "\n"
    alias_a = SigningKey("a.witness.example", WITNESS_SEED)
    alias_b = SigningKey("b.witness.example", WITNESS_SEED)
    NOW = 1_700_000_000  # the cosignatures' own time
    note = sign_note(body, [LOG]) + cosign(body, alias_a, 1_700_000_000)
    note += cosign(body, alias_b, 1_700_000_000)
    cosigs = verify_cosignatures(note, [witness_key(alias_a), witness_key(alias_b)], now=NOW)
    assert len(cosigs) == 1
    other = SigningKey("c.witness.example", b"\x03" * 32)
    note += cosign(body, other, 1_700_000_000)
    keys = [witness_key(alias_a), witness_key(alias_b), witness_key(other)]
    assert len(verify_cosignatures(note, keys, now=NOW)) == 2


@pytest.mark.parametrize(
    "separator",
    ["\u00a0", "\u0085", "\u2028", "\u3000", "\u2003"],
    ids=["NBSP", "NEL", "LINE-SEPARATOR", "IDEOGRAPHIC-SPACE", "EM-SPACE"],
)
def test_tlog_policy_fields_are_separated_only_by_ascii_space_and_tab(separator: str) -> None:
    """c2sp.org/tlog-policy separates fields with spaces and tabs, nothing else."""
    log = LOG.verifier_key().encode()
    witness = SigningKey("w.example", WITNESS_SEED).verifier_key(4).encode()
    good = f"log {log}\nwitness W1 {witness}\nquorum W1\n"
    assert parse_policy(good).witnesses[0].name == "W1"
    with pytest.raises(PolicyError):
        parse_policy(good.replace("witness W1", f"witness{separator}W1"))
    with pytest.raises(PolicyError):
        parse_policy(good.replace("quorum W1", f"quorum{separator}W1"))


@pytest.mark.parametrize(
    "name",
    [
        "hello\u0085.phar",  # C1 control (NEL)
        "hello\u202egnp.phar",  # right-to-left override: displays as "hello" + "rahp.png"
        "hel\u200blo.phar",  # zero-width space
        "hello\u2028.phar",  # line separator
        "hello\u2066.phar",  # left-to-right isolate
        "\ufeffhello.phar",  # zero-width no-break space (BOM)
        "hello\u009b.phar",  # C1 control sequence introducer
    ],
    ids=["C1-NEL", "RLO", "ZWSP", "LINE-SEPARATOR", "LRI", "BOM", "C1-CSI"],
)
def test_subject_names_that_hide_or_reorder_characters_are_refused(name: str) -> None:
    """docs/formats.md: a subject name is a plain file name without control characters."""
    with pytest.raises(EnvelopeFormatError, match="control character"):
        Subject(name, "a" * 64)
    doc = release().to_dict()
    doc["subject"][0]["name"] = name
    with pytest.raises(EnvelopeFormatError, match="control character"):
        Statement.from_dict(doc)


def test_subject_names_must_be_nfc_so_one_name_has_one_spelling() -> None:
    assert Subject("caf\u00e9.phar", "a" * 64).name == "café.phar"  # precomposed: NFC
    with pytest.raises(EnvelopeFormatError, match="NFC"):
        Subject("cafe\u0301.phar", "a" * 64)  # e + combining acute: the same on screen
