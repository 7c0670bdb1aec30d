"""The tlog-witness server over real HTTP on 127.0.0.1: every status code,
replays, forks, a compare-and-swap race, restarts, garbage and TLS."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rebuild.errors import StorageError
from rebuild.witness import Witness, WitnessState, origin_hash, start
from verify.checkpoint import Checkpoint, sign_checkpoint
from verify.cosignature import verify_cosignatures, verify_witness_response, witness_key
from verify.keys import SigningKey
from verify.merkle import EMPTY_ROOT, consistency_proof_in_memory, leaf_hash, root

ORIGIN = "log.example/rebuild"
LOG = SigningKey.generate(ORIGIN)
WKEY = SigningKey.generate("witness.example/w1")
LEAVES = [leaf_hash(b"entry %d" % i) for i in range(64)]
FORK = [leaf_hash(b"forked %d" % i) for i in range(64)]
REPO = Path(__file__).resolve().parent.parent


def checkpoint(n: int, leaves: list[bytes] = LEAVES, key: SigningKey = LOG) -> tuple[str, str]:
    cp = Checkpoint(key.name, n, root(leaves[:n]))
    return cp.body(), sign_checkpoint(cp, key)


def body(old: int, new: int, leaves: list[bytes] = LEAVES, key: SigningKey = LOG) -> bytes:
    proof = consistency_proof_in_memory(old, leaves[:new]) if old > 0 else []
    _, note = checkpoint(new, leaves, key)
    lines = [f"old {old}", *(base64.b64encode(h).decode() for h in proof)]
    return ("\n".join(lines) + "\n\n" + note).encode()


Scenario = Callable[[str, aiohttp.ClientSession], Awaitable[None]]


def run_witness(state_dir: Path, scenario: Scenario, clock: float = 1_700_000_000.0) -> None:
    async def main() -> None:
        state = WitnessState(state_dir)
        try:
            w = Witness(WKEY, [LOG.verifier_key()], state, clock=lambda: clock)
            running = await start(w, "127.0.0.1", 0)
            try:
                async with aiohttp.ClientSession() as session:
                    await scenario(running.url, session)
            finally:
                await running.stop()
        finally:
            state.close()

    asyncio.run(main())


async def post(session: aiohttp.ClientSession, url: str, data: bytes) -> tuple[int, str, str]:
    async with session.post(url + "/add-checkpoint", data=data) as r:
        # The raw header, so a charset parameter would show.
        return r.status, await r.text(), r.headers.get("Content-Type", "")


def test_first_checkpoint_is_cosigned_and_persisted(tmp_path: Path) -> None:
    async def scenario(url: str, s: aiohttp.ClientSession) -> None:
        status, text, _ = await post(s, url, body(0, 10))
        assert status == 200
        cp_body, _ = checkpoint(10)
        (cosig,) = verify_witness_response(cp_body, text, [witness_key(WKEY)], now=1_700_000_000)
        assert cosig.timestamp == 1_700_000_000
        async with s.get(f"{url}/{origin_hash(ORIGIN)}/checkpoint") as r:
            assert r.status == 200
            served = await r.text()
        now = 1_700_000_000  # the witness's clock in run_witness
        assert verify_cosignatures(served, [witness_key(WKEY)], now=now)[0].timestamp == now
        assert served.startswith(cp_body)

    run_witness(tmp_path, scenario)
    assert (tmp_path / "logs" / origin_hash(ORIGIN)).exists()


def test_status_codes_for_every_refusal(tmp_path: Path) -> None:
    other_log = SigningKey.generate("other.example/log")
    impostor = SigningKey.generate(ORIGIN)

    async def scenario(url: str, s: aiohttp.ClientSession) -> None:
        # 404: a log this witness does not know.
        assert (await post(s, url, body(0, 5, key=other_log)))[0] == 404
        # 403: our origin, signed by a key we do not trust for it.
        assert (await post(s, url, body(0, 5, key=impostor)))[0] == 403
        # 403: a signature line naming the trusted key whose signature is bad.
        good = body(0, 5).decode()
        at = good.rindex(" ") + 20  # inside the signature, past the 4-byte key ID
        tampered = good[:at] + ("B" if good[at] == "A" else "A") + good[at + 1 :]
        assert (await post(s, url, tampered.encode()))[0] == 403
        # 200 then 409 with our size, as text/x.tlog.size.
        assert (await post(s, url, body(0, 10)))[0] == 200
        status, text, ctype = await post(s, url, body(5, 12))
        assert (status, text, ctype) == (409, "10\n", "text/x.tlog.size")
        # 422: a consistency proof that does not verify.
        bad = body(10, 20).replace(
            b"old 10\n", b"old 10\n" + base64.b64encode(b"\x00" * 32) + b"\n"
        )
        assert (await post(s, url, bad))[0] == 422
        # 400: old size beyond the checkpoint.
        assert (await post(s, url, b"old 30\n\n" + checkpoint(20)[1].encode()))[0] == 400
        # 200: a proper extension.
        assert (await post(s, url, body(10, 20)))[0] == 200

    run_witness(tmp_path, scenario)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b"old 0\n",  # no checkpoint
        b"old 00\n\n" + checkpoint(3)[1].encode(),
        b"old -1\n\n" + checkpoint(3)[1].encode(),
        b"old 1 \n\n" + checkpoint(3)[1].encode(),
        b"new 0\n\n" + checkpoint(3)[1].encode(),
        b"old 0\nnot base64!\n\n" + checkpoint(3)[1].encode(),
        b"old 0\nAAAA\n\n" + checkpoint(3)[1].encode(),  # 3-byte hash
        b"old 1\n"
        + (base64.b64encode(b"\x01" * 32) + b"\n") * 64
        + b"\n"
        + checkpoint(3)[1].encode(),
        b"old 0\n\n" + checkpoint(3)[0].encode(),  # checkpoint without signatures
        b"old 0\n\n\xff\xfe",
        b"old 0\n\nlog.example/rebuild\n03\nAAAA\n\n\xe2\x80\x94 x AAAAAAAA\n",
        b"old 99999999999999999999\n\n" + checkpoint(3)[1].encode(),
    ],
)
def test_malformed_requests_get_400(tmp_path: Path, data: bytes) -> None:
    async def scenario(url: str, s: aiohttp.ClientSession) -> None:
        assert (await post(s, url, data))[0] == 400
        assert (await post(s, url, body(0, 3)))[0] == 200  # and the witness still works

    run_witness(tmp_path, scenario)


def test_replayed_old_checkpoints_are_refused(tmp_path: Path) -> None:
    async def scenario(url: str, s: aiohttp.ClientSession) -> None:
        first, second = body(0, 10), body(10, 20)
        assert (await post(s, url, first))[0] == 200
        assert (await post(s, url, second))[0] == 200
        # The exact earlier requests, replayed: the witness is at 20 now.
        assert (await post(s, url, first))[:2] == (409, "20\n")
        assert (await post(s, url, second))[:2] == (409, "20\n")
        # An old checkpoint claiming to follow the current size: rollback refused.
        assert (await post(s, url, b"old 20\n\n" + checkpoint(10)[1].encode()))[0] == 400

    run_witness(tmp_path, scenario)


def test_forks_are_refused_and_never_cosigned(tmp_path: Path) -> None:
    async def scenario(url: str, s: aiohttp.ClientSession) -> None:
        assert (await post(s, url, body(0, 20)))[0] == 200
        # Same size, different root.
        assert (await post(s, url, b"old 20\n\n" + checkpoint(20, FORK)[1].encode()))[0] == 422
        # A larger forked tree with its own (valid for the fork) proof.
        assert (await post(s, url, body(20, 30, FORK)))[0] == 422
        # The same checkpoint again is fine (idempotent), and size stays 20.
        assert (await post(s, url, b"old 20\n\n" + checkpoint(20)[1].encode()))[0] == 200
        assert (await post(s, url, body(0, 5)))[:2] == (409, "20\n")

    run_witness(tmp_path, scenario)


def test_old_zero_with_a_proof_and_bad_empty_roots_get_422(tmp_path: Path) -> None:
    async def scenario(url: str, s: aiohttp.ClientSession) -> None:
        proof_line = base64.b64encode(LEAVES[0]).decode()
        assert (
            await post(s, url, f"old 0\n{proof_line}\n\n".encode() + checkpoint(4)[1].encode())
        )[0] == 422
        bad_empty = sign_checkpoint(Checkpoint(ORIGIN, 0, LEAVES[0]), LOG)
        assert (await post(s, url, b"old 0\n\n" + bad_empty.encode()))[0] == 422
        good_empty = sign_checkpoint(Checkpoint(ORIGIN, 0, EMPTY_ROOT), LOG)
        assert (await post(s, url, b"old 0\n\n" + good_empty.encode()))[0] == 200
        assert (await post(s, url, body(0, 4)))[0] == 200

    run_witness(tmp_path, scenario)


def test_concurrent_add_checkpoint_race_has_exactly_one_winner(tmp_path: Path) -> None:
    async def scenario(url: str, s: aiohttp.ClientSession) -> None:
        assert (await post(s, url, body(0, 10)))[0] == 200
        results = await asyncio.gather(*(post(s, url, body(10, n)) for n in range(11, 41)))
        winners = [r for r in results if r[0] == 200]
        assert len(winners) == 1
        losers = {r[:2] for r in results if r[0] != 200}
        assert len(losers) == 1 and next(iter(losers))[0] == 409
        # The loser's answer names the winner's size, which is what is stored.
        won_size = int(next(iter(losers))[1])
        assert (await post(s, url, body(0, 1)))[:2] == (409, f"{won_size}\n")

    run_witness(tmp_path, scenario)


def test_state_survives_a_restart_and_never_rolls_back(tmp_path: Path) -> None:
    async def first(url: str, s: aiohttp.ClientSession) -> None:
        assert (await post(s, url, body(0, 30)))[0] == 200

    async def second(url: str, s: aiohttp.ClientSession) -> None:
        assert (await post(s, url, body(0, 10)))[:2] == (409, "30\n")
        assert (await post(s, url, body(30, 40)))[0] == 200

    run_witness(tmp_path, first)
    run_witness(tmp_path, second)


def test_damaged_state_is_an_error_not_a_reset_to_zero(tmp_path: Path) -> None:
    async def first(url: str, s: aiohttp.ClientSession) -> None:
        assert (await post(s, url, body(0, 30)))[0] == 200

    run_witness(tmp_path, first)
    (tmp_path / "logs" / origin_hash(ORIGIN)).write_bytes(b"truncated")

    async def second(url: str, s: aiohttp.ClientSession) -> None:
        assert (await post(s, url, body(0, 10)))[0] == 500

    run_witness(tmp_path, second)


def test_second_process_cannot_share_the_state_directory(tmp_path: Path) -> None:
    a = WitnessState(tmp_path)
    try:
        with pytest.raises(StorageError, match="in use"):
            WitnessState(tmp_path)
    finally:
        a.close()
    WitnessState(tmp_path).close()  # free again once the first is closed


def test_oversized_body_and_wrong_method_and_unknown_paths(tmp_path: Path) -> None:
    async def scenario(url: str, s: aiohttp.ClientSession) -> None:
        assert (await post(s, url, b"old 0\n" + b"A" * (65 * 1024)))[0] == 413
        async with s.get(url + "/add-checkpoint") as r:
            assert r.status == 405
        async with s.get(url + "/" + "0" * 64 + "/checkpoint") as r:
            assert r.status == 404
        async with s.get(f"{url}/{origin_hash(ORIGIN)}/checkpoint") as r:
            assert r.status == 404  # never cosigned yet
        async with s.get(url + "/../../etc/passwd") as r:
            assert r.status == 404

    run_witness(tmp_path, scenario)


def test_garbage_http_gets_400_and_the_server_keeps_serving(tmp_path: Path) -> None:
    async def scenario(url: str, s: aiohttp.ClientSession) -> None:
        host, port = url.removeprefix("http://").split(":")
        for junk in (
            b"\x00\xff\x13garbage\r\n\r\n",
            b"POST /add-checkpoint HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        ):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(junk)
            await writer.drain()
            reply = await reader.read(100)
            writer.close()
            await writer.wait_closed()
            assert reply.split(b" ", 2)[1] == b"400", reply
        assert (await post(s, url, body(0, 3)))[0] == 200

    run_witness(tmp_path, scenario)


# --- the CLI as a real process ------------------------------------------------


def _start_cli(args: list[str]) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rebuild", "witness", "serve", "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    buf = ""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        buf += line
        try:
            return proc, json.loads(buf)
        except json.JSONDecodeError:
            continue
    proc.kill()
    _, err = proc.communicate()
    raise AssertionError(f"witness did not start: {buf!r} {err!r}")


def _key_files(tmp_path: Path) -> tuple[Path, Path]:
    key = tmp_path / "witness.key"
    key.write_text(WKEY.encode() + "\n")
    key.chmod(0o600)
    pub = tmp_path / "log.pub"
    pub.write_text(LOG.verifier_key().encode() + "\n")
    return key, pub


def test_cli_serves_https_and_stops_cleanly(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    wkey, pub = _key_files(tmp_path)
    proc, doc = _start_cli(
        [
            "--key",
            str(wkey),
            "--state",
            str(tmp_path / "state"),
            "--listen",
            "127.0.0.1:0",
            "--log-key",
            str(pub),
            "--tls-cert",
            str(cert_file),
            "--tls-key",
            str(key_file),
        ]
    )
    try:
        assert doc["url"].startswith("https://127.0.0.1:")
        assert doc["witness_verifier_key"] == witness_key(WKEY).encode()
        assert doc["logs"] == [ORIGIN]
        client_ctx = ssl.create_default_context()
        ca.configure_trust(client_ctx)

        async def go() -> tuple[int, str]:
            async with (
                aiohttp.ClientSession() as s,
                s.post(doc["url"] + "/add-checkpoint", data=body(0, 7), ssl=client_ctx) as r,
            ):
                return r.status, await r.text()

        status, text = asyncio.run(go())
        assert status == 200
        verify_witness_response(checkpoint(7)[0], text, [witness_key(WKEY)], now=int(time.time()))
        # Plain HTTP to the TLS port gets no HTTP answer at all (a plain server
        # would say "HTTP/1.1 404"): the connection closes, at most after a TLS alert.
        host, port = doc["url"].removeprefix("https://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
            assert reply == b"" or reply.startswith(b"\x15\x03"), reply[:100]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_cli_refuses_a_state_directory_in_use(tmp_path: Path) -> None:
    wkey, pub = _key_files(tmp_path)
    args = [
        "--key",
        str(wkey),
        "--state",
        str(tmp_path / "state"),
        "--listen",
        "127.0.0.1:0",
        "--log-key",
        str(pub),
    ]
    proc, _ = _start_cli(args)
    try:
        second = subprocess.run(
            [sys.executable, "-m", "rebuild", "witness", "serve", "--json", *args],
            check=False,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=60,
        )
        assert second.returncode == 2
        assert json.loads(second.stdout)["error"]["kind"] == "StorageError"
        assert "in use" in second.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_cli_vkey_prints_the_cosignature_key(tmp_path: Path) -> None:
    wkey, _ = _key_files(tmp_path)
    r = subprocess.run(
        [sys.executable, "-m", "rebuild", "witness", "vkey", "--key", str(wkey), "--json"],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert r.returncode == 0
    assert json.loads(r.stdout)["witness_verifier_key"] == witness_key(WKEY).encode()


def test_cosigned_state_survives_sigkill_right_after_the_answer(tmp_path: Path) -> None:
    """200 is only sent after the state is on disk: kill -9 straight after
    the answer, restart, and the witness still refuses to go back."""
    wkey, pub = _key_files(tmp_path)
    args = ["--key", str(wkey), "--state", str(tmp_path / "state"), "--listen", "127.0.0.1:0"]
    args += ["--log-key", str(pub)]

    async def send(url: str, data: bytes) -> tuple[int, str]:
        async with aiohttp.ClientSession() as s:
            status, text, _ = await post(s, url, data)
            return status, text

    proc, doc = _start_cli(args)
    try:
        assert asyncio.run(send(doc["url"], body(0, 10)))[0] == 200
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    proc, doc = _start_cli(args)  # the directory lock died with the process
    try:
        assert asyncio.run(send(doc["url"], body(0, 5))) == (409, "10\n")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
