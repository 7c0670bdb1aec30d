"""Real Sigstore Rekor inclusion proofs (production and staging).

Rekor v2 (rekor-tiles) checkpoints are C2SP signed notes with Ed25519 log
keys: those cases are verified end to end (checkpoint signature under the
log's C2SP verifier key, origin, size/root, Merkle inclusion of the leaf).

Rekor v1 checkpoints are signed with ECDSA P-256, which verify/ does not
implement (verify/ is standard library + PyNaCl only, and our own logs sign
with Ed25519). For those cases only the Merkle inclusion is verified and the
checkpoint's size and root are checked against the proof; the ECDSA
checkpoint signature is out of scope and deliberately not checked.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.conftest import load_vector
from verify.checkpoint import open_checkpoint, parse
from verify.errors import ProofError, SignatureError
from verify.keys import VerifierKey
from verify.merkle import leaf_hash, verify_inclusion
from verify.note import split_note

REKOR = load_vector("sigstore-rekor-inclusion.json")
V2 = [c for c in REKOR["cases"] if "c2sp_vkey" in c["log_key"]]
V1 = [c for c in REKOR["cases"] if "c2sp_vkey" not in c["log_key"]]


def _inclusion_args(case: dict[str, Any]) -> tuple[bytes, int, int, list[bytes], bytes]:
    body = base64.b64decode(case["canonicalizedBody_b64"])
    lh = leaf_hash(body)
    assert lh.hex() == case["leaf_hash_hex"]
    proof = [base64.b64decode(h) for h in case["hashes_b64"]]
    return lh, case["logIndex"], case["treeSize"], proof, base64.b64decode(case["rootHash_b64"])


def test_vector_split() -> None:
    assert len(V2) == 3 and len(V1) == 3


@pytest.mark.parametrize("case", V2, ids=lambda c: c["log"])
def test_rekor_v2_inclusion_against_signed_checkpoint(case: dict[str, Any]) -> None:
    key = VerifierKey.parse(case["log_key"]["c2sp_vkey"])
    cp, note = open_checkpoint(case["checkpoint_envelope"], key)
    lh, index, size, proof, _ = _inclusion_args(case)
    assert cp.size == size
    verify_inclusion(lh, index, cp.size, proof, cp.root_hash)
    # The alpha3 checkpoint carries witness cosignatures by keys we do not
    # know; they are kept aside, unverified.
    assert all(s.name != key.name for s in note.unverified)


@pytest.mark.parametrize("case", V2, ids=lambda c: c["log"])
def test_rekor_v2_tampered_entry_is_not_included(case: dict[str, Any]) -> None:
    key = VerifierKey.parse(case["log_key"]["c2sp_vkey"])
    cp, _ = open_checkpoint(case["checkpoint_envelope"], key)
    body = base64.b64decode(case["canonicalizedBody_b64"])
    _, index, size, proof, _ = _inclusion_args(case)
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(body + b" "), index, size, proof, cp.root_hash)


@pytest.mark.parametrize("case", V2, ids=lambda c: c["log"])
def test_rekor_v2_checkpoint_with_altered_size_fails_its_signature(case: dict[str, Any]) -> None:
    key = VerifierKey.parse(case["log_key"]["c2sp_vkey"])
    text, _ = split_note(case["checkpoint_envelope"])
    cp = parse(text)
    forged = case["checkpoint_envelope"].replace(f"\n{cp.size}\n", f"\n{cp.size + 1}\n", 1)
    with pytest.raises(SignatureError):
        open_checkpoint(forged, key)


@pytest.mark.parametrize("case", V1, ids=lambda c: c["bundle_path"])
def test_rekor_v1_merkle_inclusion_only(case: dict[str, Any]) -> None:
    """ECDSA checkpoint signature out of scope (see module docstring)."""
    lh, index, size, proof, root_hash = _inclusion_args(case)
    verify_inclusion(lh, index, size, proof, root_hash)
    text, _ = split_note(case["checkpoint_envelope"])
    cp = parse(text)
    assert (cp.size, cp.root_hash) == (size, root_hash)
    with pytest.raises(ProofError):
        verify_inclusion(lh, index - 1, size, proof, root_hash)
