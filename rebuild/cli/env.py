"""``rebuild env``: list, build, lock, check, fetch, export and import environments."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rebuild.cli._output import Output
from rebuild.errors import OperationalError, UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from rebuild.envs.definition import Definition
    from rebuild.envs.images import BuildOutcome
    from rebuild.envs.mirror import Mirrors
    from rebuild.envs.store import PackageStore


def register(sub: Any) -> None:
    p = sub.add_parser(
        "env",
        help="pinned build environments (containers/)",
        description="The pinned container environments builds run in: list them, build "
        "their images from their lock files, check an image still matches its lock, and "
        "re-lock one. docs/environments.md explains them.",
    )

    esub = p.add_subparsers(dest="env_command", metavar="ACTION", required=True)
    _add_list(esub)
    _add_build(esub)
    _add_lock(esub)
    _add_check(esub)
    _add_fetch(esub)
    _add_export(esub)
    _add_import(esub)


def _add_list(esub: Any) -> None:
    """The ``rebuild env list`` parser."""
    ls = esub.add_parser(
        "list",
        help="list environments, their lock digests and images",
        description=(
            "List the environments defined in containers/: each one's identity (the sha256 "
            "of its lock file), package count, parent, and whether its image is built. "
            "Verify and recipes name environments by these names."
        ),
    )

    _store_arg(ls)

    ls.add_argument("--json", action="store_true", help="print one JSON document")

    ls.set_defaults(func=cmd_list)


def _add_build(esub: Any) -> None:
    """The ``rebuild env build`` parser."""
    b = esub.add_parser(
        "build",
        help="build environment images from their locks (idempotent)",
        description=(
            "Build the image of each environment (and its parents) from exactly the .deb "
            "files its lock pins: each is taken from the package store, or fetched from the "
            "mirror into it first, and its sha256 checked against the lock; then installed "
            "with no network. A no-op for an environment whose image, labelled with the "
            "current lock digest, already exists. The mirror is only needed for packages the "
            "store lacks (and to name in the base image's apt sources)."
        ),
    )

    _target_args(b, "every environment in containers/")

    _mirror_args(b)

    _store_arg(b)

    b.add_argument("--force", action="store_true", help="rebuild even when an image exists")

    b.add_argument("--json", action="store_true", help="print one JSON document")

    b.set_defaults(func=cmd_build)


def _add_lock(esub: Any) -> None:
    """The ``rebuild env lock`` parser."""
    lk = esub.add_parser(
        "lock",
        help="rebuild an environment fresh and write its lock file",
        description=(
            "Build the environment from its definition's package names (newest versions "
            "on the mirror) and write containers/NAME/lock.json atomically, each package "
            "pinned to the sha256, size and path of its .deb from apt's index (the .deb "
            "files go into the package store). This gives the environment a new identity; "
            "environments built on it must be re-locked too."
        ),
    )

    _target_args(lk, "every environment, parents first")

    lk.add_argument(
        "--keep-versions",
        action="store_true",
        help="pin the versions the current lock (v1 or v2) pins, not the newest ones",
    )

    _mirror_args(lk)

    _store_arg(lk)

    lk.add_argument("--json", action="store_true", help="print one JSON document")

    lk.set_defaults(func=cmd_lock)


def _add_check(esub: Any) -> None:
    """The ``rebuild env check`` parser."""
    ck = esub.add_parser(
        "check",
        help="prove an environment image matches its lock (exit 1 on drift)",
        description=(
            "Run dpkg-query in the environment's image and compare the installed package "
            "set (and the definition's files) with the lock. Exit 0 when equal, 1 with the "
            "drift listed, 2 when there is no image or no engine."
        ),
    )

    ck.add_argument("name", metavar="NAME", help="environment name")

    ck.add_argument("--json", action="store_true", help="print one JSON document")

    ck.set_defaults(func=cmd_check, negative_verdict="drifted")


def _add_fetch(esub: Any) -> None:
    """The ``rebuild env fetch`` parser."""
    fe = esub.add_parser(
        "fetch",
        help="put every .deb the locks pin into the package store",
        description=(
            "Make sure the package store holds every .deb an environment's lock (and its "
            "parents' locks) pins, downloading what it lacks from the mirror and checking "
            "each sha256 against the lock. Once stored, the environment builds after the "
            "mirror has dropped those versions. Exit 2 naming the packages no mirror serves."
        ),
    )

    _target_args(fe, "every environment")

    _mirror_args(fe)

    _store_arg(fe)

    fe.add_argument("--json", action="store_true", help="print one JSON document")

    fe.set_defaults(func=cmd_fetch)


def _add_export(esub: Any) -> None:
    """The ``rebuild env export`` parser."""
    ex = esub.add_parser(
        "export",
        help="write an environment (locks and .deb files) to one portable file",
        description=(
            "Write FILE: a tar of the environment's lock and its parents' locks and every "
            ".deb they pin, each named by its sha256 (fetched into the package store first "
            "when missing), optionally with the image. Another machine with the same locks "
            "imports it with `rebuild env import` and builds with no mirror."
        ),
    )

    ex.add_argument("name", metavar="NAME", help="environment name")

    ex.add_argument("-o", "--output", metavar="FILE", type=Path, required=True, help="output")

    ex.add_argument(
        "--with-image",
        action="store_true",
        help="include the built image (docker save); the importer must trust the exporter",
    )

    _mirror_args(ex)

    _store_arg(ex)

    ex.add_argument("--json", action="store_true", help="print one JSON document")

    ex.set_defaults(func=cmd_export)


def _add_import(esub: Any) -> None:
    """The ``rebuild env import`` parser."""
    im = esub.add_parser(
        "import",
        help="add an exported environment's .deb files to the package store",
        description=(
            "Check an export against this machine's locks and add its .deb files to the "
            "package store. Every lock in it must equal the local one, every .deb must be one "
            "they pin (sha256 and size), and none may be missing; anything else (another "
            "file, a link, a path outside the archive's names, an oversized member) refuses "
            "the whole archive and adds nothing. Exit 1 when the archive is not this "
            "machine's environment (tampered or other locks), 2 when it is malformed."
        ),
    )

    im.add_argument("file", metavar="FILE", type=Path, help="an archive from rebuild env export")

    im.add_argument(
        "--with-image",
        action="store_true",
        help=(
            "also load and tag the archive's image (checked: id, lock label and package set; "
            "trusted otherwise like a registry image)"
        ),
    )

    _store_arg(im)

    im.add_argument("--json", action="store_true", help="print one JSON document")

    im.set_defaults(func=cmd_import)


def _target_args(q: argparse.ArgumentParser, all_help: str) -> None:
    target = q.add_mutually_exclusive_group(required=True)
    target.add_argument("name", nargs="?", metavar="NAME", help="environment name")
    target.add_argument("--all", action="store_true", help=all_help)


def _store_arg(q: argparse.ArgumentParser) -> None:
    q.add_argument(
        "--store",
        metavar="DIR",
        type=Path,
        help=(
            "package store: every pinned .deb kept by sha256 (default: "
            "$REBUILD_PACKAGE_STORE, else $XDG_DATA_HOME/rebuild/packages, "
            "i.e. ~/.local/share/rebuild/packages)"
        ),
    )


def _mirror_args(q: argparse.ArgumentParser) -> None:
    q.add_argument(
        "--mirror",
        metavar="URL",
        help="Debian archive mirror (default: $REBUILD_DEBIAN_MIRROR, else apt sources)",
    )
    q.add_argument(
        "--security-mirror",
        metavar="URL",
        help="Debian security archive (default: $REBUILD_DEBIAN_SECURITY_MIRROR, or apt's)",
    )


def _mirrors(args: argparse.Namespace, suite: str) -> Callable[[], Mirrors]:
    from rebuild.envs.mirror import check_url, resolve_mirrors  # noqa: PLC0415

    # Bad flags are refused up front, even when no build turns out to need them.
    if args.mirror:
        check_url(args.mirror, "--mirror")
    if args.security_mirror:
        check_url(args.security_mirror, "--security-mirror")

    # Resolved lazily: a no-op build needs no mirror at all.
    @functools.cache
    def get() -> Mirrors:
        return resolve_mirrors(suite, args.mirror, args.security_mirror)

    return get


def _store(args: argparse.Namespace) -> PackageStore:
    from rebuild.envs.store import PackageStore  # noqa: PLC0415

    return PackageStore(getattr(args, "store", None))


def _suite_of(definition: Definition) -> str:
    from rebuild.envs.definition import load_definition  # noqa: PLC0415

    d = definition
    seen = 0
    while d.parent is not None and seen < 16:
        d = load_definition(d.parent, d.directory.parent)
        seen += 1
    return d.suite or "bookworm"


@contextmanager
def _progress(out: Output, title: str) -> Iterator[Callable[[str], None]]:
    if out.json_mode:
        yield lambda _msg: None
        return
    with out.err.status(title) as status:

        def update(msg: str) -> None:
            status.update(f"{title}: {msg}")

        yield update


def cmd_list(args: argparse.Namespace, out: Output) -> int:
    from rebuild.envs.definition import list_definitions, load_definition, load_lock  # noqa: PLC0415
    from rebuild.envs.images import find_image  # noqa: PLC0415

    store = _store(args)
    rows: list[dict[str, Any]] = []
    for name in list_definitions():
        d = load_definition(name)
        row: dict[str, Any] = {
            "name": name,
            "description": d.description,
            "parent": d.parent,
            "base": d.base,
        }
        try:
            lock = load_lock(d)
        except OperationalError as e:
            row.update(lock_digest=None, image=None, present=False, problem=str(e))
        else:
            image = find_image(lock)
            row.update(
                lock_digest=lock.digest,
                packages=len(lock.packages),
                in_store=len(lock.packages) - len(store.missing(lock.packages)),
                image=lock.image_tag,
                image_id=image.id if image else None,
                present=image is not None,
            )
        rows.append(row)

    def human(c: Console) -> None:
        from rich.table import Table  # noqa: PLC0415

        t = Table(
            "environment", "identity (lock digest)", "packages (in store)", "on", "image built"
        )
        for r in rows:
            t.add_row(
                r["name"],
                (r["lock_digest"] or "no lock")[:19] + "…",
                f"{r['packages']} ({r['in_store']})" if "packages" in r else "-",
                r["parent"] or r["base"] or "-",
                "yes" if r["present"] else "no",
            )
        c.print(t)

    out.result({"environments": rows, "store": str(store.root)}, human)
    return 0


def _targets(args: argparse.Namespace) -> list[Definition]:
    from rebuild.envs.definition import build_order, list_definitions  # noqa: PLC0415

    names = list_definitions() if args.all else [args.name]
    if not names:
        raise UsageError("no environments defined in containers/")
    return build_order(names)


def _outcome_json(o: BuildOutcome) -> dict[str, Any]:
    return {
        "name": o.name,
        "lock_digest": o.lock_digest,
        "image": o.tag,
        "image_id": o.image_id,
        "built": o.built,
        "seconds": round(o.seconds, 2),
        "fetch": o.packages.to_json() if o.packages else None,
    }


def cmd_build(args: argparse.Namespace, out: Output) -> int:
    from rebuild.envs.images import build_environment  # noqa: PLC0415

    store = _store(args)
    outcomes: list[BuildOutcome] = []
    for d in _targets(args):
        with _progress(out, f"env {d.name}") as progress:
            # --force rebuilds what was named, not the parents it stands on.
            force = args.force and (args.all or d.name == args.name)
            o = build_environment(
                d, _mirrors(args, _suite_of(d)), progress, force=force, store=store
            )
        outcomes.append(o)
        if not out.json_mode:
            what = f"built in {o.seconds:.1f} s" if o.built else "up to date"
            if o.packages is not None:
                what += (
                    f" ({o.packages.in_store} packages from the store, "
                    f"{o.packages.fetched} fetched)"
                )
            out.console.print(f"{o.name}: {o.tag} {what}")
    out.result({"environments": [_outcome_json(o) for o in outcomes]})
    return 0


def cmd_lock(args: argparse.Namespace, out: Output) -> int:
    from rebuild.envs.images import build_environment, lock_environment  # noqa: PLC0415

    store = _store(args)
    results: list[dict[str, Any]] = []
    for d in _targets(args):
        if not args.all and d.name != args.name:
            # Parents are only built (from their own locks), never re-locked implicitly.
            with _progress(out, f"env {d.name}") as progress:
                build_environment(d, _mirrors(args, _suite_of(d)), progress, store=store)
            continue
        with _progress(out, f"locking {d.name}") as progress:
            lock, o = lock_environment(
                d,
                _mirrors(args, _suite_of(d)),
                progress,
                store=store,
                keep_versions=args.keep_versions,
            )
        doc = _outcome_json(o) | {"lock_file": str(d.lock_path), "packages": len(lock.packages)}
        results.append(doc)
        if not out.json_mode:
            out.console.print(
                f"{d.name}: wrote {d.lock_path} ({len(lock.packages)} packages), "
                f"identity {lock.digest}"
            )
    out.result({"locked": results})
    return 0


def cmd_check(args: argparse.Namespace, out: Output) -> int:
    from rebuild.envs.definition import load_definition, load_lock  # noqa: PLC0415
    from rebuild.envs.images import check_environment  # noqa: PLC0415

    d = load_definition(args.name)
    report = check_environment(d)
    if report.image is None:
        lock = load_lock(d)
        raise UsageError(
            f"environment {d.name!r} has no image {lock.image_tag}; run: rebuild env build {d.name}"
        )
    assert report.drift is not None
    doc = {
        "name": d.name,
        "lock_digest": report.lock_digest,
        "image": report.image.tag,
        "image_id": report.image.id,
        "verdict": "matches" if report.ok else "drifted",
        "matches": report.ok,
        "drift": report.drift.to_json(),
    }

    def human(c: Console) -> None:
        if report.ok:
            c.print(
                f"{d.name}: image {report.image.id[:19] if report.image else ''} matches "
                f"lock {report.lock_digest}"
            )
        else:
            c.print(f"{d.name}: image DRIFTED from lock {report.lock_digest}:", style="bold red")
            for line in report.drift.lines() if report.drift else []:
                c.print(f"  {line}")

    out.result(doc, human)
    return 0 if report.ok else 1


def cmd_fetch(args: argparse.Namespace, out: Output) -> int:
    from rebuild.envs.definition import load_lock  # noqa: PLC0415
    from rebuild.envs.fetch import ensure_in_store  # noqa: PLC0415

    store = _store(args)
    results: list[dict[str, Any]] = []
    for d in _targets(args):
        lock = load_lock(d)
        with _progress(out, f"fetching {d.name}") as progress:
            report = ensure_in_store(lock.packages, store, _mirrors(args, _suite_of(d)), progress)
        results.append({"name": d.name, "lock_digest": lock.digest} | report.to_json())
        if not out.json_mode:
            out.console.print(
                f"{d.name}: {report.total} packages in {store.root} "
                f"({report.fetched} fetched, {report.bytes_fetched / 1e6:.1f} MB)"
            )
    out.result({"store": str(store.root), "environments": results})
    return 0


def cmd_export(args: argparse.Namespace, out: Output) -> int:
    from rebuild.envs.archive import export_environment  # noqa: PLC0415
    from rebuild.envs.definition import load_definition  # noqa: PLC0415

    d = load_definition(args.name)
    target: Path = args.output
    if target.is_dir():
        raise UsageError(f"{target} is a directory; -o names the file to write")
    with _progress(out, f"exporting {d.name}") as progress:
        report = export_environment(
            d.name,
            target,
            _store(args),
            _mirrors(args, _suite_of(d)),
            progress,
            with_image=args.with_image,
        )

    def human(c: Console) -> None:
        image = f", image {report.image_id[:19]}" if report.image_id else ""
        c.print(
            f"{report.name}: wrote {report.path} ({report.size / 1e6:.1f} MB, "
            f"{report.packages} packages{image})\n"
            f"  lock    {report.lock_digest}\n  sha256  {report.sha256}"
        )

    out.result(report.to_json(), human)
    return 0


def cmd_import(args: argparse.Namespace, out: Output) -> int:
    from rebuild.envs.archive import import_environment  # noqa: PLC0415

    store = _store(args)
    with _progress(out, f"importing {args.file}") as progress:
        report = import_environment(args.file, store, progress, with_image=args.with_image)

    def human(c: Console) -> None:
        c.print(
            f"{report.name}: lock {report.lock_digest} verified; {report.packages} packages "
            f"({report.added} new) now in {store.root}"
        )
        if report.image_id:
            c.print(f"  image {report.image_id} loaded and tagged")
        elif report.image_in_archive:
            c.print("  the archive's image was checked but not loaded (pass --with-image)")
        c.print(f"  build it with no mirror: rebuild env build {report.name}")

    out.result(report.to_json() | {"store": str(store.root)}, human)
    return 0
