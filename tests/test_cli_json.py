"""Every command's ``--json`` output has the one shape docs/cli.md promises.

The commands are discovered from the parser, never listed by hand: a
command that lands later is checked by the tests here without being named.
Real runs of each one are in tests/test_cli_scenarios.py, whose
``test_every_command_has_a_scenario`` fails for a command without one.
"""

from __future__ import annotations

import argparse

import pytest

from rebuild.cli import build_parser, commands, main
from tests import clijson


def leaf_commands() -> list[tuple[str, ...]]:
    """Every command that runs something (no further sub-commands)."""
    found = commands(build_parser())
    return sorted(
        path
        for path, p in found.items()
        if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)
    )


LEAVES = leaf_commands()


def _name(path: tuple[str, ...]) -> str:
    return " ".join(path)


def test_the_walk_finds_the_commands() -> None:
    assert {("log", "add"), ("verify",), ("key", "generate"), ("diff",)} <= set(LEAVES)


@pytest.mark.parametrize("path", LEAVES, ids=_name)
def test_every_command_takes_json(path: tuple[str, ...]) -> None:
    parser = commands(build_parser())[path]
    assert "--json" in parser._option_string_actions, f"rebuild {_name(path)} has no --json"


@pytest.mark.parametrize("path", LEAVES, ids=_name)
def test_a_usage_error_with_json_is_an_error_envelope(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*path, "--no-such-option", "--json"]) == 2
    cap = capsys.readouterr()
    doc = clijson.envelope(cap.out, 2, _name(path))
    assert doc["error"]["kind"] == "UsageError"
    assert doc["error"]["message"]
    assert f"rebuild {_name(path)} --help" in doc["error"]["hint"]
    assert "usage:" in cap.err


def test_an_unknown_command_with_json_is_an_error_envelope(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["no-such-command", "--json"]) == 2
    doc = clijson.envelope(capsys.readouterr().out, 2, "")
    assert doc["error"]["kind"] == "UsageError" and "no-such-command" in doc["error"]["message"]


def test_a_usage_error_without_json_prints_no_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["log", "add"]) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    assert "the following arguments are required" in cap.err


@pytest.mark.parametrize("path", sorted(commands(build_parser())), ids=_name)
def test_every_command_and_option_is_described(path: tuple[str, ...]) -> None:
    parser = commands(build_parser())[path]
    assert parser.description, f"rebuild {_name(path)} has no description"
    for action in parser._actions:
        if action.option_strings and action.help is not argparse.SUPPRESS:
            assert action.help, f"rebuild {_name(path)} {action.option_strings[0]} has no help"
