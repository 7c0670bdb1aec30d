"""Two real witnesses on 127.0.0.1 cosign a growing log; tlog-proofs built
against the cosigned checkpoints verify under a 2-of-2 tlog-policy, and fail
the policy when one witness is missing.

The "log" here is the test itself (a list of entries and a signing key): the
log server is another component, and this test pins the contract between
the witness, cosignature collection and offline proof verification.
"""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

import aiohttp
import pytest

from rebuild.witness import Witness, WitnessState, start
from verify.checkpoint import Checkpoint, sign_checkpoint
from verify.cosignature import add_signatures, verify_witness_response, witness_key
from verify.errors import ThresholdError
from verify.keys import SigningKey
from verify.merkle import consistency_proof_in_memory, inclusion_proof_in_memory, leaf_hash, root
from verify.tlog_policy import parse_policy
from verify.tlogproof import TlogProof, parse, verify_tlog_proof

LOG = SigningKey.generate("log.example/e2e")
W1, W2 = SigningKey.generate("w1.example"), SigningKey.generate("w2.example")


def test_entries_verify_against_checkpoints_cosigned_by_two_witnesses(tmp_path: Path) -> None:
    policy = parse_policy(
        f"log {LOG.verifier_key()}\n"
        f"witness one {witness_key(W1)}\n"
        f"witness two {witness_key(W2)}\n"
        "group both all one two\n"
        "quorum both\n"
    )
    entries: list[bytes] = []
    proofs: list[tuple[bytes, str]] = []

    async def main() -> None:
        states = [WitnessState(tmp_path / "w1"), WitnessState(tmp_path / "w2")]
        servers = [
            await start(Witness(k, [LOG.verifier_key()], s), "127.0.0.1", 0)
            for k, s in zip((W1, W2), states, strict=True)
        ]
        try:
            async with aiohttp.ClientSession() as session:
                witnessed = 0
                for batch in range(4):
                    entries.extend(b"envelope %d/%d" % (batch, i) for i in range(batch * 7 + 1))
                    leaves = [leaf_hash(e) for e in entries]
                    cp = Checkpoint(LOG.name, len(leaves), root(leaves))
                    note = sign_checkpoint(cp, LOG)
                    proof = consistency_proof_in_memory(witnessed, leaves) if witnessed else []
                    req = f"old {witnessed}\n" + "".join(
                        base64.b64encode(h).decode() + "\n" for h in proof
                    )
                    for srv, key in zip(servers, (W1, W2), strict=True):
                        async with session.post(
                            srv.url + "/add-checkpoint", data=(req + "\n" + note).encode()
                        ) as r:
                            assert r.status == 200, await r.text()
                            cosigs = verify_witness_response(
                                cp.body(), await r.text(), [witness_key(key)], now=int(time.time())
                            )
                        note = add_signatures(note, [c.signature for c in cosigs])
                    witnessed = len(leaves)
                    for i in range(len(entries)):
                        p = TlogProof(i, tuple(inclusion_proof_in_memory(i, leaves)), note)
                        proofs.append((entries[i], p.encode()))
        finally:
            for srv in servers:
                await srv.stop()
            for s in states:
                s.close()

    asyncio.run(main())
    assert len(proofs) > 40
    for entry, text in proofs:
        v = verify_tlog_proof(text, entry, policy, now=int(time.time()) + 300)
        assert set(v.quorum.witnesses) == {"one", "two"}

    # Drop one witness's cosignature from a proof: the 2-of-2 quorum fails.
    entry, text = proofs[-1]
    tp = parse(text)
    stripped = "\n".join(
        line for line in tp.checkpoint.split("\n") if not line.startswith("— w2.example ")
    )
    with pytest.raises(ThresholdError):
        verify_tlog_proof(
            TlogProof(tp.index, tp.proof, stripped), entry, policy, now=int(time.time()) + 300
        )
