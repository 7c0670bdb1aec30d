"""Architectural limits, measured from the syntax trees by benchmarks/code_shape.py.

* No function in rebuild/ or verify/ is longer than 80 lines (python-tuf's
  longest is 80): a longer one mixes jobs and hides its state.
* No import cycle between modules of rebuild/ and verify/: two modules that
  import each other cannot be read, tested or loaded apart.

``WAITING`` lists the functions still over the limit and ``CYCLES_WAITING``
the cycles still open, each with the area whose work in progress holds it:
they are split once that work has landed. Nothing may be added to either.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from benchmarks.code_shape import (
    MAX_FUNCTION_LINES,
    all_functions,
    cycles,
    import_graph,
)

ROOT = Path(__file__).resolve().parent.parent

# function -> the area (and branch) it waits for
WAITING: dict[str, str] = {}

CYCLES_WAITING: dict[tuple[str, ...], str] = {}


def test_no_function_is_longer_than_80_lines() -> None:
    too_long = [f for f in all_functions(ROOT) if f.lines > MAX_FUNCTION_LINES]
    new = [f"{f.path}:{f.line} {f.qualname} ({f.lines} lines)" for f in too_long]
    new = [n for n, f in zip(new, too_long, strict=True) if f.name not in WAITING]
    assert new == [], "split these functions into named steps:\n" + "\n".join(new)


def test_no_import_cycle() -> None:
    found = [tuple(c) for c in cycles(import_graph(ROOT))]
    new = [" <-> ".join(c) for c in found if c not in CYCLES_WAITING]
    assert new == [], "modules that import each other:\n" + "\n".join(new)


def test_the_waiting_lists_hold_only_what_is_still_open() -> None:
    """A function split or a cycle broken leaves the list, so the list stays true."""
    long = {f.name for f in all_functions(ROOT) if f.lines > MAX_FUNCTION_LINES}
    found = {tuple(c) for c in cycles(import_graph(ROOT))}
    assert sorted(set(WAITING) - long) == []
    assert sorted(set(CYCLES_WAITING) - found) == []


def test_the_measurement_sees_a_long_function_and_a_cycle(tmp_path: Path) -> None:
    """The checks above can fail: a made-up tree with both faults is caught."""
    pkg = tmp_path / "rebuild"
    pkg.mkdir()
    (tmp_path / "verify").mkdir()
    (pkg / "__init__.py").write_text("")
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (pkg / "a.py").write_text(f"from rebuild import b\n\n\ndef long():\n{body}\n")
    (pkg / "b.py").write_text(
        textwrap.dedent(
            """
            from typing import TYPE_CHECKING

            if TYPE_CHECKING:
                from rebuild.a import long


            def short() -> None:
                from rebuild import lazy  # inside a function: not a cycle
            """
        )
    )
    (pkg / "lazy.py").write_text("import rebuild.a\n")
    lengths = {f.name: f.lines for f in all_functions(tmp_path)}
    assert lengths["rebuild.a:long"] == MAX_FUNCTION_LINES + 1
    assert cycles(import_graph(tmp_path)) == [["rebuild.a", "rebuild.b"]]
