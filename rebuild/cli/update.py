"""``rebuild update``: fetch the newest release from mirrors, gate it, install it atomically.

Exit 0: installed, or already up to date. Exit 1: no mirror delivered a
release that passed the gate, or the new release failed its health check and
was rolled back (the report says what each mirror did). Exit 2: usage, the
install directory is locked by another updater, or a local I/O failure.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rebuild.cli._args import add_ca_bundle
from rebuild.cli._output import Output

if TYPE_CHECKING:
    from rich.console import Console

    from rebuild.updater.update import UpdateReport


def add_fetch_args(p: argparse.ArgumentParser) -> None:
    """Options shared by ``rebuild update`` and ``rebuild updater daemon``."""
    p.add_argument("--policy", required=True, type=Path, metavar="P", help="rebuild-policy file")
    p.add_argument(
        "--mirror",
        action="append",
        metavar="URL",
        help="a mirror's base URL, tried in the order given; repeatable "
        "(default: the policy's mirrors)",
    )
    p.add_argument(
        "--log",
        action="append",
        metavar="URL",
        help="where the log's tiles can be read (the log's tlog-tiles URL, or a copy of its "
        "tiles), to compute a consistency proof the bundle lacks (an updater that skipped "
        "a release); repeatable, tried in order before each mirror's log/ "
        "(default: the policy's logs)",
    )
    p.add_argument("--install-dir", required=True, type=Path, metavar="D", help="install directory")
    p.add_argument(
        "--state", type=Path, metavar="S", help="the gate's state directory (default: D/state)"
    )
    add_ca_bundle(p, "mirror", "https:// mirrors and tile sources", old="--ca-bundle")
    p.add_argument(
        "--insecure-loopback",
        action="store_true",
        help="allow plain http:// to loopback mirrors and tile sources (tests, demos); "
        "never other hosts",
    )
    p.add_argument("--connect-timeout", type=float, default=10.0, metavar="S", help="per request")
    p.add_argument(
        "--read-timeout", type=float, default=30.0, metavar="S", help="longest wait for bytes"
    )
    p.add_argument(
        "--deadline", type=float, default=600.0, metavar="S", help="for the whole update"
    )


def register(sub: Any) -> None:
    p = sub.add_parser(
        "update",
        help="install the newest release that passes the gate, from untrusted mirrors",
        description=(
            "Read every mirror's version list, then try the newest version on each mirror "
            "that lists it: download artifact and bundle over HTTPS (bounded by the policy's "
            "byte caps and the timeouts), run the gate, and install into D/current atomically "
            "(stage, fsync, switch a symlink, health check, roll back on failure). When the "
            "gate's only objection is a consistency proof the bundle lacks (this updater "
            "skipped the release the bundle was made against), the proof is computed from the "
            "log's tiles (--log, else the policy's logs; then each mirror's log/) and the gate "
            "asked once more. A mirror "
            "that fails, times out, serves tampered bytes or is refused by the gate is "
            "skipped and reported. Exit 0 installed or up to date, 1 nothing passed the gate "
            "(or the health check failed and the old release is back), 2 usage/locked/I/O."
        ),
    )
    p.add_argument("--package", required=True, metavar="NAME", help="package (as in the policy)")
    p.add_argument(
        "--version",
        dest="target_version",
        metavar="V",
        help="install exactly version V (default: the newest any mirror lists); the gate "
        "still refuses a downgrade",
    )
    add_fetch_args(p)
    p.add_argument(
        "--wait-lock",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S seconds for another updater to finish (default: exit 2 at once)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_update, negative_verdict="rejected")


def update_request(args: argparse.Namespace, package: str, policy: Any) -> Any:
    from rebuild.updater.fetch import FetchOptions  # noqa: PLC0415
    from rebuild.updater.update import (  # noqa: PLC0415
        UpdateRequest,
        resolve_logs,
        resolve_mirrors,
    )

    return UpdateRequest(
        package=package,
        mirrors=resolve_mirrors(args.mirror, policy),
        logs=resolve_logs(args.log, policy),
        install_dir=args.install_dir,
        state_dir=args.state if args.state is not None else args.install_dir / "state",
        fetch=FetchOptions(
            connect_timeout=args.connect_timeout,
            read_timeout=args.read_timeout,
            ca_bundle=args.mirror_ca_bundle,
            insecure_loopback=args.insecure_loopback,
        ),
        deadline=args.deadline,
        lock_wait=getattr(args, "wait_lock", 0.0),
        version=getattr(args, "target_version", None),
    )


def cmd_update(args: argparse.Namespace, out: Output) -> int:
    from rebuild.updater.gateway import load_policy  # noqa: PLC0415
    from rebuild.updater.update import UpdateFailedError, run_update  # noqa: PLC0415

    policy = load_policy(args.policy)
    request = update_request(args, args.package, policy)
    try:
        report = run_update(request, policy)
    except UpdateFailedError as e:
        failed = e.report
        out.result({**failed.as_json(), "verdict": "rejected"}, lambda c: show_report(c, failed))
        out.reject(str(e), kind=type(e).__name__)
        return 1
    # The envelope's verdict: installed, up-to-date (exit 0) or rolled-back (exit 1).
    out.result({**report.as_json(), "verdict": report.status}, lambda c: show_report(c, report))
    return 1 if report.status == "rolled-back" else 0


def show_report(c: Console, r: UpdateReport) -> None:
    from rich.table import Table  # noqa: PLC0415 (rich only when printing for a human)

    if r.recovered:
        c.print(
            f"recovered an interrupted install: {r.recovered['status']} "
            f"{r.recovered['package']} {r.recovered['version']}"
        )
    t = Table(title=f"mirrors for {r.package}", show_lines=False)
    t.add_column("mirror")
    t.add_column("index")
    t.add_column("versions")
    for m in r.mirrors:
        t.add_row(
            m.url, m.status if not m.error else f"{m.status}: {m.error}", ", ".join(m.versions)
        )
    c.print(t)
    if r.attempts:
        a_t = Table(title="attempts")
        for col in ("mirror", "version", "outcome", "detail"):
            a_t.add_column(col)
        for a in r.attempts:
            a_t.add_row(a.mirror, a.version, a.outcome, a.error or "")
        c.print(a_t)
    for a in r.attempts:
        if a.consistency is not None:
            c.print(f"{a.version} from {a.mirror}: {a.consistency.summary()}", markup=False)
            for src in a.consistency.sources:
                if src.error:
                    c.print(f"  tile source {src.url}: {src.status}: {src.error}", markup=False)
    for s in r.skipped_newer:
        c.print(
            f"[yellow]newer version {s['version']} listed but not installable:[/] "
            f"{'; '.join(s['reasons']) or 'no mirror could serve it'}"
        )
    for u in r.unorderable:
        c.print(f"[yellow]ignored version {u['version']!r}:[/] {u['error']}")
    if r.status == "installed" and r.install is not None:
        prev = f" (previous: {r.previous_version})" if r.previous_version else ""
        c.print(f"[green]installed {r.package} {r.install.meta.version}[/]{prev}")
    elif r.status == "up-to-date":
        c.print(f"up to date: {r.package} {r.installed_version}")
    elif r.status == "rolled-back":
        c.print("[red]the new release failed its health check; the previous one is back[/]")
    else:
        c.print(f"[red]nothing installed[/]; {r.package} stays at {r.installed_version}")
