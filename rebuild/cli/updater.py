"""``rebuild updater``: privilege separation (the web user requests, the updater's user acts).

``request`` only drops a validated (package, version) into the spool; it
needs no key, no policy and no write access to anything installed. ``daemon``
runs as the user that owns the install directory and does the real work.
``status`` reads the outcomes the daemon wrote.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rebuild.cli._output import Output
from rebuild.errors import UsageError

if TYPE_CHECKING:
    from rich.console import Console


def register(sub: Any) -> None:
    from rebuild.cli.update import add_fetch_args  # noqa: PLC0415

    p = sub.add_parser(
        "updater",
        help="privilege-separated updates: request, daemon, status",
        description="The web application's user only requests an update; a daemon running "
        "as another user fetches, gates and installs it. docs/updater.md explains it.",
    )
    usub = p.add_subparsers(dest="updater_command", metavar="ACTION", required=True)

    r = usub.add_parser(
        "request",
        help="ask the updater daemon to install NAME VERSION (the web user's side)",
        description=(
            "Write one request file into SPOOL/requests (a drop box the caller may write "
            "but not read) and print its id. VERSION is a release version or 'latest'. "
            "The daemon decides; this command changes nothing installed."
        ),
    )
    r.add_argument("name", metavar="NAME", help="package name")
    r.add_argument("version", metavar="VERSION", help="a release version, or 'latest'")
    r.add_argument("--spool", required=True, type=Path, metavar="D", help="spool directory")
    r.add_argument("--json", action="store_true", help="print one JSON document")
    r.set_defaults(func=cmd_request)

    d = usub.add_parser(
        "daemon",
        help="act on requests: fetch, gate, install (the updater user's side)",
        description=(
            "Watch SPOOL/requests (inotify, with a full rescan every --poll seconds), treat "
            "every request as hostile, coalesce to one update per package, run the same "
            "fetch -> gate -> install as 'rebuild update', and write SPOOL/status/NAME.json. "
            "Refuses to start when the policy, install or state directory is writable by "
            "another user. Runs until SIGTERM/SIGINT (or, with --once, handles what is "
            "pending and exits)."
        ),
    )
    d.add_argument("--spool", required=True, type=Path, metavar="D", help="spool directory")
    d.add_argument(
        "--package",
        metavar="NAME",
        help="the package installed in --install-dir (default: the policy's only package)",
    )
    add_fetch_args(d)
    d.add_argument("--poll", type=float, default=30.0, metavar="S", help="full rescan interval")
    d.add_argument("--no-inotify", action="store_true", help="poll only")
    d.add_argument(
        "--once",
        action="store_true",
        help="handle the pending requests, report what was done, and exit",
    )
    d.add_argument(
        "--wait-lock",
        type=float,
        default=600.0,
        metavar="S",
        help="wait up to S seconds for another updater holding the install lock",
    )
    d.add_argument(
        "--json",
        action="store_true",
        help="with --once one JSON document; else a JSON line once watching and the final "
        "envelope when stopped (docs/cli.md)",
    )
    d.set_defaults(func=cmd_daemon)

    s = usub.add_parser(
        "status",
        help="show what the daemon did with the last request (per package)",
        description="Read SPOOL/status/NAME.json (or all). Exit 2 when there is none yet.",
    )
    s.add_argument("name", nargs="?", metavar="NAME", help="package name (default: all)")
    s.add_argument("--spool", required=True, type=Path, metavar="D", help="spool directory")
    s.add_argument("--json", action="store_true", help="print one JSON document")
    s.set_defaults(func=cmd_status)


def cmd_request(args: argparse.Namespace, out: Output) -> int:
    from rebuild.updater.spool import write_request  # noqa: PLC0415

    rid = write_request(args.spool, args.name, args.version)
    doc = {"id": rid, "package": args.name, "version": args.version}
    out.result(doc, lambda c: c.print(f"requested {args.name} {args.version}: request {rid}"))
    return 0


def cmd_daemon(args: argparse.Namespace, out: Output) -> int:
    from rebuild.cli.update import update_request  # noqa: PLC0415
    from rebuild.updater.daemon import Daemon, DaemonConfig  # noqa: PLC0415
    from rebuild.updater.gateway import load_policy  # noqa: PLC0415

    if args.poll <= 0:
        raise UsageError("--poll must be positive")
    policy = load_policy(args.policy)
    package = args.package
    if package is None:
        if len(policy.package_names) != 1:
            raise UsageError(
                f"{args.policy} names {len(policy.package_names)} packages; say which one "
                "this daemon installs with --package (one daemon per install directory)"
            )
        package = policy.package_names[0]
    policy.package(package)  # UsageError when the policy does not name it
    template = update_request(args, package, policy)
    config = DaemonConfig(
        spool=args.spool,
        policy_path=args.policy,
        template=template,
        poll=args.poll,
        use_inotify=not args.no_inotify,
    )

    def log(message: str) -> None:
        sys.stderr.write(f"rebuild updater daemon: {message}\n")
        sys.stderr.flush()

    daemon = Daemon(config, log)
    if args.once:
        docs = daemon.run_once(daemon.preflight())

        def human(c: Console) -> None:
            for d in docs:
                version = d.get("request", {}).get("version")
                c.print(f"{d.get('package')} {version}: {d.get('outcome')}", markup=False)
            if not docs:
                c.print("no pending requests")

        out.result({"handled": docs}, human)
        return 0

    def watching(mode: str) -> None:
        log(f"watching {args.spool}/requests ({mode})")
        out.event({"event": "watching", "spool": str(args.spool), "mode": mode})

    daemon.serve_forever(watching)
    return 0


def cmd_status(args: argparse.Namespace, out: Output) -> int:
    from rebuild.updater.spool import read_status  # noqa: PLC0415

    docs = read_status(args.spool, args.name)

    def human(c: Console) -> None:
        for name, doc in docs.items():
            if name.startswith("_"):
                c.print(
                    f"daemon: {doc.get('requests')} requests, {doc.get('refused')} refused, "
                    f"{doc.get('updates')} updates"
                )
                continue
            c.print(
                f"{name}: {doc.get('outcome')} (request {doc.get('request', {}).get('version')}); "
                f"installed {doc.get('installed_version')}: {doc.get('message')}"
            )

    # Nested: a status document has fields (format, ...) the envelope uses itself.
    if args.name is None:
        out.result({"packages": docs}, human)
    else:
        out.result({"package": args.name, "status": docs[args.name]}, human)
    return 0
