"""Shared argparse pieces: the help formatter, renamed options, common options.

One name per meaning across every command (docs/cli.md lists them): ``--log
URL`` is always the audit log's URL, ``--log-key VKEY`` its verifier key,
``--maintainer-key PUB`` a maintainer's verifier key, ``--key K`` this
command's own secret key, ``--X-ca-bundle F`` the CA bundle for reaching X.
An old spelling stays accepted for a release as a *hidden alias*: it works,
is left out of ``--help``, the man page and completion, and using it prints
a warning naming the new spelling.

Standard library only: this is imported on every start-up.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

# Attribute set on an action: the option strings that are hidden aliases.
_HIDDEN = "rebuild_hidden_aliases"
# Attribute set on a parser: {old spelling: new spelling}.
_RENAMED = "rebuild_renamed_options"


def visible_option_strings(action: argparse.Action) -> list[str]:
    hidden: set[str] = getattr(action, _HIDDEN, set())
    return [s for s in action.option_strings if s not in hidden]


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, plus: every option's default, no hidden aliases."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            action.help is argparse.SUPPRESS
            or not action.option_strings
            or default in (None, False, argparse.SUPPRESS, [], ())
            or isinstance(action, argparse._HelpAction | argparse._VersionAction)
            or "default" in text.lower()
        ):
            return action.help
        shown = ", ".join(map(str, default)) if isinstance(default, list | tuple) else default
        return f"{text} (default: {str(shown).replace('%', '%%')})".strip()

    def _format_action_invocation(self, action: argparse.Action) -> str:
        hidden = getattr(action, _HIDDEN, None)
        if not hidden:
            return super()._format_action_invocation(action)
        original = action.option_strings
        action.option_strings = visible_option_strings(action)
        try:
            return super()._format_action_invocation(action)
        finally:
            action.option_strings = original


def renamed(parser: argparse.ArgumentParser, new: str, *old: str) -> None:
    """Accept each ``old`` spelling as a hidden alias of the option ``new``."""
    action = parser._option_string_actions[new]
    hidden: set[str] = getattr(action, _HIDDEN, set())
    table: dict[str, str] = getattr(parser, _RENAMED, {})
    for spelling in old:
        if spelling in parser._option_string_actions:
            raise ValueError(f"{spelling} already names an option of {parser.prog}")
        action.option_strings = [*action.option_strings, spelling]
        parser._option_string_actions[spelling] = action
        hidden.add(spelling)
        table[spelling] = new
    setattr(action, _HIDDEN, hidden)
    setattr(parser, _RENAMED, table)


def renamed_options_used(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """Warnings for the old spellings that ``argv`` used on ``parser``."""
    table: dict[str, str] = getattr(parser, _RENAMED, {})
    used: list[str] = []
    for arg in argv:
        if arg == "--":
            break
        spelling = arg.split("=", 1)[0]
        if spelling in table:
            used.append(f"warning: {spelling} is now {table[spelling]}; the old name will go")
    return list(dict.fromkeys(used))


def add_ca_bundle(
    parser: argparse.ArgumentParser, peer: str, reaching: str, *, old: str | None = None
) -> None:
    """``--PEER-ca-bundle F``: the CA bundle for reaching ``reaching`` (one name per meaning);
    ``old`` is a former spelling kept as a hidden alias."""
    option = f"--{peer}-ca-bundle"
    parser.add_argument(
        option,
        type=Path,
        metavar="F",
        help=f"CA bundle (PEM) to check {reaching}'s certificates (default: the system's)",
    )
    if old is not None:
        renamed(parser, option, old)
