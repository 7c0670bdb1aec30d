"""``rebuild demo``: the whole secure-update story on this machine, then the attacks.

Only renders: the story is :mod:`rebuild.demo.story`, which drives the real
components and returns every step and outcome. Exit 0 when every expected
outcome happened, 1 when one did not (an attack succeeded, or an honest
release was not installed), 2 when the demo could not run to its end.
"""

from __future__ import annotations

import argparse
import signal
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rebuild.cli._output import Output

if TYPE_CHECKING:
    from rich.console import Console

    from rebuild.demo.model import DemoResult, Outcome, Step


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole secure-update story on 127.0.0.1, then attacks that must fail",
        description=(
            "Start, on 127.0.0.1 in a temporary directory with fresh keys: an audit log and "
            "3 witnesses (quorum 2), 2 HTTPS mirrors (the first one an attacker's) and the "
            "updater daemon (k = 2). A maintainer builds the fixture PHP application into a "
            ".phar in the pinned php-8.2 environment, signs and logs releases 1.0.0 and "
            "1.1.0; 3 rebuilders rebuild and attest each; the daemon installs them on "
            "requests from the web user. Then attacks: a phar tampered after signing, a "
            "forked log, a checkpoint without enough witnesses, a backdoored build, a "
            "downgrade; each must be refused with the gate's reason. Needs the Docker engine "
            "and the php-8.2 environment (built on first use). Exit 0 when every expected "
            "outcome happened, 1 when one did not, 2 when the demo could not run."
        ),
    )
    p.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="run in DIR (new or empty) and keep everything there: keys, logs, mirrors, "
        "reports, the install (default: a temporary directory, removed afterwards)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_demo)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # the demo stops its servers on the way out


def cmd_demo(args: argparse.Namespace, out: Output) -> int:
    from rebuild.demo.story import run_demo  # noqa: PLC0415

    # SIGTERM (a supervisor, a timeout) ends the run like Ctrl-C: every server it
    # started is stopped, and the temporary directory is removed.
    signal.signal(signal.SIGTERM, _interrupted)

    if args.keep is not None:
        directory, keep = args.keep.absolute(), True
    else:
        directory, keep = Path(tempfile.mkdtemp(prefix="rebuild-demo-")), False
    reporter: Any = _Lines(out) if out.json_mode else _Story(out)
    if not out.json_mode:
        out.console.print(
            f"[bold]rebuild demo[/]: the secure-update story on 127.0.0.1, in {directory}",
            highlight=False,
        )
    result = run_demo(directory, keep=keep, reporter=reporter)
    code = result.exit_code
    doc = result.to_json()
    if code != 2:
        doc["verdict"] = result.verdict
    out.result(doc, lambda c: _summary(c, result))
    if result.error is not None:
        e = result.error
        out.fail(e["message"], kind=e["kind"], hint=e.get("hint"))
    elif code == 1:
        out.reject("not as expected: " + ", ".join(doc["unexpected"]), kind="UnexpectedOutcome")
    return code


class _Lines:
    """With --json: the story as plain progress lines on stderr."""

    def __init__(self, out: Output) -> None:
        self.out = out

    def chapter(self, number: int, title: str, intro: str) -> None:
        self.out.note(f"== {number}. {title}")

    def step(self, step: Step) -> None:
        stopped = "" if step.completed else " STOPPED HERE"
        self.out.note(f"  {step.title} ({step.seconds:.1f} s){stopped}")
        for line in step.lines:
            self.out.note(f"    {line}")

    def outcome(self, outcome: Outcome) -> None:
        mark = "ok" if outcome.ok else "NOT AS EXPECTED"
        self.out.note(f"  -> {outcome.name}: {mark}: {outcome.observed}")


class _Story:
    """The story for a human: chapters, timed steps, outcomes (rich, on stdout)."""

    def __init__(self, out: Output) -> None:
        self.c = out.console

    def chapter(self, number: int, title: str, intro: str) -> None:
        self.c.print()
        self.c.rule(f"[bold]{number}. {title}", align="left")
        self.c.print(f"[dim]{intro}[/]", highlight=False)

    def step(self, step: Step) -> None:
        mark = "[green]✓[/]" if step.completed else "[bold red]✗[/]"
        self.c.print(f"  {mark} {step.title} [dim]({step.seconds:.1f} s)[/]", highlight=False)
        for line in step.lines:
            self.c.print(f"      {line}", markup=False, highlight=False)

    def outcome(self, outcome: Outcome) -> None:
        if outcome.ok:
            label = "refused" if outcome.kind == "attack" else "as expected"
            self.c.print(f"  [bold green]▶ {label}[/]: {outcome.name}: ", end="", highlight=False)
        else:
            self.c.print(f"  [bold red]▶ NOT AS EXPECTED[/]: {outcome.name}: ", end="")
        self.c.print(outcome.observed, markup=False, highlight=False)


def _summary(c: Console, r: DemoResult) -> None:
    from rich.table import Table  # noqa: PLC0415

    c.print()
    if not r.outcomes:
        c.print(f"[bold red]the demo stopped[/] after {r.seconds:.0f} s, before any outcome")
        return
    t = Table(title="what the demo showed", show_lines=False)
    t.add_column("outcome", no_wrap=True)
    t.add_column("", no_wrap=True)
    t.add_column("what happened")
    for o in r.outcomes:
        t.add_row(
            o.name,
            "[green]✓[/]" if o.ok else "[bold red]✗[/]",
            o.observed if o.ok else f"[bold red]{o.observed}[/]",
        )
    c.print(t)
    where = f"kept in {r.directory}" if r.kept else "temporary directory removed"
    if r.error is not None:
        c.print(f"[bold red]the demo stopped[/] after {r.seconds:.0f} s ({where})")
    elif r.exit_code == 0:
        c.print(
            f"[bold green]all {len(r.outcomes)} expected outcomes happened[/] in "
            f"{r.seconds:.0f} s ({where})"
        )
    else:
        bad = ", ".join(o.name for o in r.outcomes if not o.ok)
        c.print(f"[bold red]not as expected:[/] {bad} ({r.seconds:.0f} s, {where})")
