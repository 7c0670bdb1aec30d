"""verify/ stands alone: only the standard library and PyNaCl, proven two ways.

A static check parses every module's imports; a dynamic check installs PyNaCl
(from pip's configured index) into a fresh virtual environment without system
site packages, copies verify/ alone next to it, and runs a full sign/verify
round trip there. An updater can therefore vendor verify/ without rebuild's
other dependencies (docker, rich, aiohttp). Modules the interpreter loads
before verify is imported (Debian's sitecustomize, a coverage hook) are not
verify's imports; the check counts only what importing verify adds.
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

from tests.indexutil import require_package_index

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
import sys

# What the interpreter loaded before verify is imported (site, Debian's
# sitecustomize, a coverage hook) is not an import of verify's.
at_start = set(sys.modules)

import importlib, pkgutil

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
loaded = {name.split(".")[0] for name in set(sys.modules) - at_start}
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
    if install.returncode != 0:
        require_package_index("pynacl")  # offline: says so, rather than pip's last words
    assert install.returncode == 0, install.stderr
    # Like Debian's python3 (its sitecustomize) or a coverage hook, this
    # interpreter loads a module outside the standard library at start-up, on
    # every CPython: that is not an import of verify's and must not count.
    site_packages = next((venv / "lib").glob("python3*/site-packages"))
    (site_packages / "startup_hook.py").write_text("STARTED = True\n")
    (site_packages / "startup_hook.pth").write_text("import startup_hook\n")
    src = tmp_path / "src"
    shutil.copytree(VERIFY, src / "verify", ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(src)}

    def round_trip() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(python), "-c", ROUND_TRIP],
            cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip

    result = round_trip()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "standalone ok"
    # The same check sees a module verify itself pulls in from outside.
    (src / "leaky_dependency.py").write_text("")
    (src / "verify" / "_leak.py").write_text("import leaky_dependency\n")
    leaked = round_trip()
    assert leaked.returncode == 1
    assert "unexpected modules loaded: ['leaky_dependency']" in leaked.stderr
