"""The CLI starts fast: building the parser loads no heavy library.

Every ``rebuild ... --help`` the parser has (walked with
:func:`rebuild.cli.commands`, so commands added later are covered without
being named here) runs in a fresh interpreter, which reports the modules it
loaded. None may be on the deny list (libraries that cost tens to hundreds
of milliseconds: the Docker SDK, HTTP stacks, rich, asyncio, brokers), and
none may come from outside the standard library, ``rebuild``, ``verify`` and
PyNaCl. ``--json`` output never loads rich, and ``rebuild log add`` loads
neither rich (with --json) nor a server or container library. The time budget
itself (300 ms) is measured by benchmarks/bench_cli_start.py, not here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rebuild.cli import build_parser, commands
from tests.logutil import PYTHON, cli_env, envelope, make_key, start_log

# Top-level packages that must never load while the parser is built.
HEAVY = frozenset(
    {
        "aiohttp",
        "asyncio",
        "celery",
        "certifi",
        "charset_normalizer",
        "docker",
        "dramatiq",
        "httpx",
        "multidict",
        "prometheus_client",
        "redis",
        "requests",
        "rich",
        "urllib3",
        "uvloop",
        "yarl",
    }
)
# What building the parser may load: the stdlib, our two packages, and PyNaCl
# (verify/ needs it; it costs about 10 ms) with its compiled parts.
ALLOWED_OUTSIDE_STDLIB = frozenset({"rebuild", "verify", "nacl", "_cffi_backend", "_sodium"})

# Runs rebuild.cli.main(argv) as `rebuild` would and prints, on the real stdout,
# the exit status, what the command printed and the modules loaded since the
# interpreter started (so a sitecustomize or .pth import does not count).
PROBE = """
import contextlib, io, json, sys
before = set(sys.modules)
from rebuild.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = main(sys.argv[1:])
    except SystemExit as e:
        code = e.code
loaded = sorted(set(sys.modules) - before)
sys.stdout.write(json.dumps({"code": code, "stdout": out.getvalue(), "modules": loaded}))
"""


def probe(*argv: str) -> tuple[int, str, list[str]]:
    proc = subprocess.run(
        [PYTHON, "-c", PROBE, *argv],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    doc = json.loads(proc.stdout)
    return doc["code"], doc["stdout"], doc["modules"]


def top_level(modules: list[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def outside_allowed(modules: list[str]) -> set[str]:
    return {
        name
        for name in top_level(modules)
        if name not in sys.stdlib_module_names
        and name not in ALLOWED_OUTSIDE_STDLIB
        and not name.startswith("_sysconfigdata")  # sysconfig's per-platform data module
    }


def every_command() -> Iterator[tuple[str, ...]]:
    yield ()
    yield from commands(build_parser())


def test_the_walk_finds_nested_commands() -> None:
    found = set(every_command())
    assert {(), ("log",), ("log", "add"), ("env", "check"), ("verify",)} <= found


@pytest.mark.parametrize("path", list(every_command()), ids=lambda p: " ".join(p) or "rebuild")
def test_help_loads_no_heavy_library(path: tuple[str, ...]) -> None:
    code, text, modules = probe(*path, "--help")
    assert code == 0
    assert text.startswith(f"usage: {' '.join(['rebuild', *path])}")
    assert top_level(modules) & HEAVY == set()
    assert outside_allowed(modules) == set()


def test_json_output_never_loads_rich(tmp_path: Path) -> None:
    code, text, modules = probe(
        "key", "generate", "alice.example", "--out", str(tmp_path / "alice.key"), "--json"
    )
    assert code == 0
    assert json.loads(text)["name"] == "alice.example"
    assert "rich" not in top_level(modules)


def test_json_error_never_loads_rich(tmp_path: Path) -> None:
    code, text, modules = probe("key", "show", str(tmp_path / "missing.key"), "--json")
    assert code == 2
    assert json.loads(text)["exit_code"] == 2
    assert "rich" not in top_level(modules)


def test_json_error_line_is_what_rich_prints(tmp_path: Path) -> None:
    """Without rich, a JSON-mode diagnostic still drops the control characters rich drops
    (bell, backspace, vertical tab, form feed, carriage return from an attacker's file name)."""
    missing = str(tmp_path / "x\x07\x08\x0b\x0c\ry.key")
    env = cli_env()
    env.pop("FORCE_COLOR", None)  # rich would then style the human line
    lines = []
    for extra in ([], ["--json"]):
        proc = subprocess.run(
            [PYTHON, "-m", "rebuild", "key", "show", missing, *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 2
        lines.append(proc.stderr)
    human, plain = lines
    assert plain == human
    assert str(tmp_path / "xy.key") in plain


def test_log_add_loads_no_server_or_ui_library(tmp_path: Path) -> None:
    key = make_key(tmp_path, "log.example")
    entry = tmp_path / "entry.json"
    entry.write_bytes(envelope("startup"))
    server = start_log(tmp_path / "log", key, tmp_path / "serve.out", "--workers", "0")
    try:
        code, text, modules = probe("log", "add", "--log", server.url, str(entry), "--json")
    finally:
        server.stop()
    assert code == 0
    assert json.loads(text)["index"] == 0
    assert top_level(modules) & HEAVY == set()
    assert outside_allowed(modules) == set()


def test_every_public_compare_name_loads_on_first_use() -> None:
    """rebuild.compare loads its names lazily (so ``rebuild diff --help`` stays cheap):
    importing it loads no comparator, and every name in ``__all__`` still resolves to
    the object its module defines (a name missing from the lazy map would not)."""
    script = """
import importlib, json, sys
import rebuild.compare as api
eager = sorted(m for m in sys.modules if m.startswith("rebuild.compare."))
wrong = [n for n in api.__all__
         if getattr(api, n) is not getattr(importlib.import_module(
             "rebuild.compare." + api._HOME[n]), n)]
print(json.dumps({"eager": eager, "wrong": wrong, "count": len(api.__all__)}))
"""
    proc = subprocess.run(
        [PYTHON, "-c", script],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["eager"] == []
    assert doc["wrong"] == []
    assert doc["count"] > 0
