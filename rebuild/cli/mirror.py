"""``rebuild mirror``: publish a release into a mirror directory, serve one over HTTP(S).

A mirror is untrusted storage (layout in docs/formats.md); publishing trusts
nothing either: it files the artifact and its bundle under the package and
version the bundle's release statement names, for the gate to judge later.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rebuild.cli._output import Output
from rebuild.errors import UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from rebuild.updater.mirror import LogTiles


def register(sub: Any) -> None:
    p = sub.add_parser(
        "mirror",
        help="publish releases to a mirror directory and serve it",
        description="A mirror is a directory of static files (releases and their bundles) "
        "any web server can serve; nothing on it is trusted: updaters gate every release. "
        "docs/updater.md explains it.",
    )
    msub = p.add_subparsers(dest="mirror_command", metavar="ACTION", required=True)

    pub = msub.add_parser(
        "publish",
        help="add a release (artifact + bundle) to a mirror directory",
        description=(
            "Add ARTIFACT and its rebuild-bundle/v1 to DIR in the rebuild-mirror/v1 layout "
            "(DIR/PACKAGE/index.json, DIR/PACKAGE/VERSION/ARTIFACT, .../bundle.json), with "
            "package, version and file name taken from the bundle's release statement (not "
            "verified: the updater's gate does that). Writes are atomic; publishing the same "
            "release again is a no-op, the same version with other bytes is refused. With "
            "--log URL, first copy the log's hash tiles for the bundle's checkpoint that DIR "
            "lacks into DIR/log/ (checked to reproduce the checkpoint's root), so updaters "
            "that skipped releases can compute the consistency proof they need from the "
            "mirror alone."
        ),
    )
    pub.add_argument("--dir", required=True, type=Path, metavar="DIR", help="mirror directory")
    pub.add_argument("--artifact", required=True, type=Path, metavar="FILE", help="the artifact")
    pub.add_argument("--bundle", required=True, type=Path, metavar="B", help="its bundle")
    pub.add_argument(
        "--log",
        metavar="URL",
        help="the log's tlog-tiles URL: copy the tiles of the bundle's checkpoint into DIR/log/",
    )
    pub.add_argument(
        "--log-ca-bundle",
        type=Path,
        metavar="F",
        help="CA bundle (PEM) to check an https:// log's certificate (default: the system's)",
    )
    pub.add_argument("--timeout", type=float, default=30.0, metavar="S", help="per log request")
    pub.add_argument("--json", action="store_true", help="print one JSON document")
    pub.set_defaults(func=cmd_publish)

    s = msub.add_parser(
        "serve",
        help="serve a mirror directory over HTTP(S) (for tests and demos)",
        description=(
            "Serve DIR's regular files (no listings, no symlinks, no dot-files) until SIGINT "
            "or SIGTERM; prints 'listening on URL'. Updaters refuse plain http except to "
            "loopback with --insecure-loopback, so give --tls-cert/--tls-key elsewhere."
        ),
    )
    s.add_argument("--dir", required=True, type=Path, metavar="DIR", help="mirror directory")
    s.add_argument("--listen", required=True, metavar="HOST:PORT", help="address (port 0: any)")
    s.add_argument("--tls-cert", type=Path, metavar="C", help="serve HTTPS with this certificate")
    s.add_argument("--tls-key", type=Path, metavar="K", help="private key for --tls-cert")
    s.add_argument(
        "--json",
        action="store_true",
        help="print a JSON line once listening and the final envelope when stopped (docs/cli.md)",
    )
    s.set_defaults(func=cmd_serve)


def cmd_publish(args: argparse.Namespace, out: Output) -> int:
    from rebuild.fsio import read_bounded  # noqa: PLC0415
    from rebuild.hashing import sha256_file  # noqa: PLC0415
    from rebuild.updater.gateway import release_info  # noqa: PLC0415
    from rebuild.updater.mirror import publish  # noqa: PLC0415
    from verify.bundle import MAX_BUNDLE_SIZE  # noqa: PLC0415

    bundle = read_bounded(args.bundle, MAX_BUNDLE_SIZE)
    info = release_info(bundle, sha256_file(args.artifact), str(args.bundle))
    with contextlib.ExitStack() as stack:
        tiles = None
        if args.log is not None:
            tiles = stack.enter_context(_log_tiles(args, bundle))
        result = publish(
            args.dir,
            args.artifact,
            args.bundle,
            package=info.package,
            version=info.version,
            artifact_name=info.artifact,
            log_tiles=tiles,
        )

    def human(c: Console) -> None:
        verb = "published" if result.added else "already published"
        r = result.release
        c.print(
            f"{verb}: {result.package} {r.version} ({r.artifact}, {r.size} bytes) in {args.dir}"
        )
        t = result.log_tiles
        if t is not None:
            c.print(
                f"log tiles for size {t.size}: {t.copied} copied ({t.bytes} bytes), "
                f"{t.present} already there, in {args.dir / 'log'}"
            )

    out.result(result.as_json(), human)
    return 0


@contextlib.contextmanager
def _log_tiles(args: argparse.Namespace, bundle: bytes) -> Iterator[LogTiles]:
    from rebuild.log.client import LogClient  # noqa: PLC0415
    from rebuild.updater.mirror import LogTiles  # noqa: PLC0415
    from verify.bundle import parse_bundle  # noqa: PLC0415

    cp = parse_bundle(bundle).checkpoint_body()  # release_info parsed it already
    with LogClient(args.log, args.log_ca_bundle, args.timeout) as client:
        yield LogTiles(client.tile, cp.size, cp.root_hash, client.url)


def cmd_serve(args: argparse.Namespace, out: Output) -> int:
    import asyncio  # noqa: PLC0415

    from rebuild.listen import parse_listen  # noqa: PLC0415
    from rebuild.log.urls import server_ssl_context  # noqa: PLC0415
    from rebuild.updater.serve import serve_forever  # noqa: PLC0415

    host, port = parse_listen(args.listen)
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    tls = server_ssl_context(args.tls_cert, args.tls_key) if args.tls_cert else None

    def ready(url: str) -> None:
        out.note(f"mirror {args.dir} listening on {url}")
        out.event({"event": "listening", "url": url, "dir": str(args.dir)})

    asyncio.run(serve_forever(args.dir, host, port, tls, ready))
    return 0
