"""tlog-proof@v1: encode/parse and the four verification steps, with real keys."""

from __future__ import annotations

import pytest

from verify.checkpoint import Checkpoint, sign_checkpoint
from verify.cosignature import cosign
from verify.errors import (
    FormatError,
    OriginError,
    ProofError,
    ProofFormatError,
    SignatureError,
    ThresholdError,
)
from verify.keys import SigningKey
from verify.merkle import inclusion_proof_in_memory, leaf_hash, root
from verify.tlog_policy import parse_policy
from verify.tlogproof import TlogProof, parse, verify_tlog_proof

NOW = 1_800_000_000  # the verifier's clock: after every cosignature made here

LOG = SigningKey.generate("log.example/rebuild")
W1, W2, W3 = (SigningKey.generate(f"w{i}.example") for i in (1, 2, 3))
ENTRIES = [b"entry %d" % i for i in range(37)]
LEAVES = [leaf_hash(e) for e in ENTRIES]
POLICY = parse_policy(
    f"""log {LOG.verifier_key()}
witness w1 {W1.verifier_key(4)}
witness w2 {W2.verifier_key(4)}
witness w3 {W3.verifier_key(4)}
group two 2 w1 w2 w3
quorum two
"""
)


def _checkpoint(
    n: int = len(ENTRIES), signers: tuple[SigningKey, ...] = (W1, W2), log: SigningKey = LOG
) -> str:
    cp = Checkpoint(log.name, n, root(LEAVES[:n]))
    note = sign_checkpoint(cp, log)
    return note + "".join(cosign(cp.body(), w, 1_700_000_000 + i) for i, w in enumerate(signers))


def _proof(index: int, note: str | None = None, extra: bytes | None = None) -> TlogProof:
    note = note or _checkpoint()
    return TlogProof(index, tuple(inclusion_proof_in_memory(index, LEAVES)), note, extra)


def test_round_trip_and_verify_every_entry() -> None:
    note = _checkpoint()
    for i, entry in enumerate(ENTRIES):
        text = _proof(i, note, extra=b"ctx" if i % 2 else None).encode()
        tp = parse(text)
        assert tp.encode() == text
        v = verify_tlog_proof(text, entry, POLICY, now=NOW)
        assert v.index == i and v.checkpoint.size == len(ENTRIES)
        assert set(v.quorum.witnesses) == {"w1", "w2"}
        assert v.log_key == LOG.verifier_key()


def test_spec_layout() -> None:
    text = _proof(5, extra=b"hello").encode()
    lines = text.split("\n")
    assert lines[0] == "c2sp.org/tlog-proof@v1"
    assert lines[1] == "extra aGVsbG8="
    assert lines[2] == "index 5"
    assert "\n\nlog.example/rebuild\n37\n" in text


def test_wrong_entry_is_not_included() -> None:
    with pytest.raises(ProofError):
        verify_tlog_proof(_proof(3).encode(), b"entry 4", POLICY, now=NOW)


def test_proof_moved_to_another_index_fails() -> None:
    p = _proof(3)
    moved = TlogProof(4, p.proof, p.checkpoint)
    with pytest.raises(ProofError):
        verify_tlog_proof(moved, ENTRIES[3], POLICY, now=NOW)


def test_index_beyond_checkpoint_size_is_a_malformed_proof() -> None:
    """As verify_inclusion and docs/log.md say: a format error (CLI exit 2), not exit 1."""
    p = TlogProof(40, (), _checkpoint())
    with pytest.raises(ProofFormatError, match="not in a tree"):
        verify_tlog_proof(p, ENTRIES[3], POLICY, now=NOW)


def test_one_witness_is_below_a_two_of_three_quorum() -> None:
    with pytest.raises(ThresholdError):
        verify_tlog_proof(
            _proof(3, _checkpoint(signers=(W1,))).encode(), ENTRIES[3], POLICY, now=NOW
        )


def test_one_witness_cosigning_twice_is_still_one_witness() -> None:
    cp = Checkpoint(LOG.name, len(ENTRIES), root(LEAVES))
    note = sign_checkpoint(cp, LOG) + cosign(cp.body(), W1, 1) + cosign(cp.body(), W1, 2)
    with pytest.raises(ThresholdError):
        verify_tlog_proof(_proof(3, note), ENTRIES[3], POLICY, now=NOW)


def test_cosignature_moved_from_another_checkpoint_is_refused() -> None:
    older = Checkpoint(LOG.name, 36, root(LEAVES[:36]))
    cp = Checkpoint(LOG.name, 37, root(LEAVES))
    note = sign_checkpoint(cp, LOG) + cosign(cp.body(), W1, 5) + cosign(older.body(), W2, 5)
    with pytest.raises(SignatureError):
        verify_tlog_proof(_proof(3, note), ENTRIES[3], POLICY, now=NOW)


def test_checkpoint_of_a_log_not_in_the_policy_is_refused() -> None:
    evil = SigningKey.generate("evil.example/log")
    with pytest.raises(OriginError):
        verify_tlog_proof(_proof(3, _checkpoint(log=evil)), ENTRIES[3], POLICY, now=NOW)


def test_checkpoint_for_our_origin_signed_by_another_key_is_refused() -> None:
    impostor = SigningKey.generate(LOG.name)
    with pytest.raises(SignatureError):
        verify_tlog_proof(_proof(3, _checkpoint(log=impostor)), ENTRIES[3], POLICY, now=NOW)


def test_tampered_proof_hash_fails() -> None:
    p = _proof(3)
    bad = (bytes([p.proof[0][0] ^ 1]) + p.proof[0][1:], *p.proof[1:])
    with pytest.raises(ProofError):
        verify_tlog_proof(TlogProof(3, bad, p.checkpoint), ENTRIES[3], POLICY, now=NOW)


def test_cosignature_from_the_future_is_refused_with_a_clock() -> None:
    with pytest.raises(SignatureError):
        verify_tlog_proof(_proof(3), ENTRIES[3], POLICY, now=1_600_000_000)
    assert verify_tlog_proof(_proof(3), ENTRIES[3], POLICY, now=NOW)


def test_extra_data_is_returned_but_not_authenticated() -> None:
    a = verify_tlog_proof(_proof(3, extra=b"one"), ENTRIES[3], POLICY, now=NOW)
    b = verify_tlog_proof(_proof(3, extra=b"two"), ENTRIES[3], POLICY, now=NOW)
    assert (a.extra, b.extra) == (b"one", b"two")


def test_quorum_none_policy_accepts_an_uncosigned_checkpoint() -> None:
    policy = parse_policy(f"log {LOG.verifier_key()}\nquorum none\n")
    assert verify_tlog_proof(_proof(3, _checkpoint(signers=())), ENTRIES[3], policy, now=NOW)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t.replace("c2sp.org/tlog-proof@v1", "c2sp.org/tlog-proof@v2", 1),
        lambda t: t.replace("index 3", "index 03", 1),
        lambda t: t.replace("index 3", "index -3", 1),
        lambda t: t.replace("index 3", "index  3", 1),
        lambda t: t.replace("index 3", "index 9223372036854775808", 1),
        lambda t: t.replace("index 3\n", "", 1),
        lambda t: t.replace("index 3\n", "index 3\n\n", 1),  # proof hashes into the note
        lambda t: t.replace("index 3\n", "index 3\nAAAA\n", 1),  # short hash
        lambda t: t.replace("index 3\n", "index 3\n" + "A" * 43 + "B\n", 1),  # non-canonical
        lambda t: t.replace("index 3\n", "extra !!\nindex 3\n", 1),
        lambda t: t.replace("index 3\n", "index 3\nextra aGk=\n", 1),  # extra after index
        lambda t: t.replace("\n\n", "\n", 1),
        lambda t: t.replace("index 3\n", "index 3\n" + ("A" * 43 + "=\n") * 64, 1),
        lambda t: t[: t.index("\n—") + 1],  # checkpoint without signatures
    ],
)
def test_malformed_proof_texts_are_format_errors(mutate: object) -> None:
    text = _proof(3).encode()
    bad = mutate(text)  # type: ignore[operator]
    assert bad != text
    with pytest.raises(FormatError):
        verify_tlog_proof(bad, ENTRIES[3], POLICY, now=NOW)


def test_bytes_input_and_oversize() -> None:
    assert verify_tlog_proof(_proof(3).encode().encode(), ENTRIES[3], POLICY, now=NOW)
    with pytest.raises(ProofFormatError):
        parse(b"x" * (3 << 20))
    with pytest.raises(ProofFormatError):
        parse(b"\xff\xfe")
