"""verify/ may import only the standard library, PyNaCl and itself: an
updater must be able to vendor it without pulling in the producer side."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

VERIFY = Path(__file__).resolve().parent.parent / "verify"


def test_verify_imports_only_stdlib_nacl_and_itself() -> None:
    allowed = set(sys.stdlib_module_names) | {"nacl", "verify", "__future__"}
    offenders = []
    files = sorted(VERIFY.glob("*.py"))
    assert files
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] not in allowed]
    assert offenders == []
