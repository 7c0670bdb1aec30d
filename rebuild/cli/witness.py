"""``rebuild witness``: run a C2SP tlog-witness, show its cosigning key."""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rebuild.cli._args import renamed
from rebuild.cli._limits import add_limit_args, limits_from_args
from rebuild.cli._output import Output
from rebuild.errors import UsageError

if TYPE_CHECKING:
    from rich.console import Console


def register(sub: Any) -> None:
    p = sub.add_parser(
        "witness",
        help="run a transparency-log witness (C2SP tlog-witness)",
        description="A witness cosigns a log's checkpoints only when each is consistent "
        "with the last one it saw, so a log cannot show different histories to different "
        "users. docs/log.md explains it.",
    )
    wsub = p.add_subparsers(dest="witness_command", metavar="ACTION", required=True)

    s = wsub.add_parser(
        "serve",
        help="serve POST /add-checkpoint and cosign consistent checkpoints",
        description=(
            "Cosign checkpoints of the given logs (C2SP tlog-witness) with cosignature/v1 "
            "(Ed25519, key type 0x04). State (the last cosigned checkpoint per log) is kept "
            "durably in --state, which one process at a time may use. Runs until SIGINT or "
            "SIGTERM. With --json, prints a JSON line once listening and the final envelope "
            "when it stops (docs/cli.md)."
        ),
    )
    s.add_argument("--key", required=True, type=Path, metavar="FILE", help="witness secret key")
    s.add_argument("--passphrase-env", metavar="VAR", help="passphrase environment variable")
    s.add_argument("--state", required=True, type=Path, metavar="DIR", help="state directory")
    s.add_argument("--listen", required=True, metavar="HOST:PORT", help="address (port 0: any)")
    s.add_argument(
        "--log-key",
        dest="log_keys",
        required=True,
        action="append",
        metavar="VKEY",
        help="verifier key of a log to witness (its name is the log's origin): a .pub file "
        "or literal (example.com/log+id+key); repeatable",
    )
    renamed(s, "--log-key", "--log")
    s.add_argument("--tls-cert", type=Path, metavar="FILE", help="serve HTTPS with this cert")
    s.add_argument("--tls-key", type=Path, metavar="FILE", help="private key for --tls-cert")
    s.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics (text format) on HOST:PORT/metrics",
    )
    s.add_argument("--json", action="store_true", help="print JSON lines (docs/cli.md)")
    add_limit_args(s)
    s.set_defaults(func=cmd_serve)

    k = wsub.add_parser(
        "vkey",
        help="print the witness's cosignature/v1 verifier key (for tlog-policy files)",
        description=(
            "Print the type 0x04 (cosignature/v1) verifier key of the witness key K: the key "
            "a tlog-policy file's 'witness' line names. It differs from K.pub, the plain "
            "Ed25519 (0x01) key of the same secret."
        ),
    )
    k.add_argument("--key", required=True, type=Path, metavar="FILE", help="witness secret key")
    k.add_argument("--passphrase-env", metavar="VAR", help="passphrase environment variable")
    k.add_argument("--json", action="store_true", help="print one JSON document")
    k.set_defaults(func=cmd_vkey)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_vkey(args: argparse.Namespace, out: Output) -> int:
    from rebuild.keystore import load_signing_key  # noqa: PLC0415
    from verify.cosignature import witness_key  # noqa: PLC0415

    key = load_signing_key(args.key, args.passphrase_env)
    vkey = witness_key(key).encode()
    out.result({"name": key.name, "witness_verifier_key": vkey}, lambda c: c.print(vkey))
    return 0


def cmd_serve(args: argparse.Namespace, out: Output) -> int:
    import asyncio  # noqa: PLC0415
    import logging  # noqa: PLC0415

    from rebuild.keystore import load_signing_key, load_verifier_key  # noqa: PLC0415
    from rebuild.listen import parse_listen  # noqa: PLC0415
    from rebuild.witness import Witness, WitnessState, serve_forever, tls_context  # noqa: PLC0415

    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    host, port = parse_listen(args.listen)
    limits = limits_from_args(args)
    key = load_signing_key(args.key, args.passphrase_env)
    logs = [load_verifier_key(spec) for spec in args.log_keys]
    for log_key in logs:
        if log_key.public_key == key.public_key:
            raise UsageError(
                f"--key is the key of log {log_key.name}: a witness must not cosign with "
                "the key the log signs with (use a key of its own)"
            )
    tls = tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    if tls is None and not _is_loopback(host):
        out.note(f"warning: serving plain HTTP on {host}; use --tls-cert/--tls-key off loopback")
    logging.basicConfig(level=logging.WARNING, format="witness: %(levelname)s %(message)s")
    state = WitnessState(args.state)
    try:
        witness = Witness(key, logs, state)
        vkey = witness.vkey.encode()
        metrics = None
        if args.metrics:
            from rebuild import metrics as m  # noqa: PLC0415 - only with --metrics

            registry = m.new_registry()
            witness.observer = m.WitnessMetrics(registry).answered
            metrics = m.serve(args.metrics, registry)
            out.note(f"metrics on {metrics.url}")

        def ready(url: str) -> None:
            doc = {
                "event": "listening",
                "url": url,
                "witness_verifier_key": vkey,
                "logs": sorted(witness.logs),
                "state": str(args.state),
            }

            def human(c: Console) -> None:
                c.print(f"witness {key.name} listening on {url}")
                c.print(f"verifier key: {vkey}")
                for origin in sorted(witness.logs):
                    c.print(f"witnessing: {origin}")

            out.event(doc, human)

        try:
            asyncio.run(serve_forever(witness, host, port, tls, ready, limits=limits))
        finally:
            if metrics is not None:
                metrics.close()
    finally:
        state.close()
    return 0
