"""``rebuild gate``: accept or reject an artifact, offline, from a bundle and a policy.

Output and exit codes only; the decision is :func:`verify.gate.decide`, the
files and the state directory are :mod:`rebuild.gate`, the one network use
(a consistency proof from the log's tiles, only with a tile source and only
when that proof is the gate's sole objection) is
:mod:`rebuild.updater.logtiles`. Exit 0 accepted (the
state records the checkpoint and the version), 1 rejected (every failed step
listed; the state unchanged, fork evidence kept), 2 when the policy, the
state or an input file cannot be used.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rebuild.cli._output import Output

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rich.console import Console

    from rebuild.updater.logtiles import CatchUp
    from verify.bundle import ConsistencyProof
    from verify.gate import ConsistencyNeed, Decision

_STATUS_STYLE = {"passed": "green", "failed": "bold red", "skipped": "yellow"}


def register(sub: Any) -> None:
    p = sub.add_parser(
        "gate",
        help="decide offline whether ARTIFACT may be installed (rebuilder quorum, log, witnesses)",
        description=(
            "Check ARTIFACT against a rebuild-bundle/v1 (rebuild bundle) under a "
            "rebuild-policy/v1, in seven steps: 1 the bundle and the release statement for "
            "these bytes; 2 a maintainer of the package signed it; 3 at least k distinct "
            "trusted rebuilders attest an accepted verdict for this sha256, source and recipe; "
            "4 every envelope used is in the log; 5 the checkpoint is signed by the policy's "
            "log, cosigned by its witness quorum and fresh; 6 it is consistent with the last "
            "checkpoint accepted in --state (no rollback, no fork); 7 the version is newer "
            "than the installed one. On acceptance the state records the checkpoint and the "
            "version. Uses the network only when the bundle lacks the consistency proof from "
            "the size in --state and a tile source is given (--log, or the policy's logs): "
            "then the proof is computed from the log's tiles and the gate asked once more. "
            "Exit 0 accepted, 1 rejected, 2 error."
        ),
    )
    p.add_argument("artifact", type=Path, metavar="ARTIFACT", help="the file to install")
    p.add_argument("--bundle", required=True, type=Path, metavar="B", help="rebuild-bundle/v1")
    p.add_argument("--policy", required=True, type=Path, metavar="P", help="rebuild-policy/v1")
    p.add_argument(
        "--state", required=True, type=Path, metavar="D", help="the updater's state directory"
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="reject when a trusted rebuilder attests mismatch or failed for these bytes",
    )
    p.add_argument(
        "--allow-downgrade",
        action="store_true",
        help="accept a version not newer than the installed one (recorded in the state)",
    )
    p.add_argument(
        "--log",
        action="append",
        metavar="URL",
        help="where the log's tiles can be read (the log's tlog-tiles URL, or a mirror's "
        "log/), to compute a consistency proof the bundle lacks; repeatable, tried in order "
        "(default: the policy's logs; none: offline)",
    )
    p.add_argument(
        "--log-ca-bundle",
        type=Path,
        metavar="F",
        help="CA bundle (PEM) for https:// tile sources (default: the system's)",
    )
    p.add_argument(
        "--insecure-loopback",
        action="store_true",
        help="allow plain http:// to loopback tile sources (tests, demos); never other hosts",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_gate)


def cmd_gate(args: argparse.Namespace, out: Output) -> int:
    from rebuild.gate import load_policy, open_gate, read_artifact, read_bundle  # noqa: PLC0415

    policy = load_policy(args.policy)
    sources = tuple(args.log) if args.log else policy.logs
    artifact = read_artifact(args.artifact, policy)
    bundle = read_bundle(args.bundle)
    proofs: tuple[ConsistencyProof, ...] = ()
    catch_up: CatchUp | None = None
    while True:
        with open_gate(
            artifact,
            bundle,
            policy,
            args.state,
            strict=args.strict,
            allow_downgrade=args.allow_downgrade,
            consistency=proofs,
        ) as run:
            decision = run.decision
            need = decision.only_needs_consistency
            if decision.accepted:
                run.commit_installed()
            evidence = run.evidence
            committed = run.committed
        if need is None or not sources or catch_up is not None:
            break
        # The only objection is a consistency proof the bundle lacks: compute
        # it from the log's tiles (no lock held meanwhile) and ask once more.
        catch_up = _catch_up(args, sources, need)
        if catch_up.proof is None:
            break
        proofs = (catch_up.proof,)
    code = 0 if decision.accepted else 1
    doc = decision.to_dict()
    doc["verdict"] = doc["decision"]  # the envelope's name for the answer (docs/cli.md)
    doc["state"] = {"dir": str(args.state), "committed": committed}
    doc["evidence"] = None if evidence is None else str(evidence)
    doc["consistency"] = None if catch_up is None else catch_up.as_json()
    doc["exit_code"] = code
    out.result(doc, lambda c: _render(c, decision, args.artifact, evidence, catch_up))
    return code


def _catch_up(args: argparse.Namespace, sources: Sequence[str], need: ConsistencyNeed) -> CatchUp:
    from rebuild.updater.fetch import FetchOptions  # noqa: PLC0415
    from rebuild.updater.logtiles import fetch_consistency_blocking  # noqa: PLC0415

    options = FetchOptions(ca_bundle=args.log_ca_bundle, insecure_loopback=args.insecure_loopback)
    return fetch_consistency_blocking(sources, need, options)


def _render(
    c: Console, d: Decision, artifact: Path, evidence: Path | None, catch_up: CatchUp | None
) -> None:
    from rich.table import Table  # noqa: PLC0415

    t = Table(title=f"rebuild gate {artifact.name}", show_header=True)
    t.add_column("step", justify="right")
    t.add_column("check")
    t.add_column("result")
    t.add_column("detail", overflow="fold")
    for s in d.steps:
        detail = "\n".join([s.summary, *(f"note: {n}" for n in s.notes)]).strip()
        t.add_row(str(s.step), s.name, f"[{_STATUS_STYLE[s.status]}]{s.status}[/]", detail)
    c.print(t)
    what = f"{d.package} {d.version}" if d.package else artifact.name
    if catch_up is not None:
        c.print(catch_up.summary(), markup=False)
        for src in catch_up.sources:
            if src.error:
                c.print(f"  tile source {src.url}: {src.status}: {src.error}", markup=False)
    if d.accepted:
        c.print(f"[bold green]accepted[/]: {what} (sha256 {d.artifact_sha256})", highlight=False)
        return
    c.print(f"[bold red]rejected[/]: {what} (sha256 {d.artifact_sha256})", highlight=False)
    for f in d.failures:
        c.print(f"  step {f.step} {f.code}: {f.reason}", markup=False)
    if evidence is not None:
        c.print(f"  fork evidence kept in {evidence}", markup=False)
