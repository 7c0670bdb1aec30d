"""``rebuild verify``: rebuild a published artifact and report the verdict.

Only renders: the pipeline (:mod:`rebuild.engine.pipeline`) decides and
returns a frozen result. Exit 0 reproduced, 1 equivalent, mismatch or
failed, 2 error; ``--accept-equivalent`` makes equivalent exit 0.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rebuild.cli._args import add_ca_bundle
from rebuild.cli._output import Output
from rebuild.engine.plan import DEFAULT_TIMEOUT
from rebuild.errors import UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from rebuild.engine.pipeline import Target
    from rebuild.engine.result import VerifyResult

_STYLE = {
    "reproduced": "bold green",
    "equivalent": "bold yellow",
    "mismatch": "bold red",
    "failed": "bold red",
    "error": "bold yellow",
}


def register(sub: Any) -> None:
    p = sub.add_parser(
        "verify",
        help="rebuild a published artifact and compare it bit for bit",
        description=(
            "TARGET is pypi:NAME==VERSION (sdist and wheel from pip's configured index, "
            "recipe inferred), RECIPE.toml ARTIFACT, or STATEMENT [ARTIFACT] (a maintainer's "
            "signed release statement; with --maintainer-key its signature must verify; "
            "without ARTIFACT it is downloaded from --url or the statement's downloadLocation "
            "and kept only with the statement's sha256). "
            "Steps: fetch, environment, build (no network), compare sha256, diagnose a "
            "mismatch, attest (--key), publish (--log). A wheel that differs only in zip "
            "entry times, order or permission bits, and is byte-identical once those are "
            "normalized, is 'equivalent', never 'reproduced'. Exit 0 reproduced, 1 "
            "equivalent, mismatch or failed, 2 error."
        ),
    )
    p.add_argument("target", nargs="*", metavar="TARGET", help="what to rebuild (see above)")
    p.add_argument(
        "--fixture",
        metavar="NAME",
        help="rebuild a fixture from fixtures/ instead of TARGET: make its tagged git "
        "repository, fill in its recipe, verify its published artifact "
        "(python-wheel, php-phar, php-nonrepro, evil)",
    )
    p.add_argument("--variant", metavar="V", help="fixture variant (evil: network|write|forever)")
    p.add_argument("--key", type=Path, metavar="K", help="sign a rebuild attestation with K")
    p.add_argument("--passphrase-env", metavar="VAR", help="passphrase environment variable for K")
    p.add_argument(
        "--maintainer-key",
        type=Path,
        action="append",
        default=[],
        metavar="PUB",
        help="trusted maintainer verifier key for a release statement (repeatable)",
    )
    p.add_argument(
        "--url",
        action="append",
        default=[],
        metavar="URL",
        help="STATEMENT without ARTIFACT: where to download it (a file, or a directory URL "
        "ending in /), before the statement's downloadLocation; repeatable",
    )
    p.add_argument(
        "--log", metavar="URL", help="submit the attestation to this audit log (needs --key)"
    )
    add_ca_bundle(p, "log", "an https:// log")
    p.add_argument(
        "--report-dir",
        type=Path,
        metavar="D",
        help="where build log, rebuilt artifact, reports and attestation go "
        "(default ./rebuild-reports/<target>-<time>)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"build time limit in seconds (default {DEFAULT_TIMEOUT:.0f})",
    )
    p.add_argument("--keep-work", action="store_true", help="keep unpacked sources and wheels")
    p.add_argument(
        "--accept-equivalent",
        action="store_true",
        help="exit 0 for verdict equivalent too (the verdict and attestation stay equivalent)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace, out: Output) -> int:
    from rebuild.engine.build_env import lock_digest  # noqa: PLC0415
    from rebuild.engine.fixtures import materialize  # noqa: PLC0415
    from rebuild.engine.pipeline import (  # noqa: PLC0415
        RecipeTarget,
        VerifyOptions,
        default_report_dir,
        parse_target,
        run_verification,
    )
    from rebuild.keystore import load_signing_key  # noqa: PLC0415

    if args.timeout <= 0 or args.timeout > 24 * 3600:
        raise UsageError("--timeout must be between 0 and 86400 seconds")
    if args.log and not args.key:
        raise UsageError("--log publishes the signed attestation: give --key too")
    key = load_signing_key(args.key, args.passphrase_env) if args.key else None
    if args.fixture:
        if args.target:
            raise UsageError("give either TARGET or --fixture, not both")
        report_dir = args.report_dir or default_report_dir(
            RecipeTarget(Path(f"fixture-{args.fixture}"), Path(args.variant or "default"))
        )
        # Absolute from here on: git and the builds run in other directories.
        report_dir = report_dir.absolute()
        made = materialize(
            args.fixture, report_dir / "fixture", lock_for=lock_digest, variant=args.variant
        )
        target: Target = RecipeTarget(made.recipe, made.artifact)
    else:
        target = parse_target(args.target, args.maintainer_key, args.url)
        report_dir = args.report_dir or default_report_dir(target)
    opts = VerifyOptions(
        report_dir=report_dir,
        timeout=args.timeout,
        signing_key=key,
        log_url=args.log,
        log_ca_bundle=args.log_ca_bundle,
        keep_work=args.keep_work,
    )

    with _progress(out) as progress:
        result = run_verification(target, opts, progress)
    out.result(result.to_json(), lambda c: _render(c, result))
    if result.step_error is not None:
        e = result.step_error
        out.fail(e.message, kind=f"{e.step.capitalize()}Error", hint=e.hint)
    elif result.verdict == "error":
        out.fail(result.message or "the rebuild could not run", hint=result.hint, quiet=True)
    elif result.verdict == "equivalent" and args.accept_equivalent:
        return 0
    return result.exit_code


@contextmanager
def _progress(out: Output) -> Iterator[Callable[[str, str, float], None]]:
    """Step progress: a rich bar on stderr, or (with --json) plain lines there."""
    if out.json_mode:

        def note(step: str, event: str, elapsed: float) -> None:
            if event != "start":
                out.note(f"{step}: {event} ({elapsed:.1f}s)")

        yield note
        return
    from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    bar = Progress(
        SpinnerColumn(finished_text="•"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=out.err,
        transient=False,
    )
    tasks: dict[str, TaskID] = {}

    def update(step: str, event: str, elapsed: float) -> None:
        if event == "start":
            tasks[step] = bar.add_task(step, total=1)
        else:
            task = tasks.get(step) or bar.add_task(step, total=1)
            bar.update(task, completed=1, description=f"{step}: {event} ({elapsed:.1f}s)")

    with bar:
        yield update


def _render(c: Console, r: VerifyResult) -> None:
    from rich.table import Table  # noqa: PLC0415

    t = Table(title=f"rebuild verify {r.target}", show_header=True)
    t.add_column("step")
    t.add_column("status")
    t.add_column("seconds", justify="right")
    t.add_column("detail", overflow="fold")
    for s in r.steps:
        t.add_row(s.name, s.status, f"{s.seconds:.1f}", s.detail)
    c.print(t)
    c.print(f"verdict: [{_STYLE[r.verdict]}]{r.verdict}[/]")
    if r.artifact:
        c.print(f"artifact: {r.artifact}", markup=False)
    c.print(f"upstream sha256: {r.upstream_sha256 or '(unknown: not fetched)'}", markup=False)
    c.print(f"rebuilt  sha256: {r.rebuilt_sha256 or '(none: no artifact was built)'}", markup=False)
    if r.normalization:
        c.print(
            f"normalized sha256: {r.normalization['sha256']} (both, after "
            f"{', '.join(r.normalization['rules'])})",
            markup=False,
        )
    if r.causes:
        c.print("causes:", markup=False)
        for cause in r.causes:
            c.print(f"  - {cause}", markup=False)
    if r.message:
        c.print(f"message: {r.message}", markup=False)
    if r.hint:
        c.print(f"hint: {r.hint}", markup=False)
    for label, value in (
        ("build log", r.build_log),
        ("diff report", r.diff_report),
        ("attestation", r.attestation),
        ("report dir", r.report_dir),
    ):
        if value:
            c.print(f"{label}: {value}", markup=False)
    if r.log_entry:
        c.print(f"log index: {r.log_entry.index} at {r.log_entry.url}", markup=False)
        if r.log_entry.proof:
            c.print(r.log_entry.proof, markup=False)
