"""``rebuild bundle``: collect a release's envelopes and proofs into one file.

Output and exit codes only; the work is in :mod:`rebuild.bundle`. Exit 0 when
the bundle was written, 2 when it could not be made (network, no release in
the log, unreadable files). A bundle is not a verdict: ``rebuild gate`` judges it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rebuild.cli._args import add_ca_bundle
from rebuild.cli._output import Output
from rebuild.errors import UsageError

if TYPE_CHECKING:
    from rich.console import Console


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bundle",
        help="collect a release's envelopes and log proofs into one file for rebuild gate",
        description=(
            "From a log (--log URL): fetch its published checkpoint once, find the entries "
            "whose in-toto subject is ARTIFACT's sha256 (the release statement and every "
            "rebuild attestation), and compute each one's inclusion proof from the log's "
            "tiles against that one checkpoint. --since-size N adds the consistency proof "
            "from tree size N (the size an updater accepted before). With --policy, only "
            "envelopes signed by the package's maintainers and rebuilders are kept. "
            "From files (--from-files): --release ENVELOPE PROOF and --attestation ENVELOPE "
            "PROOF pairs, the proofs all in one tree. Writes rebuild-bundle/v1 JSON to --out "
            "(default ARTIFACT.bundle.json), atomically. Exit 0 written, 2 error."
        ),
    )
    p.add_argument("--artifact", required=True, type=Path, metavar="FILE", help="the artifact")
    p.add_argument("--log", metavar="URL", help="the log's tlog-tiles prefix")
    p.add_argument("--package", metavar="NAME", help="only a release of package NAME")
    p.add_argument(
        "--policy",
        type=Path,
        metavar="P",
        help="rebuild-policy/v1 file: keep only envelopes its keys for the package signed",
    )
    p.add_argument(
        "--since-size",
        type=int,
        metavar="N",
        help="add the consistency proof from tree size N to the bundle's checkpoint",
    )
    add_ca_bundle(p, "log", "an https:// log", old="--ca-bundle")
    p.add_argument("--timeout", type=float, default=90.0, metavar="S", help="request timeout")
    p.add_argument(
        "--from-files",
        action="store_true",
        help="build from envelope and proof files instead of a log",
    )
    p.add_argument(
        "--release",
        nargs=2,
        type=Path,
        metavar=("ENVELOPE", "PROOF"),
        help="(--from-files) the release envelope and its tlog-proof",
    )
    p.add_argument(
        "--attestation",
        nargs=2,
        type=Path,
        action="append",
        default=[],
        metavar=("ENVELOPE", "PROOF"),
        help="(--from-files) an attestation envelope and its tlog-proof; repeatable",
    )
    p.add_argument(
        "--out", type=Path, metavar="B", help="bundle file (default ARTIFACT.bundle.json)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_bundle)


def _check_args(args: argparse.Namespace) -> None:
    if args.from_files:
        if args.log or args.since_size is not None or args.policy or args.package:
            raise UsageError("--from-files takes --release/--attestation, not --log options")
        if args.release is None:
            raise UsageError("--from-files needs --release ENVELOPE PROOF")
    else:
        if not args.log:
            raise UsageError("give --log URL (or --from-files)")
        if args.release or args.attestation:
            raise UsageError("--release and --attestation go with --from-files")
    if args.since_size is not None and args.since_size < 0:
        raise UsageError("--since-size must not be negative")
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")


def cmd_bundle(args: argparse.Namespace, out: Output) -> int:
    from rebuild.bundle import bundle_from_files, collect_from_log  # noqa: PLC0415
    from rebuild.errors import InputError  # noqa: PLC0415
    from rebuild.fsio import atomic_write  # noqa: PLC0415
    from rebuild.gate import load_policy  # noqa: PLC0415
    from rebuild.log.client import LogClient  # noqa: PLC0415
    from rebuild.release import sha256_file  # noqa: PLC0415

    _check_args(args)
    digest = sha256_file(args.artifact)
    target = args.out or args.artifact.with_name(args.artifact.name + ".bundle.json")
    report: dict[str, Any]
    if args.from_files:
        bundle = bundle_from_files(
            tuple(args.release),
            [tuple(a) for a in args.attestation],
            artifact_sha256=digest,
        )
        cp = bundle.checkpoint_body()
        report = {
            "attestations": len(bundle.attestations),
            "checkpoint": {"origin": cp.origin, "size": cp.size},
        }
    else:
        trust = None
        if args.policy is not None:
            trust = load_policy(args.policy)
            if args.package is not None and trust.package(args.package) is None:
                raise InputError(f"{args.policy}: package {args.package!r} is not in the policy")
        with LogClient(args.log, args.log_ca_bundle, args.timeout) as client:
            collected = collect_from_log(
                client, digest, package=args.package, since_size=args.since_size, trust=trust
            )
        bundle = collected.bundle
        report = collected.report()
    data = bundle.encode()
    atomic_write(target, data)
    doc = {"out": str(target), "bytes": len(data), "sha256": digest, **report}

    def human(c: Console) -> None:
        cp = doc["checkpoint"]
        head = f"bundle for {doc['package']} {doc['version']}" if "package" in doc else "bundle"
        c.print(f"{head} (sha256 {digest})", markup=False)
        if "release_index" in doc:
            c.print(f"  release       log index {doc['release_index']}", markup=False)
            for a in doc["attestations"]:
                who = ", ".join(a["signers"]) or "(no keyid)"
                c.print(
                    f"  attestation   log index {a['index']} {who} {a['verdict']}", markup=False
                )
        else:
            c.print(f"  attestations  {doc['attestations']}", markup=False)
        c.print(f"  checkpoint    {cp['origin']} size {cp['size']}", markup=False)
        for size in doc.get("consistency_from", []):
            c.print(f"  consistency   from size {size}", markup=False)
        for line in doc.get("skipped", []):
            c.print(f"  skipped       {line}", markup=False)
        c.print(f"  wrote         {target} ({len(data)} bytes)", markup=False)

    out.result(doc, human)
    return 0
