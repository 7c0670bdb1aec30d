"""A witness cosignature dated in the future is refused where the log verifies one.

A witness whose clock runs ahead (or a forged line) would otherwise vouch for
a freshness nobody has seen yet: the log would publish a checkpoint that
looks younger than it is, and its re-cosigning schedule (which counts from
the newest cosignature on the published checkpoint) would be pushed into the
future, so the checkpoint would go stale for updaters. Both places take the
log's own clock, plus the clock skew every verifier here allows
(``MAX_CLOCK_SKEW``).

The witness with a fast clock is the real ``rebuild.witness.Witness`` served
on 127.0.0.1, given a clock an hour ahead (its ``clock`` parameter is the
seam: no real clock can be set ahead here); the log side is the log's own
witness client and, for the restart, real ``rebuild log serve`` and
``rebuild witness serve`` processes.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

from rebuild.keystore import load_signing_key
from rebuild.log.witnessing import Cosigned, WitnessPool
from rebuild.witness import Witness, WitnessState, start
from tests.logutil import Server, envelope, http_request, make_key, run_cli, start_log
from verify.checkpoint import Checkpoint, sign_checkpoint
from verify.cosignature import MAX_CLOCK_SKEW, add_signatures, cosign, witness_key
from verify.keys import SigningKey
from verify.merkle import leaf_hash
from verify.note import split_note
from verify.tlog_policy import parse_policy

AHEAD = 3600  # seconds: well beyond MAX_CLOCK_SKEW


def _collect(tmp_path: Path, clock_offset: float) -> tuple[Cosigned, list[dict[str, object]]]:
    """The log's witness client asks one real witness whose clock is off by ``clock_offset``."""
    log_key = SigningKey.generate("future.log.test")
    wkey = SigningKey.generate("w.future.test")
    note = sign_checkpoint(Checkpoint(log_key.name, 1, leaf_hash(b"entry")), log_key)

    async def main() -> tuple[Cosigned, list[dict[str, object]]]:
        state = WitnessState(tmp_path / f"ws{clock_offset}")
        witness = Witness(
            wkey, [log_key.verifier_key()], state, clock=lambda: time.time() + clock_offset
        )
        server = await start(witness, "127.0.0.1", 0)
        pool = WitnessPool(
            parse_policy(f"witness W {witness_key(wkey)} {server.url}\nquorum W\n"),
            ssl.create_default_context(),
            timeout=30,
        )

        async def no_proof(old: int, new: int) -> list[bytes]:
            raise AssertionError("a first checkpoint needs no consistency proof")

        try:
            return await pool.collect(1, note, no_proof), pool.health()
        finally:
            await pool.close()
            await server.stop()
            state.close()

    return asyncio.run(main())


def test_witness_with_a_fast_clock_does_not_count_towards_the_quorum(tmp_path: Path) -> None:
    cosigned, health = _collect(tmp_path, AHEAD)
    assert cosigned.witnesses == () and not cosigned.quorum_met
    assert len(split_note(cosigned.note)[1]) == 1  # only the log's own signature
    [w] = health
    assert "bad cosignature" in str(w["last_error"]) and "from the future" in str(w["last_error"])


def test_witness_within_the_clock_skew_is_counted(tmp_path: Path) -> None:
    """The control: the same witness with a clock a little ahead is accepted."""
    cosigned, health = _collect(tmp_path, MAX_CLOCK_SKEW / 2)
    assert cosigned.witnesses == ("W",) and cosigned.quorum_met
    assert len(split_note(cosigned.note)[1]) == 2
    assert health[0]["last_error"] is None


def test_future_cosignature_on_disk_does_not_postpone_recosigning(tmp_path: Path) -> None:
    """A published checkpoint carrying a cosignature dated 10 days ahead (left by a
    witness whose clock was wrong, or written by hand) must not make a restarted
    log wait 10 days plus its interval before it asks for a fresh cosignature."""
    log_key = make_key(tmp_path, "restart.future.test")
    wkey_file = make_key(tmp_path, "w.restart.future.test")
    wkey = load_signing_key(wkey_file)
    witness = Server(
        ["witness", "serve", "--key", str(wkey_file), "--state", str(tmp_path / "ws"),
         "--listen", "127.0.0.1:0", "--log-key", f"{log_key}.pub"],
        tmp_path / "witness.log",
    )  # fmt: skip
    servers = [witness]
    try:
        policy = tmp_path / "policy"
        log_vkey = Path(f"{log_key}.pub").read_text().strip()
        policy.write_text(
            f"log {log_vkey}\nwitness W {witness_key(wkey)} {witness.url}\nquorum W\n"
        )
        args = ("--witnesses", str(policy), "--recosign-interval", "3600")
        log = start_log(tmp_path / "log", log_key, tmp_path / "log1.log", *args)
        servers.append(log)
        entry = tmp_path / "entry.json"
        entry.write_bytes(envelope("the only entry"))
        assert run_cli("log", "add", "--log", log.url, str(entry), "--wait").returncode == 0
        log.stop()

        published = tmp_path / "log" / "checkpoint"
        text, _ = split_note(published.read_text())
        future = cosign(text, wkey, int(time.time()) + 10 * 24 * 3600)
        published.write_text(add_signatures(published.read_text(), split_note("x\n\n" + future)[1]))

        log = start_log(tmp_path / "log", log_key, tmp_path / "log2.log", *args)
        servers.append(log)
        log.wait_for(r"cosigned again checkpoint 1 cosigned by W", timeout=60)
        status, note = http_request(log.url, "GET", "/checkpoint")
        assert status == 200 and future not in note.decode()
    finally:
        for s in servers:
            s.stop()
