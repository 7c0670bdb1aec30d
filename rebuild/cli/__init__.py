"""The ``rebuild`` command line: argument parsing and exit codes.

Exit status: 0 success / accepted / identical; 1 a negative verdict
(mismatch, rejected, invalid signature); 2 usage or operational error. This is
the only place that maps errors to exit codes and the only place that exits.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from rebuild import __version__
from rebuild.cli._args import HelpFormatter, renamed_options_used
from rebuild.cli._output import Output
from rebuild.errors import NegativeVerdict, RebuildError
from verify.errors import FormatError, PassphraseError, TrustError, VerifyError

EXIT_OK = 0
EXIT_NEGATIVE = 1
EXIT_ERROR = 2

# Each module registers one top-level subcommand group via ``register(sub)``.
COMMAND_MODULES: tuple[str, ...] = (
    "rebuild.cli.key",
    "rebuild.cli.release",
    "rebuild.cli.witness",
    "rebuild.cli.diff",
    "rebuild.cli.env",
    "rebuild.cli.log",
    "rebuild.cli.verify_cmd",
    "rebuild.cli.fetch",
    "rebuild.cli.completion",
    "rebuild.cli.fleet",
    "rebuild.cli.bundle",
    "rebuild.cli.gate",
    "rebuild.cli.mirror",
    "rebuild.cli.update",
    "rebuild.cli.updater",
    "rebuild.cli.demo",
)


class _UsageFailure(Exception):
    """argparse refused the command line (raised by :meth:`_Parser.error`)."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageFailure(self, message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rebuild",
        description=(
            "Rebuild published artifacts from source in pinned containers, compare them "
            "bit for bit, attest the result to an append-only log, and gate updates on "
            "a quorum of attestations. Exit status: 0 success, 1 negative verdict, "
            "2 usage or operational error."
        ),
    )
    parser.add_argument("--version", action="version", version=f"rebuild {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for path, p in commands(parser).items():
        p.set_defaults(command_name=" ".join(path))
    return parser


def commands(parser: argparse.ArgumentParser) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every command and sub-command of ``parser``, parents first: ``("log",), ("log", "add")``.

    The start-up test and benchmark walk this, so a command added later is
    covered without being named anywhere.
    """
    found: dict[tuple[str, ...], argparse.ArgumentParser] = {}

    def walk(p: argparse.ArgumentParser, prefix: tuple[str, ...]) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                walked: set[int] = set()
                for name, child in action.choices.items():
                    if id(child) not in walked:  # an alias names a parser already walked
                        walked.add(id(child))
                        found[(*prefix, name)] = child
                        walk(child, (*prefix, name))

    walk(parser, ())
    return found


def _command_of(parser: argparse.ArgumentParser) -> str:
    """``"log add"`` from the prog ``"rebuild log add"`` of the parser that failed."""
    return " ".join(parser.prog.split()[1:])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        command = getattr(args, "command_name", "")
        leaf = commands(parser).get(tuple(command.split()))
        if extra:
            # Name the command the stray arguments were given to, not "rebuild".
            (leaf or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    except _UsageFailure as e:
        return _usage_error(e, json_mode="--json" in argv)
    out = Output(getattr(args, "json", False), command)
    for warning in renamed_options_used(leaf, argv) if leaf is not None else ():
        out.note(warning)
    code = EXIT_ERROR
    try:
        code = args.func(args, out)
    except KeyboardInterrupt:
        out.error("interrupted", kind="Interrupted", exit_code=EXIT_ERROR)
        code = EXIT_ERROR
    except (NegativeVerdict, TrustError) as e:
        out.error(str(e), kind=type(e).__name__, exit_code=EXIT_NEGATIVE)
        code = EXIT_NEGATIVE
    except (RebuildError, FormatError, PassphraseError, VerifyError) as e:
        out.error(str(e), kind=type(e).__name__, exit_code=EXIT_ERROR, hint=_hint(e))
        code = EXIT_ERROR
    out.finish(code, negative_verdict=getattr(args, "negative_verdict", "rejected"))
    return code


def _hint(e: Exception) -> str | None:
    hint = getattr(e, "hint", None)
    return hint if isinstance(hint, str) else None


def _usage_error(e: _UsageFailure, *, json_mode: bool) -> int:
    e.parser.print_usage(sys.stderr)
    sys.stderr.write(f"{e.parser.prog}: error: {e.message}\n")
    if json_mode:
        out = Output(True, _command_of(e.parser))
        out.fail(e.message, kind="UsageError", hint=f"see: {e.parser.prog} --help", quiet=True)
        out.finish(EXIT_ERROR)
    return EXIT_ERROR


def run() -> None:
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``| head``, a closed jq): say nothing more, and
        # keep Python from complaining about the flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_ERROR
    sys.exit(code)
