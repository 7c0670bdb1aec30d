"""``rebuild key``: generate Ed25519 keys named the C2SP signed-note way."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rebuild.cli._output import Output

if TYPE_CHECKING:
    from rich.console import Console


def register(sub: Any) -> None:
    p = sub.add_parser(
        "key",
        help="generate and inspect keys",
        description="Ed25519 keys named the C2SP signed-note way (name+keyid+key): every "
        "key in the system (maintainer, rebuilder, log, witness) is made here.",
    )
    ksub = p.add_subparsers(dest="key_command", metavar="ACTION", required=True)

    g = ksub.add_parser(
        "generate",
        help="generate an Ed25519 key pair",
        description=(
            "Write FILE (the secret key, mode 0600) and FILE.pub (the C2SP verifier key "
            "name+keyid+base64). Never overwrites. Without --passphrase/--passphrase-env "
            "the secret key is stored unencrypted."
        ),
    )
    g.add_argument("name", metavar="NAME", help="key name (no '+' or spaces), e.g. alice.example")
    g.add_argument("--out", required=True, type=Path, metavar="FILE", help="secret key file")
    enc = g.add_mutually_exclusive_group()
    enc.add_argument(
        "--passphrase", action="store_true", help="prompt for a passphrase (Argon2id + secretbox)"
    )
    enc.add_argument(
        "--passphrase-env", metavar="VAR", help="take the passphrase from environment variable VAR"
    )
    g.add_argument("--json", action="store_true", help="print one JSON document")
    g.set_defaults(func=cmd_generate)

    s = ksub.add_parser(
        "show",
        help="print the verifier key of a secret key file",
        description=(
            "Print FILE's verifier key (name+keyid+base64), the public half to publish or "
            "pin; the same text rebuild key generate wrote to FILE.pub."
        ),
    )
    s.add_argument("file", type=Path, metavar="FILE", help="secret key file")
    s.add_argument("--passphrase-env", metavar="VAR", help="passphrase environment variable")
    s.add_argument("--json", action="store_true", help="print one JSON document")
    s.set_defaults(func=cmd_show)


def cmd_generate(args: argparse.Namespace, out: Output) -> int:
    from rebuild.keystore import generate_key_files, passphrase_from_env, prompt_new_passphrase  # noqa: PLC0415

    passphrase: bytes | None = None
    if args.passphrase_env:
        passphrase = passphrase_from_env(args.passphrase_env)
    elif args.passphrase:
        passphrase = prompt_new_passphrase()
    key, pub_path = generate_key_files(args.name, args.out, passphrase)
    vkey = key.verifier_key().encode()
    doc = {
        "name": key.name,
        "verifier_key": vkey,
        "secret_key_file": str(args.out),
        "public_key_file": str(pub_path),
        "encrypted": passphrase is not None,
    }

    def human(c: Console) -> None:
        c.print(f"secret key: {args.out} (mode 0600{', encrypted' if passphrase else ''})")
        c.print(f"public key: {pub_path}")
        c.print(vkey)

    out.result(doc, human)
    return 0


def cmd_show(args: argparse.Namespace, out: Output) -> int:
    from rebuild.keystore import load_signing_key  # noqa: PLC0415

    key = load_signing_key(args.file, args.passphrase_env)
    vkey = key.verifier_key().encode()
    out.result({"name": key.name, "verifier_key": vkey}, lambda c: c.print(vkey))
    return 0
