"""RFC 6962/9162 Merkle verification against the public vectors.

rfc6962-merkle-reference.json and the transparency-dev/merkle probes: every
valid proof verifies, every corrupted probe fails with a typed error.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from tests.conftest import load_vector
from verify.errors import FormatError, ProofError, ProofFormatError, VerifyError
from verify.merkle import (
    EMPTY_ROOT,
    consistency_proof_in_memory,
    inclusion_proof_in_memory,
    leaf_hash,
    root,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

REF = load_vector("rfc6962-merkle-reference.json")
LEAVES = [bytes.fromhex(x) for x in REF["leaves_hex"]]
LEAF_HASHES = [leaf_hash(x) for x in LEAVES]
INCL = load_vector("transparency-dev-merkle-inclusion-probes.json")
CONS = load_vector("transparency-dev-merkle-consistency-probes.json")


def _b64(v: str | None) -> bytes:
    return base64.b64decode(v or "")


def _b64list(v: list[str] | None) -> list[bytes]:
    return [_b64(x) for x in (v or [])]


def test_roots_for_every_prefix_of_the_reference_tree() -> None:
    for size, want in enumerate(REF["roots_by_size_hex"]):
        assert root(LEAF_HASHES[:size]).hex() == want
    assert root([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()


@pytest.mark.parametrize("case", REF["inclusion_cases"])
def test_reference_inclusion_proofs_verify(case: dict[str, Any]) -> None:
    leaf = bytes.fromhex(case["leaf_hex"])
    assert leaf_hash(leaf).hex() == case["leaf_hash_hex"]
    proof = [bytes.fromhex(h) for h in case["proof_hex"]]
    verify_inclusion(
        leaf_hash(leaf), case["index"], case["tree_size"], proof, bytes.fromhex(case["root_hex"])
    )
    assert inclusion_proof_in_memory(case["index"], LEAF_HASHES[: case["tree_size"]]) == proof


@pytest.mark.parametrize("case", REF["consistency_cases"])
def test_reference_consistency_proofs_verify(case: dict[str, Any]) -> None:
    proof = [bytes.fromhex(h) for h in case["proof_hex"]]
    r1, r2 = bytes.fromhex(case["root1_hex"]), bytes.fromhex(case["root2_hex"])
    verify_consistency(case["size1"], case["size2"], proof, r1, r2)
    assert consistency_proof_in_memory(case["size1"], LEAF_HASHES[: case["size2"]]) == proof


def test_every_derived_inclusion_proof_verifies_and_matches_our_producer() -> None:
    cases = REF["derived_exhaustive"]["inclusion"]
    assert cases
    for case in cases:
        size, index = case["tree_size"], case["index"]
        proof = [bytes.fromhex(h) for h in case["proof_hex"]]
        assert inclusion_proof_in_memory(index, LEAF_HASHES[:size]) == proof
        verify_inclusion(LEAF_HASHES[index], index, size, proof, root(LEAF_HASHES[:size]))


def test_every_derived_consistency_proof_verifies_and_matches_our_producer() -> None:
    cases = REF["derived_exhaustive"]["consistency"]
    assert cases
    for case in cases:
        s1, s2 = case["size1"], case["size2"]
        proof = [bytes.fromhex(h) for h in case["proof_hex"]]
        if s1 == 0:
            continue  # undefined by RFC 9162; covered by the policy test below
        assert consistency_proof_in_memory(s1, LEAF_HASHES[:s2]) == proof
        verify_consistency(s1, s2, proof, root(LEAF_HASHES[:s1]), root(LEAF_HASHES[:s2]))


def test_accumulated_subtree_hash_vector_over_130_leaves() -> None:
    """The draft-ietf-plants-merkle-tree-certs subtree vector, via our root()."""
    acc = REF["accumulated_vectors"]["subtree_hash"]
    leaves = [leaf_hash(bytes([i])) for i in range(130)]
    sha = hashlib.sha256()
    for end in range(131):
        for start in range(end + 1):
            n = end - start
            if start == 0 or n == 0 or start % (1 << (n - 1).bit_length()) == 0:
                sha.update(b"[%d, %d) %s\n" % (start, end, root(leaves[start:end]).hex().encode()))
    assert sha.hexdigest() == acc["sha256_hex"]


def test_accumulated_subtree_inclusion_vector_over_130_leaves() -> None:
    acc = REF["accumulated_vectors"]["subtree_inclusion"]
    leaves = [leaf_hash(bytes([i])) for i in range(130)]
    sha = hashlib.sha256()
    for end in range(131):
        for start in range(end + 1):
            n = end - start
            if not (start == 0 or n == 0 or start % (1 << (n - 1).bit_length()) == 0):
                continue
            for index in range(start, end):
                sub = leaves[start:end]
                proof = inclusion_proof_in_memory(index - start, sub)
                line = f"{index} [{start}, {end})" + "".join(" " + h.hex() for h in proof)
                sha.update(line.encode() + b"\n")
    assert sha.hexdigest() == acc["sha256_hex"]


@pytest.mark.parametrize("case", INCL["cases"], ids=lambda c: c["file"])
def test_inclusion_probe(case: dict[str, Any]) -> None:
    args = (
        _b64(case["leafHash"]),
        case["leafIdx"],
        case["treeSize"],
        _b64list(case["proof"]),
        _b64(case["root"]),
    )
    if case["wantErr"]:
        with pytest.raises((ProofError, ProofFormatError)):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("case", CONS["cases"], ids=lambda c: c["file"])
def test_consistency_probe(case: dict[str, Any]) -> None:
    """Size-0 probes (policy_note): like transparency-dev/merkle we refuse a
    consistency proof from the empty tree; the witness handles `old 0`."""
    args = (
        case["size1"],
        case["size2"],
        _b64list(case["proof"]),
        _b64(case["root1"]),
        _b64(case["root2"]),
    )
    if case["wantErr"]:
        with pytest.raises((ProofError, ProofFormatError)):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_index_beyond_the_tree_is_a_format_error() -> None:
    with pytest.raises(ProofFormatError):
        verify_inclusion(LEAF_HASHES[0], 8, 8, [], root(LEAF_HASHES))
    with pytest.raises(ProofFormatError):
        root_from_inclusion_proof(LEAF_HASHES[0], -1, 8, [])


def test_truncated_hash_in_proof_is_a_format_error_not_a_crash() -> None:
    proof = inclusion_proof_in_memory(3, LEAF_HASHES)
    proof[1] = proof[1][:31]
    with pytest.raises(ProofFormatError):
        verify_inclusion(LEAF_HASHES[3], 3, 8, proof, root(LEAF_HASHES))


def test_size_beyond_2_63_is_refused() -> None:
    with pytest.raises(ProofFormatError):
        verify_inclusion(LEAF_HASHES[0], 0, 1 << 63, [], LEAF_HASHES[0])


def test_proof_longer_than_64_hashes_is_refused_before_hashing() -> None:
    with pytest.raises(ProofFormatError):
        verify_inclusion(LEAF_HASHES[0], 0, 8, [LEAF_HASHES[0]] * 65, root(LEAF_HASHES))


def test_equal_sizes_with_a_forked_root_is_a_proof_error() -> None:
    with pytest.raises(ProofError):
        verify_consistency(8, 8, [], root(LEAF_HASHES), root(LEAF_HASHES[:7]))


def test_empty_trees_with_the_empty_root_are_consistent() -> None:
    verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)
    with pytest.raises(ProofError):
        verify_consistency(0, 0, [], LEAF_HASHES[0], LEAF_HASHES[0])


def test_errors_are_typed() -> None:
    assert issubclass(ProofFormatError, FormatError)
    assert issubclass(ProofError, VerifyError)
