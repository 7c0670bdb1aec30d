"""Merkle proof verification speed at 10^7 leaves.

Proofs are built without materialising 10^7 leaves: for random leaf
indexes, random 32-byte sibling hashes of the right count form a proof and
the root follows from it, so verification does exactly the work it does for
a real tree of that size. Prints microseconds per verification.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_merkle.py
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

from verify.merkle import (
    consistency_proof,
    inclusion_proof_ranges,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)


def _inclusion_cases(
    size: int, n: int, rng: random.Random
) -> list[tuple[bytes, int, list[bytes], bytes]]:
    cases = []
    for _ in range(n):
        index = rng.randrange(size)
        proof = [os.urandom(32) for _ in inclusion_proof_ranges(index, size)]
        lh = leaf_hash(os.urandom(64))
        cases.append((lh, index, proof, root_from_inclusion_proof(lh, index, size, proof)))
    return cases


def _consistency_case(size1: int, size2: int) -> tuple[list[bytes], bytes, bytes]:
    """A valid consistency proof over a synthetic tree of ``size2`` leaves.

    The proof's subtrees get random hashes; both roots are then composed from
    those subtrees by RFC 6962's split rule, as they would be in a real tree.
    """
    assigned: dict[tuple[int, int], bytes] = {}

    def random_subtree(a: int, b: int) -> bytes:
        return assigned.setdefault((a, b), os.urandom(32))

    proof = consistency_proof(size1, size2, random_subtree)

    def mth(a: int, b: int) -> bytes:
        if (a, b) in assigned:
            return assigned[(a, b)]
        k = 1 << ((b - a - 1).bit_length() - 1)
        return node_hash(mth(a, a + k), mth(a + k, b))

    return proof, mth(0, size1), mth(0, size2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=10**7)
    ap.add_argument("--proofs", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rng = random.Random(1)
    cases = _inclusion_cases(args.size, args.proofs, rng)
    per_round = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for lh, index, proof, r in cases:
            verify_inclusion(lh, index, args.size, proof, r)
        per_round.append((time.perf_counter() - t0) / len(cases) * 1e6)
    mean_len = statistics.mean(len(c[2]) for c in cases)
    print(
        f"inclusion: {statistics.median(per_round):.1f} us/proof (median of {args.rounds} rounds "
        f"x {len(cases)} proofs, best {min(per_round):.1f}) at {args.size} leaves, "
        f"{mean_len:.1f} hashes/proof"
    )
    size1 = rng.randrange(args.size // 2, args.size)
    proof, r1, r2 = _consistency_case(size1, args.size)
    n = args.proofs
    t0 = time.perf_counter()
    for _ in range(n):
        verify_consistency(size1, args.size, proof, r1, r2)
    us = (time.perf_counter() - t0) / n * 1e6
    print(f"consistency: {us:.1f} us/proof from {size1} to {args.size} leaves, {len(proof)} hashes")


if __name__ == "__main__":
    main()
