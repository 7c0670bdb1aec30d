"""verify/ stands alone: only the standard library and PyNaCl, proven two ways.

A static check parses every module's imports; a dynamic check installs PyNaCl
(from pip's configured index) into a fresh virtual environment without system
site packages, copies verify/ alone next to it, and runs a full sign/verify
round trip there. An updater can therefore vendor verify/ without rebuild's
other dependencies (docker, rich, aiohttp).
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

VERIFY = Path(__file__).resolve().parent.parent / "verify"
ALLOWED_THIRD_PARTY = {"nacl", "verify"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_verify_modules_import_only_stdlib_nacl_and_verify() -> None:
    modules = sorted(VERIFY.rglob("*.py"))
    assert modules, "no modules found in verify/"
    offenders = {
        f"{m.relative_to(VERIFY.parent)}: {name}"
        for m in modules
        for name in _imports(m)
        if name not in sys.stdlib_module_names and name not in ALLOWED_THIRD_PARTY
    }
    assert offenders == set()


def test_static_check_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import json\nfrom rebuild.errors import InputError\nimport rich.console\n")
    assert _imports(bad) - sys.stdlib_module_names == {"rebuild", "rich"}


ROUND_TRIP = r"""
import importlib, pkgutil, sys

import verify
for mod in pkgutil.walk_packages(verify.__path__, "verify."):
    importlib.import_module(mod.name)

for forbidden in ("rebuild", "rich", "docker", "aiohttp"):
    try:
        importlib.import_module(forbidden)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{forbidden} is importable: the environment is not isolated")

from verify.keys import SigningKey, VerifierKey
from verify.note import open_note, sign_note
from verify.dsse import verify_envelope
from verify.intoto import (GitSource, ReleasePredicate, Subject, make_statement,
                           sign_statement, verify_statement)
import hashlib

key = SigningKey.generate("standalone.example")
vkey = VerifierKey.parse(key.verifier_key().encode())
assert open_note(sign_note("hello\n", [key]), [vkey]).text == "hello\n"
recipe = "format = 'rebuild-recipe/v1'\n"
statement = make_statement(
    [Subject("a.phar", "0" * 64)],
    ReleasePredicate("a", "1", GitSource("https://git.example.org/a", "v1", "1" * 40),
                     recipe, hashlib.sha256(recipe.encode()).hexdigest()),
)
envelope = sign_statement(statement, [key])
assert verify_statement(envelope, [vkey]).statement == statement
assert verify_envelope(envelope, [vkey]).result.signed == (vkey,)

# PyNaCl itself: nacl, its compiled _sodium and the cffi runtime it needs.
allowed = set(sys.stdlib_module_names) | {"__main__", "verify"}
allowed |= {"nacl", "_sodium", "cffi", "_cffi_backend"}
loaded = {name.split(".")[0] for name in sys.modules}
extra = sorted(loaded - allowed)
if extra:
    raise SystemExit(f"unexpected modules loaded: {extra}")
print("standalone ok")
"""


@pytest.mark.slow
def test_verify_runs_in_a_fresh_venv_with_only_pynacl(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    version = importlib.metadata.version("pynacl")
    # pip (from this environment) installs into the new one, using pip's own
    # configured index; PyNaCl brings its cffi runtime and nothing else.
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         f"pynacl=={version}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    src = tmp_path / "src"
    shutil.copytree(VERIFY, src / "verify", ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(src)}
    result = subprocess.run(
        [str(python), "-c", ROUND_TRIP],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "standalone ok"
