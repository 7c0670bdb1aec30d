"""RFC 6962 / RFC 9162 Merkle trees: hashing, roots, inclusion and consistency.

This module decides whether a leaf is in a tree and whether one tree extends
another, from hashes alone. It never reads files or the network, and it never
trusts a root it computed itself: callers compare against a root taken from a
signed checkpoint. Hashes are SHA-256 (32 bytes); tree sizes and indexes are
bounded by 2**63 - 1 like every C2SP implementation.

Verification raises :class:`~verify.errors.ProofError` when a proof does not
verify and :class:`~verify.errors.ProofFormatError` when the arguments are
impossible (wrong hash length, index outside the tree, negative sizes);
success returns ``None``. The proof *producers* here (ranges and in-memory
proofs) exist for the log server, the tile reader and the tests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from verify.errors import ProofError, ProofFormatError

HASH_SIZE: Final = 32
MAX_TREE_SIZE: Final = (1 << 63) - 1
# An inclusion proof in a tree of at most 2**63 - 1 leaves has at most 63
# hashes; a consistency proof at most 64 (tlog-witness caps requests at 63).
MAX_PROOF_HASHES: Final = 64
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || data). Never raises."""
    return _sha256(b"\x00" + bytes(data)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right). Never raises."""
    return _sha256(b"\x01" + left + right).digest()


def _check_hash(value: object, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise ProofFormatError(f"{what} must be bytes")
    if len(value) != HASH_SIZE:
        raise ProofFormatError(f"{what} must be {HASH_SIZE} bytes, got {len(value)}")
    return bytes(value)


def _check_size(value: object, what: str) -> int:
    # bool is an int subclass; a True tree size is a caller bug, not a size.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProofFormatError(f"{what} must be an integer")
    if not 0 <= value <= MAX_TREE_SIZE:
        raise ProofFormatError(f"{what} {value} is outside 0..2**63-1")
    return value


def _check_proof(proof: Sequence[bytes]) -> list[bytes]:
    if isinstance(proof, bytes | str):
        raise ProofFormatError("proof must be a sequence of hashes, not one string")
    if len(proof) > MAX_PROOF_HASHES:
        raise ProofFormatError(f"proof has {len(proof)} hashes, more than {MAX_PROOF_HASHES}")
    out = [bytes(h) if isinstance(h, bytearray | memoryview) else h for h in proof]
    for i, h in enumerate(out):
        # The message is only formatted on failure: this runs per proof hash.
        if not isinstance(h, bytes) or len(h) != HASH_SIZE:
            _check_hash(h, f"proof hash {i}")
    return out


def root(leaf_hashes: Iterable[bytes]) -> bytes:
    """The RFC 6962 Merkle Tree Hash over leaf hashes; SHA-256("") when empty.

    Streams: memory is O(log n) whatever the number of leaves.

    Raises ProofFormatError for a leaf hash that is not 32 bytes.
    """
    # stack[i] = (height, hash) of perfect subtrees, heights strictly
    # decreasing: the binary decomposition of the count so far.
    stack: list[tuple[int, bytes]] = []
    for i, h in enumerate(leaf_hashes):
        # The error message is only formatted on failure: this runs per leaf.
        node = h if type(h) is bytes and len(h) == HASH_SIZE else _check_hash(h, f"leaf hash {i}")
        height = 0
        while stack and stack[-1][0] == height:
            node = node_hash(stack.pop()[1], node)
            height += 1
        stack.append((height, node))
    if not stack:
        return EMPTY_ROOT
    acc = stack[-1][1]
    for _, left in reversed(stack[:-1]):
        acc = node_hash(left, acc)
    return acc


def _largest_power_of_two_below(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _inclusion_shape(index: int, size: int) -> tuple[int, int]:
    """(inner, border): how an inclusion path for ``index`` in ``size`` splits.

    Below bit ``inner`` (the highest bit where ``index`` and ``size - 1``
    differ) every ancestor of the leaf has a sibling, on the side given by
    the index bit. Above it, the leaf's path coincides with the last leaf's
    (the right edge of the tree), where an ancestor only has a sibling, to
    its left, when its index bit is 1. This is RFC 9162 section 2.1.3.2
    with the loop unrolled into arithmetic.
    """
    inner = (index ^ (size - 1)).bit_length()
    border = (index >> inner).bit_count()
    return inner, border


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes:
    """The root an inclusion proof implies; raises ProofError on a wrong length."""
    leaf = _check_hash(leaf_hash, "leaf hash")
    index = _check_size(index, "leaf index")
    size = _check_size(size, "tree size")
    if index >= size:
        raise ProofFormatError(f"leaf index {index} is not below tree size {size}")
    hashes = _check_proof(proof)
    return _chain_inclusion(leaf, index, size, hashes)


def _chain_inclusion(leaf: bytes, index: int, size: int, proof: list[bytes]) -> bytes:
    inner, border = _inclusion_shape(index, size)
    if len(proof) != inner + border:
        raise ProofError(
            f"inclusion proof has {len(proof)} hashes, expected {inner + border} "
            f"for index {index} in a tree of {size}"
        )
    sha = _sha256
    acc = leaf
    for i in range(inner):
        if (index >> i) & 1:
            acc = sha(b"\x01" + proof[i] + acc).digest()
        else:
            acc = sha(b"\x01" + acc + proof[i]).digest()
    for sibling in proof[inner:]:
        acc = sha(b"\x01" + sibling + acc).digest()
    return acc


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Verify that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` with ``root``.

    RFC 9162 section 2.1.3.2. Returns None; raises ProofError when the proof
    does not lead to ``root``, ProofFormatError for impossible arguments.
    """
    expected = _check_hash(root, "root hash")
    if root_from_inclusion_proof(leaf_hash, index, size, proof) != expected:
        raise ProofError(f"inclusion proof for index {index} does not lead to the root")


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Verify that the tree (size2, root2) extends the tree (size1, root1).

    RFC 9162 section 2.1.4.2. Equal sizes need an empty proof and equal
    roots (an empty tree's root must be SHA-256("")). A proof from the
    empty tree (size1 = 0 < size2) is not defined by RFC 9162 and is
    refused with ProofFormatError, as transparency-dev/merkle does: the
    empty tree is consistent with every tree, so callers that accept it
    (the tlog-witness ``old 0`` case) decide that without a proof.

    Raises ProofError when the proof does not lead to both roots, ProofFormatError for
    impossible arguments (sizes out of order or range, hashes of the wrong length, too
    many hashes).
    """
    size1 = _check_size(size1, "first tree size")
    size2 = _check_size(size2, "second tree size")
    if size1 > size2:
        raise ProofFormatError(f"first tree size {size1} is larger than second {size2}")
    if size1 == size2 and size1 > 0:
        # No hashing happens, so the roots are compared as given, like
        # transparency-dev/merkle (its probe "sizes are equal (one) and
        # proof is empty" passes two equal 12-byte roots and expects success).
        for r in (root1, root2):
            if not isinstance(r, bytes | bytearray | memoryview):
                raise ProofFormatError("root hashes must be bytes")
        if proof:
            raise ProofError("consistency proof between equal sizes must be empty")
        if bytes(root1) != bytes(root2):
            raise ProofError(f"two different roots for the same tree size {size1}")
        return
    first = _check_hash(root1, "first root hash")
    second = _check_hash(root2, "second root hash")
    path = _check_proof(proof)
    if size1 == size2:  # both empty
        if path:
            raise ProofError("consistency proof between equal sizes must be empty")
        if first != EMPTY_ROOT or second != EMPTY_ROOT:
            raise ProofError("the empty tree's root must be SHA-256 of the empty string")
        return
    if size1 == 0:
        raise ProofFormatError("a consistency proof from the empty tree is not defined")
    if not path:
        raise ProofError("empty consistency proof between different tree sizes")

    # Step 2: when size1 is a power of two, the old root is the first node.
    if size1 & (size1 - 1) == 0:
        path.insert(0, first)
    # Steps 3-4: walk up from the last old leaf past the levels where it is
    # a right child, since the proof starts at the old tree's largest node.
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    sha = _sha256
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than the tree is high")
        if fn & 1 or fn == sn:
            fr = sha(b"\x01" + c + fr).digest()
            sr = sha(b"\x01" + c + sr).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = sha(b"\x01" + sr + c).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is shorter than the tree is high")
    if fr != first:
        raise ProofError(f"consistency proof does not lead to the root of size {size1}")
    if sr != second:
        raise ProofError(f"consistency proof does not lead to the root of size {size2}")


# --- proof producers -------------------------------------------------------

Range = tuple[int, int]


def inclusion_proof_ranges(index: int, size: int) -> list[Range]:
    """The leaf ranges [start, end) whose hashes form PATH(index, D[0:size]).

    RFC 6962 section 2.1.1, from the leaf's sibling up to the root's child.

    Raises ProofFormatError for an index outside the tree or a size outside 0..2**63-1.
    """
    index = _check_size(index, "leaf index")
    size = _check_size(size, "tree size")
    if index >= size:
        raise ProofFormatError(f"leaf index {index} is not below tree size {size}")
    out: list[Range] = []
    start, end = 0, size
    while end - start > 1:
        k = _largest_power_of_two_below(end - start)
        if index < start + k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start += k
    out.reverse()
    return out


def consistency_proof_ranges(size1: int, size2: int) -> list[Range]:
    """The leaf ranges whose hashes form PROOF(size1, D[0:size2]) (RFC 6962 2.1.2).

    Raises ProofFormatError unless 0 < size1 <= size2 <= 2**63-1.
    """
    size1 = _check_size(size1, "first tree size")
    size2 = _check_size(size2, "second tree size")
    if not 0 < size1 <= size2:
        raise ProofFormatError(f"no consistency proof from size {size1} to {size2}")
    out: list[Range] = []
    start, end, m, complete = 0, size2, size1, True
    while m != end - start:
        k = _largest_power_of_two_below(end - start)
        if m <= k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start += k
            m -= k
            complete = False
    if not complete:
        out.append((start, end))
    out.reverse()
    return out


def subtree_root(leaf_hashes: Sequence[bytes], start: int, end: int) -> bytes:
    """MTH(D[start:end]) over an in-memory list of leaf hashes.

    Raises ProofFormatError for a leaf hash that is not 32 bytes.
    """
    return root(leaf_hashes[start:end])


def inclusion_proof(
    index: int, size: int, subtree_hash: Callable[[int, int], bytes]
) -> list[bytes]:
    """An inclusion proof, with ``subtree_hash(start, end)`` giving MTH(D[start:end]).

    Raises ProofFormatError as :func:`inclusion_proof_ranges` does; what
    ``subtree_hash`` raises propagates.
    """
    return [subtree_hash(a, b) for a, b in inclusion_proof_ranges(index, size)]


def consistency_proof(
    size1: int, size2: int, subtree_hash: Callable[[int, int], bytes]
) -> list[bytes]:
    """A consistency proof, with ``subtree_hash(start, end)`` giving MTH(D[start:end]).

    Raises ProofFormatError as :func:`consistency_proof_ranges` does; what
    ``subtree_hash`` raises propagates.
    """
    return [subtree_hash(a, b) for a, b in consistency_proof_ranges(size1, size2)]


def inclusion_proof_in_memory(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """An inclusion proof over a list of leaf hashes (tests, small trees).

    Raises ProofFormatError for an index outside the list or a hash that is not 32
    bytes.
    """
    return inclusion_proof(index, len(leaf_hashes), lambda a, b: subtree_root(leaf_hashes, a, b))


def consistency_proof_in_memory(size1: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """A consistency proof from ``size1`` to ``len(leaf_hashes)`` (tests, small trees).

    Raises ProofFormatError unless 0 < size1 <= len(leaf_hashes), or for a hash that is
    not 32 bytes.
    """
    return consistency_proof(size1, len(leaf_hashes), lambda a, b: subtree_root(leaf_hashes, a, b))
