"""The rebuild(1) man page, written from the parser (so it says what --help says).

``python -m rebuild.cli._manpage rebuild/cli/rebuild.1`` regenerates the page
shipped in the package (pyproject.toml installs it as share/man/man1/rebuild.1,
where ``man rebuild`` finds it once the environment's bin is on PATH);
tests/test_cli_docs.py fails when the shipped page is not what the current
parser gives. No date in it: the same tree gives the same bytes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rebuild import __version__
from rebuild.cli._args import HelpFormatter, visible_option_strings

_INTRO = """\
.SH EXIT STATUS
.TP
.B 0
success: done, accepted, reproduced, identical, verified
.TP
.B 1
a negative verdict: mismatch, failed, invalid signature, rejected, fork, drift
.TP
.B 2
the command could not do its job: bad usage, an unusable input, a network or
storage failure
.SH JSON OUTPUT
Every command takes
.BR \\-\\-json .
It then prints one JSON object on standard output with the command's fields and
.B format
("rebuild\\-output/v1"),
.B command
(e.g. "log add"),
.B exit_code
and
.B ok
(exit_code is 0); commands that decide give a
.BR verdict ;
an
.B error
object (kind, message, hint) is present exactly when the exit status is 2.
Long\\-running commands print one JSON object per line, events first and the
final object last. The repository's docs/cli.md and docs/cli\\-output.schema.json
describe it in full.
.SH ENVIRONMENT
.TP
.B REBUILD_PASSPHRASE
passphrase of an encrypted secret key file (or the variable named by
.BR \\-\\-passphrase\\-env ).
.TP
.B REBUILD_FLEET_BROKER
default
.B \\-\\-broker
of the fleet commands.
.TP
.B REBUILD_DEBIAN_MIRROR\\fR, \\fBREBUILD_DEBIAN_SECURITY_MIRROR
Debian mirrors for building environments (default: the host's apt sources).
.SH SHELL COMPLETION
.B eval \\(dq$(rebuild completion bash)\\(dq
"""


def _esc(text: str) -> str:
    """Text as troff shows it literally (no requests, escapes or hyphenation breaks)."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    lines = [("\\&" + line) if line.startswith((".", "'")) else line for line in text.split("\n")]
    return "\n".join(lines)


def _leaves(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    from rebuild.cli import commands  # noqa: PLC0415

    found = commands(parser)
    return [
        (" ".join(path), p)
        for path, p in found.items()
        if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)
    ]


def _option(action: argparse.Action, formatter: HelpFormatter) -> str:
    positional = action.metavar if isinstance(action.metavar, str) else action.dest
    names = visible_option_strings(action) or [positional]
    metavar = ""
    if action.option_strings and action.nargs != 0:
        m = action.metavar or action.dest.upper()
        metavar = " " + (" ".join(m) if isinstance(m, tuple) else str(m))
    label = ", ".join(f"\\fB{_esc(n)}\\fR" for n in names) + _esc(metavar)
    help_text = formatter._get_help_string(action) or ""
    if "%(" in help_text:
        help_text = help_text % {"default": action.default, "prog": "rebuild"}
    return f".TP\n{label}\n{_esc(help_text.replace('%%', '%'))}\n"


def render(parser: argparse.ArgumentParser) -> str:
    formatter = HelpFormatter("rebuild")
    out = [
        f'.TH REBUILD 1 "" "rebuild {__version__}" "User Commands"\n',
        ".SH NAME\nrebuild \\- rebuild published artifacts and attest that they reproduce\n",
        ".SH SYNOPSIS\n.B rebuild\n.I COMMAND\n[\\fIOPTIONS\\fR]\n",
        f".SH DESCRIPTION\n{_esc(parser.description or '')}\n",
        _INTRO,
        ".SH COMMANDS\n",
    ]
    for name, p in _leaves(parser):
        usage = " ".join(p.format_usage().split()).removeprefix("usage: ")
        out.append(f".SS {_esc(name)}\n")
        out.append(f".B {_esc(usage)}\n.PP\n{_esc(p.description or '')}\n")
        for action in p._actions:
            if action.help is argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            out.append(_option(action, formatter))
    out.append(".SH SEE ALSO\nThe repository's README.md and docs/ (log.md, verify.md, cli.md).\n")
    return "".join(out)


def main(argv: list[str]) -> int:
    from rebuild.cli import build_parser  # noqa: PLC0415

    text = render(build_parser())
    if argv:
        Path(argv[0]).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
