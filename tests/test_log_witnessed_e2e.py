"""End to end: two witnesses and a log on 127.0.0.1, all from the CLI, quorum 2.

Concurrent clients add entries with ``rebuild log add --wait --json``; every proof
they get back must verify offline with ``rebuild log verify-proof`` against a
tlog-policy that demands both witnesses, and the published ``checkpoint``
must carry both cosignatures. A monitor (``rebuild log follow``) then sees
the log grow consistently.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from rebuild.keystore import load_signing_key
from tests.logutil import PYTHON, Server, cli_env, envelope, make_key, run_cli, start_log
from verify.cosignature import verify_cosignatures, witness_key
from verify.tlogproof import parse as parse_proof

CLIENTS = 4
PER_CLIENT = 3


@pytest.mark.slow
def test_entries_from_concurrent_clients_verify_against_witness_cosigned_checkpoints(
    tmp_path: Path,
) -> None:
    log_key = make_key(tmp_path, "log.e2e.test")
    wkeys = [make_key(tmp_path, f"w{i}.e2e.test") for i in (1, 2)]
    witnesses: list[Server] = []
    servers: list[Server] = []
    try:
        for i, wk in enumerate(wkeys, start=1):
            witnesses.append(
                Server(
                    [
                        "witness",
                        "serve",
                        "--key",
                        str(wk),
                        "--state",
                        str(tmp_path / f"ws{i}"),
                        "--listen",
                        "127.0.0.1:0",
                        "--log-key",
                        f"{log_key}.pub",
                    ],
                    tmp_path / f"witness{i}.log",
                )
            )
        wvkeys = [witness_key(load_signing_key(wk)) for wk in wkeys]
        log_vkey = (tmp_path / "log.e2e.test.pub").read_text().strip()
        policy = tmp_path / "policy"
        policy.write_text(
            f"log {log_vkey}\n"
            f"witness W1 {wvkeys[0]} {witnesses[0].url}\n"
            f"witness W2 {wvkeys[1]} {witnesses[1].url}\n"
            "group both 2 W1 W2\n"
            "quorum both\n"
        )
        log = start_log(
            str(tmp_path / "log"), str(log_key), tmp_path / "log.log", "--witnesses", str(policy)
        )
        servers.append(log)

        files: list[Path] = []
        for c in range(CLIENTS):
            for j in range(PER_CLIENT):
                f = tmp_path / f"entry-{c}-{j}.json"
                f.write_bytes(envelope(f"client{c}-entry{j}"))
                files.append(f)
        # several concurrent clients, each adding its entries one after another
        procs = [
            subprocess.Popen(
                [
                    "sh",
                    "-c",
                    " && ".join(
                        f"'{PYTHON}' -m rebuild log add --log {log.url} --wait --json '{f}'"
                        f" > '{f}.out'"
                        for f in files[c * PER_CLIENT : (c + 1) * PER_CLIENT]
                    ),
                ],
                env=cli_env(),
            )
            for c in range(CLIENTS)
        ]
        for p in procs:
            assert p.wait(timeout=120) == 0
        indexes = set()
        for f in files:
            doc = json.loads(Path(f"{f}.out").read_text())
            indexes.add(doc["index"])
            proof_file = Path(f"{f}.proof")
            proof_file.write_text(doc["proof"])
            assert parse_proof(doc["proof"]).index == doc["index"]
            r = run_cli(
                "log", "verify-proof", "--policy", str(policy), str(f), str(proof_file), "--json"
            )
            assert r.returncode == 0, r.stdout + r.stderr
            assert sorted(json.loads(r.stdout)["witnesses"]) == ["W1", "W2"]
        assert indexes == set(range(CLIENTS * PER_CLIENT))

        # A proof for another entry's bytes fails: exit 1, a negative verdict.
        r = run_cli(
            "log", "verify-proof", "--policy", str(policy), str(files[0]), f"{files[1]}.proof"
        )
        assert r.returncode == 1, r.stdout + r.stderr

        # The published checkpoint itself carries both cosignatures.
        r = run_cli(
            "log",
            "follow",
            "--log",
            log.url,
            "--state",
            str(tmp_path / "mon"),
            "--policy",
            str(policy),
            "--once",
            "--json",
        )
        assert r.returncode == 0, r.stderr
        state = json.loads(r.stdout)
        assert state["status"] == "initial" and state["size"] == CLIENTS * PER_CLIENT
        cosigs = verify_cosignatures(state["checkpoint"], wvkeys, now=int(time.time()))
        assert {c.key for c in cosigs} == set(wvkeys)

        # `log prove` finds the entry by its leaf hash and writes a proof that verifies.
        out = tmp_path / "proved.tlog-proof"
        r = run_cli("log", "prove", "--log", log.url, str(files[5]), "--out", str(out))
        assert r.returncode == 0, r.stderr
        r = run_cli("log", "verify-proof", "--policy", str(policy), str(files[5]), str(out))
        assert r.returncode == 0, r.stderr
    finally:
        for s in servers + witnesses:
            s.stop()
