"""--help, the man page and shell completion tell the truth about every command.

All three are made from the parser; the commands are discovered from it, so
one added later is covered here without being named.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import pytest

from rebuild.cli import build_parser, commands
from rebuild.cli._args import HelpFormatter, visible_option_strings
from rebuild.cli._manpage import render
from tests.logutil import PYTHON, cli_env

REPO = Path(__file__).resolve().parent.parent
MAN_PAGE = REPO / "rebuild" / "cli" / "rebuild.1"

PARSERS = commands(build_parser())
LEAVES = sorted(
    path
    for path, p in PARSERS.items()
    if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)
)


def _name(path: tuple[str, ...]) -> str:
    return " ".join(path)


@pytest.mark.parametrize("path", LEAVES, ids=_name)
def test_every_option_s_help_shows_its_default(path: tuple[str, ...]) -> None:
    formatter = HelpFormatter("rebuild")
    for action in PARSERS[path]._actions:
        if not action.option_strings or action.help is argparse.SUPPRESS:
            continue
        if action.default in (None, False, argparse.SUPPRESS, []):
            continue
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        text = formatter._get_help_string(action) or ""
        assert "default" in text.lower(), (_name(path), action.option_strings, text)


def test_the_shipped_man_page_is_the_current_parser_s() -> None:
    assert MAN_PAGE.read_text() == render(build_parser()), (
        "rebuild/cli/rebuild.1 is stale: regenerate it with "
        "python -m rebuild.cli._manpage rebuild/cli/rebuild.1"
    )


@pytest.mark.parametrize("path", LEAVES, ids=_name)
def test_the_man_page_documents_every_command_and_option(path: tuple[str, ...]) -> None:
    page = render(build_parser())
    section = page.split(f".SS {_name(path).replace('-', chr(92) + '-')}\n", 1)
    assert len(section) == 2, f"no section for rebuild {_name(path)}"
    body = section[1].split("\n.SS ", 1)[0]
    for action in PARSERS[path]._actions:
        if action.help is argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        for opt in visible_option_strings(action):
            assert opt.replace("-", "\\-") in body, (_name(path), opt)
        hidden = set(action.option_strings) - set(visible_option_strings(action))
        for opt in hidden:  # a renamed option's old spelling is not advertised
            assert f"\\fB{opt.replace('-', chr(92) + '-')}\\fR" not in body


def _complete(*words: str) -> list[str]:
    script = subprocess.run(
        [PYTHON, "-m", "rebuild", "completion", "bash"],
        env=cli_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    probe = (
        f"{script}\nCOMP_WORDS=({' '.join(repr(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n_rebuild\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n"
    )
    r = subprocess.run(
        ["bash", "-c", probe], check=False, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and not r.stderr, r.stderr
    return r.stdout.split()


def test_bash_completion_completes_commands_and_options_from_the_parser() -> None:
    assert _complete("rebuild", "lo") == ["log"]
    assert "find" in _complete("rebuild", "log", "")
    assert _complete("rebuild", "log", "add", "--wait-t") == ["--wait-timeout"]
    assert _complete("rebuild", "witness", "serve", "--log") == ["--log-key"]  # not the alias
    every_top = {p[0] for p in LEAVES}
    assert every_top <= set(_complete("rebuild", ""))


def test_bash_completion_completes_file_names_after_an_option_that_takes_one(
    tmp_path: Path,
) -> None:
    (tmp_path / "policy.txt").write_text("")
    assert _complete("rebuild", "log", "verify-proof", "--policy", str(tmp_path / "pol")) == [
        str(tmp_path / "policy.txt")
    ]
