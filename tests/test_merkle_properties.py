"""Property tests: proofs from a reference tree verify; any mutation fails.

The reference is RFC 6962's recursive definition (MTH, PATH, PROOF) written
independently below, not the producers in verify.merkle.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verify.errors import ProofError, ProofFormatError
from verify.merkle import (
    consistency_proof_in_memory,
    inclusion_proof_in_memory,
    leaf_hash,
    root,
    verify_consistency,
    verify_inclusion,
)


def _mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = 1
    while k * 2 < len(d):
        k *= 2
    return hashlib.sha256(b"\x01" + _mth(d[:k]) + _mth(d[k:])).digest()


def _path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) <= 1:
        return []
    k = 1
    while k * 2 < len(d):
        k *= 2
    if m < k:
        return [*_path(m, d[:k]), _mth(d[k:])]
    return [*_path(m - k, d[k:]), _mth(d[:k])]


def _subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [_mth(d)]
    k = 1
    while k * 2 < len(d):
        k *= 2
    if m <= k:
        return [*_subproof(m, d[:k], b), _mth(d[k:])]
    return [*_subproof(m - k, d[k:], False), _mth(d[:k])]


def _leaves(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


tree_and_index = st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1)))
two_sizes = st.integers(1, 300).flatmap(lambda n: st.tuples(st.integers(1, n), st.just(n)))


@settings(max_examples=300, deadline=None)
@given(tree_and_index)
def test_reference_inclusion_proofs_verify(args: tuple[int, int]) -> None:
    n, m = args
    d = _leaves(n)
    proof = _path(m, d)
    assert inclusion_proof_in_memory(m, d) == proof
    assert root(d) == _mth(d)
    verify_inclusion(d[m], m, n, proof, _mth(d))


@settings(max_examples=300, deadline=None)
@given(two_sizes)
def test_reference_consistency_proofs_verify(args: tuple[int, int]) -> None:
    m, n = args
    d = _leaves(n)
    proof = _subproof(m, d, True)
    assert consistency_proof_in_memory(m, d) == proof
    verify_consistency(m, n, proof, _mth(d[:m]), _mth(d))


@settings(max_examples=300, deadline=None)
@given(tree_and_index, st.data())
def test_any_mutation_of_an_inclusion_proof_fails(
    args: tuple[int, int], data: st.DataObject
) -> None:
    n, m = args
    d = _leaves(n)
    proof = _path(m, d)
    r = _mth(d)
    # The tree size is not in this list: an inclusion proof binds the leaf
    # to (index, root); the size is bound by the signed checkpoint, and
    # sizes with the same tree shape legitimately accept the same proof.
    kind = data.draw(st.sampled_from(["flip", "drop", "add", "index", "leaf", "root"]))
    leaf, index = d[m], m
    if kind == "flip" and proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        h = bytearray(proof[i])
        h[bit // 8] ^= 1 << (bit % 8)
        proof[i] = bytes(h)
    elif kind == "drop" and proof:
        del proof[data.draw(st.integers(0, len(proof) - 1))]
    elif kind == "add":
        proof.insert(data.draw(st.integers(0, len(proof))), d[0])
    elif kind == "index" and n > 1:
        index = data.draw(st.integers(0, n - 1).filter(lambda x: x != m))
    elif kind == "leaf":
        leaf = leaf_hash(b"not a leaf")
    elif kind == "root":
        r = hashlib.sha256(r).digest()
    else:
        return  # nothing to mutate (a one-leaf tree has an empty proof)
    with pytest.raises((ProofError, ProofFormatError)):
        verify_inclusion(leaf, index, n, proof, r)


@settings(max_examples=300, deadline=None)
@given(two_sizes, st.data())
def test_any_mutation_of_a_consistency_proof_fails(
    args: tuple[int, int], data: st.DataObject
) -> None:
    m, n = args
    d = _leaves(n)
    proof = _subproof(m, d, True)
    r1, r2 = _mth(d[:m]), _mth(d)
    # Sizes are not mutated, for the reason given for inclusion proofs.
    kind = data.draw(st.sampled_from(["flip", "drop", "add", "root1", "root2"]))
    if kind == "flip" and proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        h = bytearray(proof[i])
        h[bit // 8] ^= 1 << (bit % 8)
        proof[i] = bytes(h)
    elif kind == "drop" and proof:
        del proof[data.draw(st.integers(0, len(proof) - 1))]
    elif kind == "add":
        proof.insert(data.draw(st.integers(0, len(proof))), d[0])
    elif kind == "root1":
        r1 = hashlib.sha256(r1).digest()
    elif kind == "root2":
        r2 = hashlib.sha256(r2).digest()
    else:
        return
    with pytest.raises((ProofError, ProofFormatError)):
        verify_consistency(m, n, proof, r1, r2)
