"""Command-line options bounding a server's client connections (log and witness serve)."""

from __future__ import annotations

import argparse
from typing import Any

from rebuild.errors import UsageError


def add_limit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-connections",
        type=int,
        default=0,
        metavar="N",
        help="open client connections per process; at the cap the longest-idle one is closed "
        "(default 0: 16384, or fewer if the open-file limit requires)",
    )
    p.add_argument(
        "--max-per-client",
        type=int,
        default=1024,
        metavar="N",
        help="open connections per client address per process (default 1024)",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=15.0,
        metavar="S",
        help="seconds a connection may take to send a request's headers, and may stay idle "
        "between requests (default 15)",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds a request may take to send its body (default 30)",
    )


def limits_from_args(args: argparse.Namespace) -> Any:
    """A rebuild.httpserve.ConnectionLimits (imported here: it pulls in aiohttp)."""
    from rebuild.httpserve import ConnectionLimits  # noqa: PLC0415

    if not 0 <= args.max_connections <= 1_000_000:
        raise UsageError("--max-connections must be in 0..1000000")
    if not 1 <= args.max_per_client <= 1_000_000:
        raise UsageError("--max-per-client must be in 1..1000000")
    for name in ("header_timeout", "body_timeout"):
        value = getattr(args, name)
        if not 0.1 <= value <= 3600:
            raise UsageError(f"--{name.replace('_', '-')} must be in 0.1..3600 seconds")
    return ConnectionLimits(
        args.max_connections, args.max_per_client, args.header_timeout, args.body_timeout
    )
