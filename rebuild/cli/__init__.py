"""The ``rebuild`` command line: argument parsing and exit codes.

Exit status: 0 success / accepted / identical; 1 a negative verdict
(mismatch, rejected, invalid signature); 2 usage or operational error. This is
the only place that maps errors to exit codes and the only place that exits.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from rebuild import __version__
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
    "rebuild.cli.verify",
    "rebuild.cli.fleet",
    "rebuild.cli.bundle",
    "rebuild.cli.gate",
    "rebuild.cli.mirror",
    "rebuild.cli.update",
    "rebuild.cli.updater",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_ERROR)


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Output(getattr(args, "json", False))
    try:
        code: int = args.func(args, out)
        return code
    except KeyboardInterrupt:
        out.error("interrupted", kind="interrupted", exit_code=EXIT_ERROR)
        return EXIT_ERROR
    except (NegativeVerdict, TrustError) as e:
        out.error(str(e), kind=type(e).__name__, exit_code=EXIT_NEGATIVE)
        return EXIT_NEGATIVE
    except (RebuildError, FormatError, PassphraseError, VerifyError) as e:
        out.error(str(e), kind=type(e).__name__, exit_code=EXIT_ERROR)
        return EXIT_ERROR


def run() -> None:
    sys.exit(main())
