"""``rebuild fetch``: download a release's artifacts, kept only with the statement's sha256.

Output and exit codes only; the work is in :mod:`rebuild.fetch`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rebuild.cli._output import Output

if TYPE_CHECKING:
    from rich.console import Console


def register(sub: Any) -> None:
    p = sub.add_parser(
        "fetch",
        help="download the artifacts a release statement names, checking their sha256",
        description=(
            "Download each artifact of the release statement STATEMENT (or only --artifact "
            "NAME) into --out, from --url (a file URL, or a directory URL ending in / that the "
            "artifact's name is appended to) and then from the statement's own "
            "downloadLocation. Bytes are kept only when their sha256 is the statement's; a "
            "file already there with the right digest is kept as is. With --maintainer-key the "
            "statement's signature is checked before any URL is contacted. Then: rebuild "
            "verify STATEMENT ARTIFACT (or just rebuild verify STATEMENT, which fetches "
            "itself). Exit 0 fetched, 1 the signature is not a trusted maintainer's, 2 not "
            "found or unreachable."
        ),
    )
    p.add_argument("statement", type=Path, metavar="STATEMENT", help="release statement file")
    p.add_argument(
        "--url",
        action="append",
        default=[],
        metavar="URL",
        help="where to download from, tried before the statement's downloadLocation "
        "(repeatable: mirrors)",
    )
    p.add_argument("--artifact", action="append", default=[], metavar="NAME",
                   help="only this artifact of the release (repeatable)")  # fmt: skip
    p.add_argument(
        "--out", type=Path, default=Path(), metavar="DIR", help="directory for the artifacts"
    )
    p.add_argument(
        "--maintainer-key",
        action="append",
        default=[],
        metavar="PUB",
        help="trusted maintainer verifier key: refuse a statement none of them signed (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_fetch, negative_verdict="untrusted")


def cmd_fetch(args: argparse.Namespace, out: Output) -> int:
    from rebuild.fetch import fetch_release  # noqa: PLC0415
    from rebuild.keystore import load_verifier_key  # noqa: PLC0415

    trusted = [load_verifier_key(k) for k in args.maintainer_key]
    fetched = fetch_release(
        args.statement, args.out, urls=args.url, names=args.artifact, trusted=trusted
    )
    doc = {
        "statement": str(args.statement),
        "signature_checked": bool(trusted),
        "artifacts": [f.to_json() for f in fetched],
    }

    def human(c: Console) -> None:
        for f in fetched:
            where = f"from {f.url}" if f.url else "(already there)"
            c.print(f"{f.path}  sha256 {f.sha256}  {where}", markup=False)
        if not trusted:
            c.print("the statement's signature was not checked (no --maintainer-key)")

    out.result(doc, human)
    return 0
