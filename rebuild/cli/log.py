"""``rebuild log``: run the audit log, add entries, get and check proofs, monitor.

``serve`` runs the C2SP tlog-tiles log server; ``add``, ``prove`` and
``follow`` are its HTTP clients; ``verify-proof`` is fully offline. Output
and exit codes only: the work is in :mod:`rebuild.log` and :mod:`verify`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rebuild.cli._output import Output
from rebuild.errors import InputError, TransportError, UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from rebuild.log.client import LogClient
    from rebuild.log.monitor import FollowResult
    from verify.tlog_policy import Policy

MAX_POLICY = 256 * 1024
MAX_PROOF = 2 << 20


def register(sub: Any) -> None:
    p = sub.add_parser("log", help="run the audit log and talk to it")
    lsub = p.add_subparsers(dest="log_command", metavar="ACTION", required=True)

    s = lsub.add_parser(
        "serve",
        help="run a C2SP tlog-tiles log server",
        description=(
            "Serve the log in directory D over HTTP(S): POST /add, GET /proof/<index>, "
            "GET /lookup/sha256/<hex>, GET /lookup/leaf/<hex>, and the tlog-tiles read API "
            "(/checkpoint, /tile/...). Entries are acknowledged only once durable. With "
            "--witnesses, each checkpoint is published only once the policy's quorum cosigned."
        ),
    )
    s.add_argument("--dir", required=True, type=Path, metavar="D", help="log directory")
    s.add_argument("--key", required=True, type=Path, metavar="K", help="log secret key file")
    s.add_argument("--listen", required=True, metavar="HOST:PORT", help="address to listen on")
    s.add_argument("--origin", help="checkpoint origin (default: the key's name)")
    s.add_argument("--witnesses", type=Path, metavar="POLICY", help="tlog-policy of witnesses")
    s.add_argument("--tls-cert", type=Path, metavar="C", help="serve HTTPS with this certificate")
    s.add_argument("--tls-key", type=Path, metavar="K", help="private key for --tls-cert")
    s.add_argument("--ca-bundle", type=Path, metavar="F", help="CA bundle to verify witnesses")
    s.add_argument(
        "--batch-ms",
        type=float,
        default=0.0,
        metavar="N",
        help="wait N ms to gather a batch (default 0: group commit, a batch is whatever "
        "queued while the previous one was being made durable)",
    )
    s.add_argument(
        "--workers",
        default="auto",
        metavar="N",
        help="HTTP front-end processes feeding this process's sequencer; 0 serves HTTP in "
        "one process (default auto: one per core, 0 on a single core)",
    )
    s.add_argument(
        "--witness-timeout", type=float, default=10.0, metavar="S", help="per-request timeout"
    )
    s.add_argument("--passphrase-env", metavar="VAR", help="passphrase environment variable")
    s.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics (text format) on HOST:PORT/metrics",
    )
    s.add_argument(
        "--json",
        action="store_true",
        help="print a JSON line once listening and the final envelope when stopped (docs/cli.md)",
    )
    s.set_defaults(func=cmd_serve)

    a = lsub.add_parser(
        "add",
        help="add a DSSE envelope to the log",
        description=(
            "Add FILE (a DSSE envelope, at most 64 KiB) and print its index. With --wait or "
            "--json, wait until a (cosigned) checkpoint covers it and include the tlog-proof."
        ),
    )
    _client_args(a)
    a.add_argument("file", type=Path, metavar="FILE")
    a.add_argument("--wait", action="store_true", help="wait for the entry's tlog-proof")
    a.add_argument("--json", action="store_true", help="print one JSON document (implies --wait)")
    a.set_defaults(func=cmd_add)

    pr = lsub.add_parser(
        "prove",
        help="write the tlog-proof of an entry already in the log",
        description=(
            "Find FILE (a DSSE envelope) in the log by its leaf hash and write its C2SP "
            "tlog-proof@v1 against the log's published (cosigned) checkpoint: the offline "
            "proof rebuild log verify-proof checks. Exit 2 when FILE is not in the log."
        ),
    )
    _client_args(pr)
    pr.add_argument("file", type=Path, metavar="FILE", help="the entry (DSSE envelope)")
    pr.add_argument("--out", type=Path, metavar="P", help="proof file (default: stdout)")
    pr.add_argument("--json", action="store_true", help="print one JSON document")
    pr.set_defaults(func=cmd_prove)

    v = lsub.add_parser(
        "verify-proof",
        help="verify a tlog-proof offline against a tlog-policy",
        description="Exit 0 when PROOF proves FILE is in a log the policy trusts, "
        "cosigned by its witness quorum; 1 when it does not; 2 when unreadable.",
    )
    v.add_argument("--policy", required=True, type=Path, metavar="P", help="tlog-policy file")
    v.add_argument("file", type=Path, metavar="FILE")
    v.add_argument("proof", type=Path, metavar="PROOF")
    v.add_argument("--json", action="store_true", help="print one JSON document")
    v.set_defaults(func=cmd_verify_proof, negative_verdict="rejected")

    f = lsub.add_parser(
        "follow",
        help="monitor a log: verify each checkpoint is consistent with the last one seen",
        description="Exit 1 (and keep evidence in the state directory) when the log forks.",
    )
    _client_args(f)
    f.add_argument("--state", required=True, type=Path, metavar="D", help="monitor state dir")
    trust = f.add_mutually_exclusive_group(required=True)
    trust.add_argument("--policy", type=Path, metavar="P", help="tlog-policy (log + quorum)")
    trust.add_argument("--log-key", metavar="VKEY", help="log verifier key (file or literal)")
    f.add_argument("--once", action="store_true", help="check once and exit")
    f.add_argument("--interval", type=float, default=10.0, metavar="S", help="seconds per round")
    f.add_argument("--json", action="store_true", help="print one JSON document (with --once)")
    f.set_defaults(func=cmd_follow, negative_verdict="fork")


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log", required=True, metavar="URL", help="the log's tlog-tiles prefix")
    p.add_argument("--ca-bundle", type=Path, metavar="F", help="CA bundle for HTTPS")
    p.add_argument("--timeout", type=float, default=90.0, metavar="S", help="request timeout")


def _read_policy(path: Path) -> Policy:
    from rebuild.fsio import read_text_bounded  # noqa: PLC0415
    from verify.errors import VerifyError  # noqa: PLC0415
    from verify.tlog_policy import parse_policy  # noqa: PLC0415

    text = read_text_bounded(path, MAX_POLICY)
    try:
        return parse_policy(text)
    except VerifyError as e:
        raise InputError(f"{path}: {e}") from None


def _listen(spec: str) -> tuple[str, int]:
    host, sep, port = spec.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--listen {spec!r} must be HOST:PORT")
    return host.strip("[]"), int(port)


def cmd_serve(args: argparse.Namespace, out: Output) -> int:
    import asyncio  # noqa: PLC0415
    import logging  # noqa: PLC0415

    from rebuild.keystore import load_signing_key  # noqa: PLC0415
    from rebuild.log.serve import default_workers, serve  # noqa: PLC0415
    from rebuild.log.server import Sequencer, ServerOptions, install_uvloop  # noqa: PLC0415
    from rebuild.log.store import LogStore  # noqa: PLC0415
    from rebuild.log.urls import client_ssl_context, server_ssl_context  # noqa: PLC0415
    from rebuild.log.witnessing import WitnessPool  # noqa: PLC0415

    host, port = _listen(args.listen)
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    if args.batch_ms < 0 or args.batch_ms > 10_000:
        raise UsageError("--batch-ms must be in 0..10000")
    if args.workers == "auto":
        workers = default_workers()
    elif args.workers.isdigit() and int(args.workers) <= 64:
        workers = int(args.workers)
    else:
        raise UsageError("--workers must be 'auto' or a number in 0..64")
    key = load_signing_key(args.key, args.passphrase_env)
    origin = args.origin or key.name
    tls = server_ssl_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    tls_files = (args.tls_cert, args.tls_key) if args.tls_cert else None
    policy = _read_policy(args.witnesses) if args.witnesses else None
    logging.basicConfig(
        level=logging.DEBUG if os.environ.get("REBUILD_LOG_DEBUG") else logging.INFO,
        stream=sys.stderr,
        format="rebuild log serve: %(message)s",
    )
    install_uvloop()
    store = LogStore.open(args.dir, key, origin)
    try:

        async def main() -> None:
            pool = None
            if policy is not None:
                pool = WitnessPool(policy, client_ssl_context(args.ca_bundle), args.witness_timeout)
            sequencer = Sequencer(store, pool, ServerOptions(batch_ms=args.batch_ms))
            if args.metrics:
                sequencer.observer = _log_metrics(args.metrics, sequencer, policy, out)
            shape = f"{workers} front-end processes" if workers else "one process"
            await serve(
                sequencer,
                host,
                port,
                tls=tls_files,
                ssl_context=tls,
                workers=workers,
                ready=lambda url: _listening(out, origin, store.size, url, shape),
            )

        asyncio.run(main())
    finally:
        store.close()
    return 0


def _listening(out: Output, origin: str, size: int, url: str, shape: str) -> None:
    out.note(f"log {origin} (size {size}) listening on {url} ({shape})")
    out.event({"event": "listening", "url": url, "origin": origin, "size": size})


def _log_metrics(spec: str, sequencer: Any, policy: Policy | None, out: Output) -> Any:
    from rebuild import metrics as m  # noqa: PLC0415 - only with --metrics

    registry = m.new_registry()
    names = [w.name for w in policy.witnesses] if policy is not None else []
    observer = m.LogMetrics(
        registry,
        sequencer.tile_dir,
        lambda: (sequencer.store.size, sequencer.published_size),
        names,
    )
    server = m.serve(spec, registry)  # a daemon thread: it ends with the process
    out.note(f"metrics on {server.url}")
    return observer


def _client(args: argparse.Namespace) -> LogClient:
    from rebuild.log.client import LogClient  # noqa: PLC0415

    return LogClient(args.log, args.ca_bundle, args.timeout)


def cmd_add(args: argparse.Namespace, out: Output) -> int:
    from rebuild.fsio import read_bounded  # noqa: PLC0415
    from rebuild.log.entry import MAX_ENTRY_SIZE  # noqa: PLC0415
    from verify import merkle  # noqa: PLC0415

    entry = read_bounded(args.file, MAX_ENTRY_SIZE)
    wait = args.wait or args.json
    with _client(args) as client:
        doc = client.add(entry, wait=wait)
    result = {
        "index": doc["index"],
        "leaf_hash": doc["leaf_hash"],
        "proof": doc.get("proof"),
    }
    if doc["leaf_hash"] != merkle.leaf_hash(entry).hex():
        raise TransportError(f"{args.log}: the log reports a leaf hash that is not this entry's")
    missing = wait and not isinstance(result["proof"], str)
    if missing:
        result["error"] = str(doc.get("error", "no proof returned"))

    def human(c: Console) -> None:
        c.print(str(result["index"]))
        if isinstance(result["proof"], str):
            c.print(result["proof"], end="")

    out.result(result, human)
    if missing:
        out.note(f"entry {result['index']} added, but {result['error']}")
        return 2
    return 0


def cmd_prove(args: argparse.Namespace, out: Output) -> int:
    from rebuild.fsio import atomic_write, read_bounded  # noqa: PLC0415
    from rebuild.log.entry import MAX_ENTRY_SIZE  # noqa: PLC0415
    from verify import merkle  # noqa: PLC0415
    from verify.tlogproof import parse as parse_proof  # noqa: PLC0415

    entry = read_bounded(args.file, MAX_ENTRY_SIZE)
    leaf = merkle.leaf_hash(entry)
    with _client(args) as client:
        index = client.lookup_leaf(leaf)
        if index is None:
            raise InputError(f"{args.file}: not in the log at {args.log}")
        proof = client.proof(index)
    # The proof is checked by whoever uses it; here we only refuse garbage.
    parsed = parse_proof(proof)
    if parsed.index != index:
        raise InputError(f"{args.log}: proof is for index {parsed.index}, not {index}")
    if args.out is not None:
        atomic_write(args.out, proof)
    doc = {"index": index, "leaf_hash": leaf.hex(), "out": str(args.out) if args.out else None}
    if args.out is None and not args.json:
        sys.stdout.write(proof.decode())
        return 0
    if args.out is None:
        doc["proof"] = proof.decode()
    out.result(doc, lambda c: c.print(f"index {index}: proof written to {args.out}"))
    return 0


def cmd_verify_proof(args: argparse.Namespace, out: Output) -> int:
    from rebuild.fsio import read_bounded  # noqa: PLC0415
    from verify.tlogproof import verify_tlog_proof  # noqa: PLC0415

    policy = _read_policy(args.policy)
    entry = read_bounded(args.file)
    proof = read_bounded(args.proof, MAX_PROOF)
    v = verify_tlog_proof(proof, entry, policy, now=int(time.time()) + 300)
    doc = {
        "verdict": "verified",
        "verified": True,
        "origin": v.checkpoint.origin,
        "size": v.checkpoint.size,
        "index": v.index,
        "leaf_hash": v.leaf_hash.hex(),
        "log_key": v.log_key.encode(),
        "witnesses": list(v.quorum.witnesses),
        "quorum": v.quorum.quorum,
    }
    out.result(
        doc,
        lambda c: c.print(
            f"OK: entry {v.index} is in {v.checkpoint.origin} at size {v.checkpoint.size}, "
            f"cosigned by {', '.join(v.quorum.witnesses) or 'no witness'} "
            f"(quorum {v.quorum.quorum})"
        ),
    )
    return 0


def _report_once(out: Output, r: FollowResult) -> None:
    doc = {"verdict": "consistent", **r.as_json()}
    out.result(doc, lambda c: c.print(f"{r.status}: size {r.size}"))


def cmd_follow(args: argparse.Namespace, out: Output) -> int:
    from rebuild.keystore import load_verifier_key  # noqa: PLC0415
    from rebuild.log.monitor import CheckpointVerifier, follow_once  # noqa: PLC0415

    if args.policy is not None:
        verifier = CheckpointVerifier(policy=_read_policy(args.policy))
    else:
        verifier = CheckpointVerifier(log_key=load_verifier_key(args.log_key))
    if args.interval <= 0:
        raise UsageError("--interval must be positive")

    def report(r: FollowResult) -> None:
        prev = "" if r.previous_size is None else f" (was {r.previous_size})"
        out.note(f"{r.status}: size {r.size}{prev}")

    with _client(args) as client:
        while True:
            result = follow_once(client, verifier, args.state)
            if args.once:
                _report_once(out, result)
                return 0
            report(result)
            time.sleep(args.interval)
