"""``rebuild log``: run the audit log, add entries, read it, get and check proofs, monitor.

``serve`` runs the C2SP tlog-tiles log server; ``add``, ``prove``, ``get``,
``find``, ``status`` and ``follow`` are its HTTP clients; ``verify-proof`` is
fully offline. Output and exit codes only: the work is in :mod:`rebuild.log`
and :mod:`verify`.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rebuild.cli._args import add_ca_bundle
from rebuild.cli._limits import add_limit_args, limits_from_args
from rebuild.cli._output import Output
from rebuild.errors import InputError, TransportError, UsageError
from rebuild.listen import parse_listen
from verify.parsing import parse_decimal

if TYPE_CHECKING:
    from rich.console import Console

    from rebuild.log.client import LogClient
    from rebuild.log.monitor import CheckpointVerifier, FollowResult
    from verify.checkpoint import Checkpoint
    from verify.keys import VerifierKey
    from verify.tlog_policy import Policy

MAX_POLICY = 256 * 1024
MAX_PROOF = 2 << 20
MAX_FIND = 1000  # entries `log find` reads and describes at most
MAX_WAIT = 24 * 3600.0
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "log",
        help="run the audit log and talk to it",
        description="Run the append-only audit log and use it from the command line: add "
        "entries, read and find them, get and verify their proofs, monitor it. "
        "docs/log.md walks through all of it.",
    )
    lsub = p.add_subparsers(dest="log_command", metavar="ACTION", required=True)
    _serve_parser(lsub)
    _add_parser(lsub)
    _prove_parser(lsub)
    _verify_proof_parser(lsub)
    _follow_parser(lsub)
    _get_parser(lsub)
    _find_parser(lsub)
    _status_parser(lsub)


def _serve_parser(lsub: Any) -> None:
    s = lsub.add_parser(
        "serve",
        help="run a C2SP tlog-tiles log server",
        description=(
            "Serve the log in directory D over HTTP(S): POST /add, GET /proof/<index>, "
            "GET /lookup/sha256/<hex>, GET /lookup/leaf/<hex>, GET /status and the "
            "tlog-tiles read API (/checkpoint, /tile/...). Entries are acknowledged only once "
            "durable. With --witnesses, each checkpoint is published only once the policy's "
            "quorum cosigned."
        ),
    )
    s.add_argument("--dir", required=True, type=Path, metavar="D", help="log directory")
    s.add_argument("--key", required=True, type=Path, metavar="K", help="log secret key file")
    s.add_argument("--listen", required=True, metavar="HOST:PORT", help="address to listen on")
    s.add_argument("--origin", help="checkpoint origin (default: the key's name)")
    s.add_argument(
        "--witnesses",
        type=Path,
        metavar="POLICY",
        help="tlog-policy naming the witnesses (with URLs) and their quorum",
    )
    s.add_argument("--tls-cert", type=Path, metavar="C", help="serve HTTPS with this certificate")
    s.add_argument("--tls-key", type=Path, metavar="K", help="private key for --tls-cert")
    add_ca_bundle(s, "witness", "https:// witnesses", old="--ca-bundle")
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
        "--witness-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds to wait for each witness's answer",
    )
    s.add_argument(
        "--passphrase-env",
        metavar="VAR",
        help="take K's passphrase from VAR (default: REBUILD_PASSPHRASE, else a prompt)",
    )
    s.add_argument(
        "--recosign-interval",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="with --witnesses: once the published checkpoint's newest cosignature is this "
        "old and no entry was added, ask the witnesses to cosign the unchanged checkpoint "
        "again and republish it, so updaters that refuse stale checkpoints keep accepting "
        "an idle log (default 3600; 0 disables)",
    )
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
    add_limit_args(s)
    s.set_defaults(func=cmd_serve)


def _add_parser(lsub: Any) -> None:
    a = lsub.add_parser(
        "add",
        help="add a DSSE envelope to the log",
        description=(
            "Add FILE (a DSSE envelope, at most 64 KiB) and print its index. With --wait, "
            "wait until a published (with witnesses: cosigned) checkpoint covers it and print "
            "its tlog-proof instead, so 'log add --wait FILE > P' writes a proof file; the "
            "index then goes to stderr. --out P writes the proof to P (and implies --wait)."
        ),
    )
    _client_args(a)
    a.add_argument("file", type=Path, metavar="FILE", help="the entry (a DSSE envelope)")
    a.add_argument("--wait", action="store_true", help="wait for the entry's tlog-proof")
    a.add_argument(
        "--wait-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="with --wait: give up (exit 2, the entry stays in the log) after S seconds",
    )
    a.add_argument("--out", type=Path, metavar="P", help="write the tlog-proof to P")
    a.add_argument("--json", action="store_true", help="print one JSON document")
    a.set_defaults(func=cmd_add)


def _prove_parser(lsub: Any) -> None:
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
    pr.add_argument("file", type=Path, metavar="FILE", help="the entry (a DSSE envelope)")
    pr.add_argument("--out", type=Path, metavar="P", help="proof file (default: stdout)")
    pr.add_argument("--json", action="store_true", help="print one JSON document")
    pr.set_defaults(func=cmd_prove)


def _verify_proof_parser(lsub: Any) -> None:
    v = lsub.add_parser(
        "verify-proof",
        help="verify a tlog-proof offline against a tlog-policy",
        description="Exit 0 when PROOF proves FILE is in a log the policy trusts, "
        "cosigned by its witness quorum; 1 when it does not; 2 when unreadable. Uses no "
        "network.",
    )
    v.add_argument("--policy", required=True, type=Path, metavar="P", help="tlog-policy file")
    v.add_argument("file", type=Path, metavar="FILE", help="the entry (a DSSE envelope)")
    v.add_argument("proof", type=Path, metavar="PROOF", help="its tlog-proof@v1 file")
    v.add_argument("--json", action="store_true", help="print one JSON document")
    v.set_defaults(func=cmd_verify_proof, negative_verdict="rejected")


def _follow_parser(lsub: Any) -> None:
    f = lsub.add_parser(
        "follow",
        help="monitor a log: verify each checkpoint is consistent with the last one seen",
        description=(
            "Each round, verify the log's checkpoint (its key, with --policy its witness "
            "quorum) and prove it consistent with the last one accepted, from the tiles. "
            "Reports what changed (the first checkpoint, growth, a stale copy, the log "
            "becoming unreachable or reachable again), not every unchanged round. Exit 1 "
            "(and keep evidence in the state directory) when the log forks; stop with "
            "Ctrl-C or SIGTERM (exit 0). With --json: one JSON line per change."
        ),
    )
    _client_args(f)
    f.add_argument("--state", required=True, type=Path, metavar="D", help="monitor state dir")
    _trust_args(f, required=True)
    f.add_argument("--once", action="store_true", help="check once and exit")
    f.add_argument(
        "--interval", type=float, default=10.0, metavar="S", help="seconds between rounds"
    )
    f.add_argument(
        "--json",
        action="store_true",
        help="JSON lines, one per change; with --once one document (docs/cli.md)",
    )
    f.set_defaults(func=cmd_follow, negative_verdict="fork")


def _get_parser(lsub: Any) -> None:
    g = lsub.add_parser(
        "get",
        help="print the entry at INDEX",
        description=(
            "Read entry INDEX through the tlog-tiles API, check it hashes into the tree of the "
            "log's checkpoint, and describe it (kind, package, version, artifacts, verdict, "
            "signers). With --log-key or --policy the checkpoint's signatures are verified "
            "too; without, it is only as good as the connection to the log. --out F writes "
            "the entry's exact bytes."
        ),
    )
    _client_args(g)
    g.add_argument("index", type=int, metavar="INDEX", help="the entry's index (from 0)")
    _trust_args(g, required=False)
    _trusted_key_arg(g)
    g.add_argument("--out", type=Path, metavar="F", help="write the entry's bytes to F")
    g.add_argument("--json", action="store_true", help="print one JSON document")
    g.set_defaults(func=cmd_get)


def _find_parser(lsub: Any) -> None:
    fd = lsub.add_parser(
        "find",
        help="list the release statements and attestations for an artifact or a package",
        description=(
            "Ask the log which entries name an artifact digest (--sha256) or a package "
            "(--package, optionally --version), read each through the tiles, checked against "
            "the checkpoint, and list it: a maintainer's release statement or a rebuilder's "
            "attestation, with its signers and verdict. Signers are verified only against "
            "--trusted-key keys; other key IDs are what the entry claims."
        ),
    )
    _client_args(fd)
    what = fd.add_mutually_exclusive_group(required=True)
    what.add_argument("--sha256", metavar="HEX", help="an artifact's sha256 (64 hex digits)")
    what.add_argument("--package", metavar="NAME", help="a package name, as its recipe says")
    fd.add_argument("--version", metavar="V", help="with --package: only this version")
    _trust_args(fd, required=False)
    _trusted_key_arg(fd)
    fd.add_argument(
        "--limit",
        type=int,
        default=100,
        metavar="N",
        help=f"read at most N entries, the newest (1..{MAX_FIND})",
    )
    fd.add_argument("--json", action="store_true", help="print one JSON document")
    fd.set_defaults(func=cmd_find)


def _status_parser(lsub: Any) -> None:
    st = lsub.add_parser(
        "status",
        help="committed vs published size, checkpoint age, witnesses, pending work",
        description=(
            "Ask the log server how it is doing: the size it committed and the size its "
            "published checkpoint covers (the difference waits for witnesses), how old the "
            "checkpoint is, which witnesses cosigned it, and which failed and why. Exit 0 "
            "when the log answers (even unhealthy: read 'healthy'), 2 when it cannot be reached."
        ),
    )
    _client_args(st)
    st.add_argument("--json", action="store_true", help="print one JSON document")
    st.set_defaults(func=cmd_status)

    k = lsub.add_parser(
        "fsck",
        help="check a log directory's tiles and checkpoints against its signatures",
        description=(
            "Read-only (safe beside a running server): every entry bundle and hash tile must "
            "hash up to the signed root, every checkpoint ever signed, cosigned or published "
            "must verify under the log's key and be a prefix of the committed tree. Exit 0 "
            "when all is intact, 1 when damage is found, 2 when D is not a log directory."
        ),
    )
    k.add_argument("--dir", required=True, type=Path, metavar="D", help="log directory")
    k.add_argument("--json", action="store_true", help="print one JSON document")
    k.set_defaults(func=cmd_fsck)


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log", required=True, metavar="URL", help="the log's URL (tlog-tiles prefix)")
    add_ca_bundle(p, "log", "an https:// log", old="--ca-bundle")
    p.add_argument(
        "--timeout", type=float, default=90.0, metavar="S", help="seconds per HTTP request"
    )


def _trust_args(p: argparse.ArgumentParser, *, required: bool) -> None:
    trust = p.add_mutually_exclusive_group(required=required)
    trust.add_argument(
        "--policy", type=Path, metavar="P", help="tlog-policy: the log's key and witness quorum"
    )
    trust.add_argument(
        "--log-key", metavar="VKEY", help="the log's verifier key (a .pub file or name+id+key)"
    )


def _trusted_key_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trusted-key",
        action="append",
        default=[],
        metavar="PUB",
        help="verifier key (maintainer or rebuilder) whose signatures to check (repeatable)",
    )


def _read_policy(path: Path) -> Policy:
    from rebuild.fsio import read_text_bounded  # noqa: PLC0415
    from verify.errors import VerifyError  # noqa: PLC0415
    from verify.tlog_policy import parse_policy  # noqa: PLC0415

    text = read_text_bounded(path, MAX_POLICY)
    try:
        return parse_policy(text)
    except VerifyError as e:
        hint = None
        if "cosignature/v1 (0x04)" in str(e):
            hint = (
                "a witness line needs the witness's cosignature/v1 key, not its .pub file: "
                "print it with rebuild witness vkey --key WITNESS_KEY"
            )
        raise InputError(f"{path}: {e}", hint=hint) from None


def _verifier(args: argparse.Namespace) -> CheckpointVerifier | None:
    from rebuild.keystore import load_verifier_key  # noqa: PLC0415
    from rebuild.log.monitor import CheckpointVerifier  # noqa: PLC0415

    if args.policy is not None:
        return CheckpointVerifier(policy=_read_policy(args.policy))
    if args.log_key is not None:
        return CheckpointVerifier(log_key=load_verifier_key(args.log_key))
    return None


# -- serve ----------------------------------------------------------------------------------


def _bad_workers(_: str) -> UsageError:
    return UsageError("--workers must be 'auto' or a number in 0..64")


def cmd_serve(args: argparse.Namespace, out: Output) -> int:
    import asyncio  # noqa: PLC0415
    import logging  # noqa: PLC0415

    from rebuild.keystore import load_signing_key  # noqa: PLC0415
    from rebuild.log.serve import default_workers, serve  # noqa: PLC0415
    from rebuild.log.server import Sequencer, ServerOptions, install_uvloop  # noqa: PLC0415
    from rebuild.log.store import LogStore  # noqa: PLC0415
    from rebuild.log.urls import client_ssl_context, server_ssl_context  # noqa: PLC0415
    from rebuild.log.witnessing import WitnessPool  # noqa: PLC0415

    host, port = parse_listen(args.listen)
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    if args.batch_ms < 0 or args.batch_ms > 10_000:
        raise UsageError("--batch-ms must be in 0..10000")
    if args.workers == "auto":
        workers = default_workers()
    else:
        workers = parse_decimal(args.workers, "--workers", _bad_workers, maximum=64)
    if not 0 <= args.recosign_interval <= 7 * 86400:
        raise UsageError("--recosign-interval must be in 0..604800 seconds")
    limits = limits_from_args(args)
    key = load_signing_key(args.key, args.passphrase_env)
    origin = args.origin or key.name
    tls = server_ssl_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    tls_files = (args.tls_cert, args.tls_key) if args.tls_cert else None
    policy = _read_policy(args.witnesses) if args.witnesses else None
    for w in policy.witnesses if policy is not None else ():
        if w.key.public_key == key.public_key:
            raise UsageError(
                f"{args.witnesses}: witness {w.name} has this log's own key: a witness that "
                "is the log proves nothing (give the witness a key of its own)"
            )
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
                pool = WitnessPool(
                    policy, client_ssl_context(args.witness_ca_bundle), args.witness_timeout
                )
            options = ServerOptions(
                batch_ms=args.batch_ms, recosign_interval=args.recosign_interval, limits=limits
            )
            sequencer = Sequencer(store, pool, options)
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


# -- add and prove --------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> LogClient:
    from rebuild.log.client import LogClient  # noqa: PLC0415

    return LogClient(args.log, args.log_ca_bundle, args.timeout)


def cmd_add(args: argparse.Namespace, out: Output) -> int:
    from rebuild.fsio import atomic_write, read_bounded  # noqa: PLC0415
    from rebuild.log.entry import MAX_ENTRY_SIZE  # noqa: PLC0415
    from verify import merkle  # noqa: PLC0415

    wait = args.wait or args.out is not None
    if not 0 < args.wait_timeout <= MAX_WAIT:
        raise UsageError(f"--wait-timeout must be in (0, {MAX_WAIT:g}] seconds")
    entry = read_bounded(args.file, MAX_ENTRY_SIZE)
    leaf = merkle.leaf_hash(entry).hex()
    with _client(args) as client:
        doc = client.add(entry, wait=False)
        if doc["leaf_hash"] != leaf:
            raise TransportError(
                f"{args.log}: the log reports a leaf hash that is not this entry's"
            )
        index: int = doc["index"]
        result: dict[str, Any] = {"index": index, "leaf_hash": leaf, "log": client.url}
        if not wait:
            out.result(result, lambda c: c.print(str(index)))
            return 0
        proof = _wait_for_proof(client, index, args.wait_timeout, out)
    if proof is None:
        result["proof"] = None
        out.result(result)
        out.fail(
            f"entry {index} is in the log, but no published checkpoint covered it within "
            f"{args.wait_timeout:g} s",
            kind="ProofTimeout",
            hint=f"the witnesses may be down (rebuild log status --log {args.log}); fetch the "
            f"proof later: rebuild log prove --log {args.log} {args.file}",
        )
        return 2
    if args.out is not None:
        atomic_write(args.out, proof)
    result.update(proof=proof.decode(), out=str(args.out) if args.out else None)

    def human(c: Console) -> None:
        # stdout holds the proof and nothing else: 'log add --wait F > P' is a proof file.
        if args.out is None:
            sys.stdout.write(proof.decode())
            sys.stdout.flush()

    if args.out is not None:
        out.note(f"entry {index}: proof written to {args.out}")
    out.result(result, human)
    return 0


def _wait_for_proof(client: LogClient, index: int, timeout: float, out: Output) -> bytes | None:
    """Poll for entry ``index``'s proof until ``timeout``; say that (and how long) it waits."""
    from rebuild.log.client import NotFoundError  # noqa: PLC0415
    from verify.tlogproof import parse as parse_proof  # noqa: PLC0415

    start = time.monotonic()
    delay = 0.05
    told = 0
    out.note(
        f"entry {index} added; waiting up to {timeout:g} s for a published checkpoint "
        "that covers it"
    )
    while True:
        try:
            proof = client.proof(index)
        except NotFoundError:
            proof = None
        if proof is not None:
            if parse_proof(proof).index != index:
                raise TransportError(f"{client.url}: the proof is not for entry {index}")
            return proof
        waited = time.monotonic() - start
        if waited >= timeout:
            return None
        # Then a line every 10 s: a wait for witnesses can be long.
        if int(waited) // 10 != told:
            told = int(waited) // 10
            out.note(f"still waiting for entry {index}'s proof ({waited:.0f} s)")
        time.sleep(min(delay, max(0.0, timeout - waited)))
        delay = min(delay * 2, 1.0)


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
            raise InputError(
                f"{args.file}: not in the log at {args.log}",
                hint=f"add it: rebuild log add --log {args.log} --wait {args.file}",
            )
        proof = client.proof(index)
    # The proof is checked by whoever uses it; here we only refuse garbage.
    parsed = parse_proof(proof)
    if parsed.index != index:
        raise InputError(f"{args.log}: proof is for index {parsed.index}, not {index}")
    if args.out is not None:
        atomic_write(args.out, proof)
    doc = {"index": index, "leaf_hash": leaf.hex(), "out": str(args.out) if args.out else None}
    if args.out is None:
        doc["proof"] = proof.decode()

    def human(c: Console) -> None:
        if args.out is None:
            sys.stdout.write(proof.decode())
            sys.stdout.flush()
        else:
            c.print(f"index {index}: proof written to {args.out}", markup=False)

    out.result(doc, human)
    return 0


def cmd_verify_proof(args: argparse.Namespace, out: Output) -> int:
    from rebuild.fsio import read_bounded  # noqa: PLC0415
    from verify.errors import VerifyError  # noqa: PLC0415
    from verify.tlogproof import verify_tlog_proof  # noqa: PLC0415

    policy = _read_policy(args.policy)
    entry = read_bounded(args.file)
    proof = read_bounded(args.proof, MAX_PROOF)
    try:
        v = verify_tlog_proof(proof, entry, policy, now=int(time.time()) + 300)
    except VerifyError as e:
        # Same type (so the same exit status), with the proof file named.
        raise type(e)(f"{args.proof}: {e}") from None
    doc = {
        "verdict": "verified",
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
            f"verified: entry {v.index} is in {v.checkpoint.origin} at size "
            f"{v.checkpoint.size}, cosigned by {', '.join(v.quorum.witnesses) or 'no witness'} "
            f"(quorum {v.quorum.quorum})",
            markup=False,
        ),
    )
    return 0


# -- follow ---------------------------------------------------------------------------------


def cmd_follow(args: argparse.Namespace, out: Output) -> int:
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    from rebuild.log.monitor import follow_once  # noqa: PLC0415

    verifier = _verifier(args)
    assert verifier is not None  # the option group is required
    if not 0 < args.interval <= 86400:
        raise UsageError("--interval must be in (0, 86400] seconds")

    with _client(args) as client:
        if args.once:
            result = follow_once(client, verifier, args.state)
            out.result(
                {"verdict": "consistent", **result.as_json()},
                lambda c: c.print(_follow_line(result), markup=False),
            )
            return 0
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        out.note(f"following {client.url} every {args.interval:g} s; stop with Ctrl-C")
        last: FollowResult | None = None
        down: str | None = None
        rounds = 0
        while not stop.is_set():
            rounds += 1
            try:
                result = follow_once(client, verifier, args.state)
            except TransportError as e:
                if down is None:  # report the change, not every failed round
                    down = str(e)
                    _event(out, {"event": "unreachable", "error": down}, f"unreachable: {down}")
            else:
                if down is not None:
                    down = None
                    _event(
                        out,
                        {"event": "reachable", "size": result.size},
                        f"reachable again: size {result.size}",
                    )
                if last is None or result.status != "unchanged" or result.size != last.size:
                    doc = {"event": result.status, **result.as_json()}
                    _event(out, doc, _follow_line(result))
                last = result
            stop.wait(args.interval)
    out.result(
        {
            "verdict": "consistent",
            "rounds": rounds,
            "size": last.size if last else None,
            "checkpoint": last.checkpoint if last else None,
        }
    )
    return 0


def _event(out: Output, doc: dict[str, Any], line: str) -> None:
    out.event(doc, lambda c: c.print(line, markup=False))


def _follow_line(r: FollowResult) -> str:
    if r.status == "initial":
        return f"initial: size {r.size} (first checkpoint seen; tiles match its root)"
    if r.status == "grew":
        return f"grew: size {r.previous_size} -> {r.size} (consistent)"
    if r.status == "stale":
        return f"stale: the log served size {r.size}, older than {r.previous_size} (consistent)"
    return f"unchanged: size {r.size} (as when last seen)"


# -- get, find, status ----------------------------------------------------------------------


def _checkpoint(client: LogClient, verifier: CheckpointVerifier | None) -> tuple[Checkpoint, bool]:
    """The log's checkpoint, verified when a trust anchor was given."""
    from verify.checkpoint import parse as parse_checkpoint  # noqa: PLC0415
    from verify.errors import VerifyError  # noqa: PLC0415
    from verify.note import split_note  # noqa: PLC0415

    note = client.checkpoint()
    if verifier is not None:
        return verifier.verify(note), True
    try:
        return parse_checkpoint(split_note(note.decode("utf-8"))[0]), False
    except (UnicodeDecodeError, VerifyError) as e:
        raise TransportError(f"{client.url}/checkpoint: unusable checkpoint: {e}") from None


def _trusted_keys(specs: list[str]) -> list[VerifierKey]:
    from rebuild.keystore import load_verifier_key  # noqa: PLC0415

    return [load_verifier_key(s) for s in specs]


def cmd_get(args: argparse.Namespace, out: Output) -> int:
    from rebuild.fsio import atomic_write  # noqa: PLC0415
    from rebuild.log.describe import describe_entry, one_line  # noqa: PLC0415
    from rebuild.log.tree import TreeReader  # noqa: PLC0415

    if args.index < 0:
        raise UsageError("INDEX must be 0 or more")
    trusted = _trusted_keys(args.trusted_key)
    verifier = _verifier(args)
    with _client(args) as client:
        cp, verified = _checkpoint(client, verifier)
        if args.index >= cp.size:
            raise InputError(
                f"{client.url}: no entry {args.index}: the published checkpoint covers "
                f"{cp.size} entries"
            )
        data = TreeReader(client, cp).entry(args.index)
    if args.out is not None:
        atomic_write(args.out, data)
    doc = {
        "index": args.index,
        "log": args.log,
        "checkpoint": {"origin": cp.origin, "size": cp.size, "verified": verified},
        "entry": describe_entry(data, trusted),
        "out": str(args.out) if args.out else None,
    }

    def human(c: Console) -> None:
        c.print(f"entry {args.index}: {one_line(doc['entry'])}", markup=False)
        _print_entry(c, doc["entry"])
        c.print(_tree_note(cp, verified), markup=False)
        if args.out is not None:
            c.print(f"wrote {args.out} ({len(data)} bytes)", markup=False)

    out.result(doc, human)
    return 0


def _tree_note(cp: Checkpoint, verified: bool) -> str:
    how = "verified" if verified else "NOT verified (give --log-key or --policy)"
    return f"in the tree of {cp.origin} at size {cp.size}; checkpoint signature {how}"


def _print_entry(c: Console, e: dict[str, Any]) -> None:
    for s in e.get("subjects", []):
        c.print(f"  artifact  {s['name']}  sha256 {s['sha256']}", markup=False)
    if "source" in e:
        src = e["source"]
        text = " ".join(str(v) for v in src.values())
        c.print(f"  source    {text}", markup=False)
    if e.get("verdict"):
        c.print(f"  verdict   {e['verdict']}", markup=False)
        for cause in e.get("causes", [])[:5]:
            c.print(f"    - {cause}", markup=False)
    c.print(f"  leaf hash {e['leaf_hash']}", markup=False)


def cmd_find(args: argparse.Namespace, out: Output) -> int:
    from rebuild.log.describe import describe_entry, one_line  # noqa: PLC0415
    from rebuild.log.tree import TreeReader  # noqa: PLC0415

    if not 1 <= args.limit <= MAX_FIND:
        raise UsageError(f"--limit must be in 1..{MAX_FIND}")
    if args.version and not args.package:
        raise UsageError("--version goes with --package")
    if args.sha256 is not None and not _SHA256_HEX.fullmatch(args.sha256):
        raise UsageError("--sha256 must be 64 lowercase hex digits")
    trusted = _trusted_keys(args.trusted_key)
    verifier = _verifier(args)
    with _client(args) as client:
        if args.sha256 is not None:
            indexes = client.lookup_subject(bytes.fromhex(args.sha256))
        else:
            indexes = client.lookup_package(args.package)
        cp, verified = _checkpoint(client, verifier)
        # Entries sequenced after the published checkpoint are not in its tree yet.
        pending = [i for i in indexes if i >= cp.size]
        shown = [i for i in indexes if i < cp.size][-args.limit :]
        reader = TreeReader(client, cp) if shown else None
        entries = []
        for i in shown:
            assert reader is not None
            entries.append({"index": i, **describe_entry(reader.entry(i), trusted)})
    if args.package:
        # The index is keyed by name; the entries themselves say which version they are.
        entries = [e for e in entries if args.version is None or e.get("version") == args.version]
    doc = {
        "query": {"sha256": args.sha256, "package": args.package, "version": args.version},
        "log": args.log,
        "checkpoint": {"origin": cp.origin, "size": cp.size, "verified": verified},
        "found": len(indexes),
        "entries": entries,
        "not_yet_published": pending,
    }

    def human(c: Console) -> None:
        if not entries:
            c.print("no entries found", markup=False)
        for e in entries:
            c.print(f"{e['index']:>6}  {one_line(e)}", markup=False)
        if len(shown) < len(indexes) - len(pending):
            c.print(f"(the newest {len(shown)} of {len(indexes)} shown; --limit N)", markup=False)
        if pending:
            c.print(f"{len(pending)} more not yet in a published checkpoint", markup=False)
        c.print(_tree_note(cp, verified), markup=False)

    out.result(doc, human)
    return 0


def cmd_status(args: argparse.Namespace, out: Output) -> int:
    with _client(args) as client:
        doc = client.status()

    def human(c: Console) -> None:
        healthy = doc.get("healthy")
        c.print(f"log {doc['origin']} at {args.log}: {'healthy' if healthy else 'UNHEALTHY'}")
        c.print(f"  committed {doc['committed_size']} entries, published {doc['published_size']}")
        age = doc.get("checkpoint_age_seconds")
        c.print(f"  checkpoint age {_age(age)}", markup=False)
        pending = doc.get("pending", {})
        c.print(
            f"  pending: {pending.get('queued_entries', 0)} entries queued, "
            f"{pending.get('awaiting_witnesses', 0)} awaiting witnesses",
            markup=False,
        )
        for w in doc.get("witnesses", []):
            error = str(w.get("last_error") or "not asked yet")
            error = error.removeprefix(f"witness {w['name']} at {w.get('url')}/add-checkpoint: ")
            state = "ok" if w.get("ok") else f"FAILING: {error}"
            size = w.get("cosigned_size")
            cosigned = "nothing cosigned yet" if size is None else f"cosigned size {size}"
            c.print(f"  witness {w['name']} ({w.get('url')}): {state}; {cosigned}", markup=False)
        said = {w.get("last_error") for w in doc.get("witnesses", [])}
        for problem in doc.get("problems", []):
            if problem not in said:
                c.print(f"  problem: {problem}", markup=False)

    out.result(doc, human)
    return 0


def _age(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "unknown"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def cmd_fsck(args: argparse.Namespace, out: Output) -> int:
    from rebuild.log.fsck import fsck  # noqa: PLC0415

    report = fsck(args.dir)
    doc = report.as_json()
    del doc["ok"]  # the envelope's own ok and verdict say it

    def human(c: Console) -> None:
        if report.ok:
            c.print(
                f"ok: {args.dir} (size {report.size}): {report.entries_checked} entries, "
                f"{report.tiles_checked} hash tiles, {report.checkpoints_checked} checkpoint "
                "sizes verified",
                markup=False,
            )
            return
        c.print(
            f"damaged: {args.dir} (size {report.size}): {len(report.problems)} problem(s)",
            markup=False,
        )
        for p in report.problems:
            c.print(f"  {p}", markup=False)

    out.result({"verdict": "intact" if report.ok else "damaged", **doc}, human)
    return 0 if report.ok else 1
