"""``rebuild env``: list, build, lock and check the pinned build environments."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rebuild.cli._output import Output
from rebuild.errors import OperationalError, UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from rebuild.envs.definition import Definition
    from rebuild.envs.images import BuildOutcome
    from rebuild.envs.mirror import Mirrors


def register(sub: Any) -> None:
    p = sub.add_parser(
        "env",
        help="pinned build environments (containers/)",
        description="The pinned container environments builds run in: list them, build "
        "their images from their lock files, check an image still matches its lock, and "
        "re-lock one. docs/environments.md explains them.",
    )
    esub = p.add_subparsers(dest="env_command", metavar="ACTION", required=True)

    ls = esub.add_parser(
        "list",
        help="list environments, their lock digests and images",
        description=(
            "List the environments defined in containers/: each one's identity (the sha256 "
            "of its lock file), package count, parent, and whether its image is built. "
            "Verify and recipes name environments by these names."
        ),
    )
    ls.add_argument("--json", action="store_true", help="print one JSON document")
    ls.set_defaults(func=cmd_list)

    def mirror_args(q: argparse.ArgumentParser) -> None:
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

    b = esub.add_parser(
        "build",
        help="build environment images from their locks (idempotent)",
        description=(
            "Build the image of each environment (and its parents) installing exactly the "
            "package versions of its lock. A no-op for an environment whose image, labelled "
            "with the current lock digest, already exists."
        ),
    )
    target = b.add_mutually_exclusive_group(required=True)
    target.add_argument("name", nargs="?", metavar="NAME", help="environment name")
    target.add_argument("--all", action="store_true", help="every environment in containers/")
    mirror_args(b)
    b.add_argument("--force", action="store_true", help="rebuild even when an image exists")
    b.add_argument("--json", action="store_true", help="print one JSON document")
    b.set_defaults(func=cmd_build)

    lk = esub.add_parser(
        "lock",
        help="rebuild an environment fresh and write its lock file",
        description=(
            "Build the environment from its definition's package names (newest versions "
            "on the mirror) and write containers/NAME/lock.json atomically. This gives the "
            "environment a new identity; environments built on it must be re-locked too."
        ),
    )
    ltarget = lk.add_mutually_exclusive_group(required=True)
    ltarget.add_argument("name", nargs="?", metavar="NAME", help="environment name")
    ltarget.add_argument("--all", action="store_true", help="every environment, parents first")
    mirror_args(lk)
    lk.add_argument("--json", action="store_true", help="print one JSON document")
    lk.set_defaults(func=cmd_lock)

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
                image=lock.image_tag,
                image_id=image.id if image else None,
                present=image is not None,
            )
        rows.append(row)

    def human(c: Console) -> None:
        from rich.table import Table  # noqa: PLC0415

        t = Table("environment", "identity (lock digest)", "packages", "on", "image built")
        for r in rows:
            t.add_row(
                r["name"],
                (r["lock_digest"] or "no lock")[:19] + "…",
                str(r.get("packages", "-")),
                r["parent"] or r["base"] or "-",
                "yes" if r["present"] else "no",
            )
        c.print(t)

    out.result({"environments": rows}, human)
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
    }


def cmd_build(args: argparse.Namespace, out: Output) -> int:
    from rebuild.envs.images import build_environment  # noqa: PLC0415

    outcomes: list[BuildOutcome] = []
    for d in _targets(args):
        with _progress(out, f"env {d.name}") as progress:
            # --force rebuilds what was named, not the parents it stands on.
            force = args.force and (args.all or d.name == args.name)
            o = build_environment(d, _mirrors(args, _suite_of(d)), progress, force=force)
        outcomes.append(o)
        if not out.json_mode:
            what = f"built in {o.seconds:.1f} s" if o.built else "up to date"
            out.console.print(f"{o.name}: {o.tag} {what}")
    out.result({"environments": [_outcome_json(o) for o in outcomes]})
    return 0


def cmd_lock(args: argparse.Namespace, out: Output) -> int:
    from rebuild.envs.images import build_environment, lock_environment  # noqa: PLC0415

    results: list[dict[str, Any]] = []
    for d in _targets(args):
        if not args.all and d.name != args.name:
            # Parents are only built (from their own locks), never re-locked implicitly.
            with _progress(out, f"env {d.name}") as progress:
                build_environment(d, _mirrors(args, _suite_of(d)), progress)
            continue
        with _progress(out, f"locking {d.name}") as progress:
            lock, o = lock_environment(d, _mirrors(args, _suite_of(d)), progress)
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
