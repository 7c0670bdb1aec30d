"""The shape of the code, measured from its syntax trees (nothing is imported).

Prints, for ``rebuild/`` and ``verify/``:

* the longest functions (lines from ``def`` to the last line of the body,
  nested functions counted in their parent too) and how many exceed 80
  lines, python-tuf's longest;
* import cycles: strongly connected components of the module graph, where a
  module imports what an ``import`` or ``from ... import`` names outside any
  function body (``if TYPE_CHECKING:`` blocks included: a type-only cycle is
  still two modules that cannot be understood apart). ``from X import Y``
  is an edge to ``X`` and, when ``X.Y`` is a module, to ``X.Y``;
* how many functions implement each small parser themselves instead of
  calling the one shared implementation: base64 decoding, ASCII decimals,
  DSSE envelopes, HOST:PORT, and where ``"/out"`` is defined;
* ``verify/``'s public surface: public names, whether ``__all__`` pins it,
  and how many public functions document what they raise.

Usage: ``python benchmarks/code_shape.py [--json] [--top N] [ROOT]``.
The tests (tests/test_code_shape.py) enforce the limits with the same code.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("rebuild", "verify")
MAX_FUNCTION_LINES = 80

# Calls that decode base64 (any module's attribute of that name).
_B64_CALLS = frozenset(
    {"b64decode", "standard_b64decode", "urlsafe_b64decode", "a2b_base64", "decodebytes"}
)
_DIGIT_METHODS = frozenset({"isdigit", "isdecimal", "isnumeric"})
# The shared implementations: a function here is the one allowed to do it.
SHARED_PARSERS = {
    "base64": "verify.parsing",
    "decimal": "verify.parsing",
    "dsse-envelope": "verify.dsse",
    "host-port": "rebuild.listen",
}


@dataclass(frozen=True)
class Function:
    module: str
    qualname: str
    path: str
    line: int
    lines: int

    @property
    def name(self) -> str:
        return f"{self.module}:{self.qualname}"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files(root: Path) -> Iterator[tuple[str, Path, ast.Module]]:
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            yield module_name(root, path), path, tree


def functions(module: str, path: str, tree: ast.AST) -> Iterator[Function]:
    def walk(node: ast.AST, prefix: str) -> Iterator[Function]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                qual = f"{prefix}{child.name}"
                end = child.end_lineno or child.lineno
                yield Function(module, qual, path, child.lineno, end - child.lineno + 1)
                yield from walk(child, f"{qual}.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")
            else:
                yield from walk(child, prefix)

    yield from walk(tree, "")


def module_level_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements that run when the module is imported (not in a def)."""
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            stack.extend(ast.iter_child_nodes(node))


def import_graph(root: Path) -> dict[str, set[str]]:
    trees = {name: (path, tree) for name, path, tree in source_files(root)}
    graph: dict[str, set[str]] = {name: set() for name in trees}
    for name, (path, tree) in trees.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in module_level_imports(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [base]
                targets += [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in trees]
            graph[name].update(t for t in targets if t in trees and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return sorted(out)


def _call_name(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    if isinstance(node.func, ast.Name):
        return node.func.id
    return None


def _mentions_port(fn: ast.AST) -> bool:
    """A name or argument called ``port`` or ``*_port`` (not ``import*``)."""
    names = [n.id for n in ast.walk(fn) if isinstance(n, ast.Name)]
    names += [n.arg for n in ast.walk(fn) if isinstance(n, ast.arg)]
    return any("port" in name.split("_") for name in names)


def _parser_kinds(fn: ast.AST) -> set[str]:
    """Which small parsers this function's body implements itself."""
    kinds: set[str] = set()
    for node in ast.walk(fn):
        if not isinstance(node, ast.Call):
            continue
        name = _call_name(node)
        if name in _B64_CALLS:
            kinds.add("base64")
        elif name in _DIGIT_METHODS:
            kinds.add("decimal")
        elif (
            name in ("rpartition", "rsplit", "partition")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value == ":"
            and _mentions_port(fn)
        ):
            kinds.add("host-port")
    if _reads_field(fn, "payloadType"):
        kinds.add("dsse-envelope")
    return kinds


def parser_implementations(root: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {k: [] for k in SHARED_PARSERS}
    found["/out constant"] = []
    for module, _, tree in source_files(root):
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                # Only the innermost function that does it counts.
                inner = {
                    k
                    for child in ast.walk(node)
                    if child is not node
                    and isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
                    for k in _parser_kinds(child)
                }
                for kind in _parser_kinds(node) - inner:
                    found[kind].append(f"{module}:{node.name}")
            elif (
                isinstance(node, ast.Assign | ast.AnnAssign)
                and isinstance(node.value, ast.Constant)
                and node.value.value == "/out"
            ):
                found["/out constant"].append(f"{module}:{node.lineno}")
    return {k: sorted(v) for k, v in found.items()}


def _reads_field(fn: ast.AST, field: str) -> bool:
    """True when ``fn`` reads ``doc[field]`` or ``doc.get(field)`` (parses, not writes)."""
    for node in ast.walk(fn):
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and isinstance(node.slice, ast.Constant)
            and node.slice.value == field
        ):
            return True
        if (
            isinstance(node, ast.Call)
            and _call_name(node) == "get"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value == field
        ):
            return True
    return False


@dataclass(frozen=True)
class Surface:
    """verify/'s public surface as the syntax shows it."""

    public_names: int
    has_all: bool
    public_functions: int
    raises_undocumented: tuple[str, ...]


def _assigns_all(tree: ast.Module) -> bool:
    for n in tree.body:
        targets = n.targets if isinstance(n, ast.Assign) else []
        targets += [n.target] if isinstance(n, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return True
    return False


def public_surface(root: Path) -> Surface:
    """verify/'s public names, ``__all__`` and Raises documentation."""
    names = 0
    total = 0
    undocumented: list[str] = []
    has_all = False
    for module, _, tree in source_files(root):
        if module == "verify":
            has_all = _assigns_all(tree)
        if not module.startswith("verify") or any(p.startswith("_") for p in module.split(".")):
            continue
        names += sum(
            1
            for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_")
        )
        for qualname, fn in public_functions(tree):
            total += 1
            if not raises_documented(ast.get_docstring(fn) or ""):
                undocumented.append(f"{module}:{qualname}")
    return Surface(names, has_all, total, tuple(sorted(undocumented)))


def raises_documented(doc: str) -> bool:
    """A docstring says what the function raises, or that it raises nothing."""
    return re.search(r"\b[Rr]aises\b", doc) is not None


def public_functions(tree: ast.Module) -> Iterator[tuple[str, ast.FunctionDef]]:
    """Public module-level functions and public methods of public classes."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            yield node.name, node
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and not item.name.startswith("_"):
                    yield f"{node.name}.{item.name}", item


@dataclass(frozen=True)
class Shape:
    functions: int
    longest: tuple[Function, ...]
    over_limit: tuple[Function, ...]
    import_cycles: tuple[tuple[str, ...], ...]
    parsers: dict[str, list[str]]
    verify_surface: Surface

    def to_dict(self) -> dict[str, object]:
        s = self.verify_surface
        return {
            "functions": self.functions,
            "max_function_lines": MAX_FUNCTION_LINES,
            "over_limit": {f.name: f.lines for f in self.over_limit},
            "longest": {f.name: f.lines for f in self.longest},
            "import_cycles": [list(c) for c in self.import_cycles],
            "parsers": self.parsers,
            "verify": {
                "public_names": s.public_names,
                "has___all__": s.has_all,
                "public_functions": s.public_functions,
                "raises_documented": s.public_functions - len(s.raises_undocumented),
                "raises_undocumented": list(s.raises_undocumented),
            },
        }


def all_functions(root: Path) -> list[Function]:
    """Every function in rebuild/ and verify/, longest first."""
    fns = [
        f
        for module, path, tree in source_files(root)
        for f in functions(module, str(path.relative_to(root)), tree)
    ]
    return sorted(fns, key=lambda f: (-f.lines, f.name))


def measure(root: Path, top: int = 15) -> Shape:
    fns = all_functions(root)
    return Shape(
        functions=len(fns),
        longest=tuple(fns[:top]),
        over_limit=tuple(f for f in fns if f.lines > MAX_FUNCTION_LINES),
        import_cycles=tuple(tuple(c) for c in cycles(import_graph(root))),
        parsers=parser_implementations(root),
        verify_surface=public_surface(root),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("root", nargs="?", default=Path(__file__).resolve().parent.parent, type=Path)
    ap.add_argument("--top", type=int, default=15, help="how many of the longest functions")
    ap.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = ap.parse_args()
    shape = measure(args.root, args.top)
    if args.json:
        print(json.dumps(shape.to_dict(), indent=2))
        return
    print(f"functions in {', '.join(PACKAGES)}: {shape.functions}")
    print(f"over {MAX_FUNCTION_LINES} lines: {len(shape.over_limit)}")
    print("longest:")
    for f in shape.longest:
        print(f"  {f.lines:4d}  {f.name}")
    print(f"import cycles: {len(shape.import_cycles)}")
    for c in shape.import_cycles:
        print(f"  {' <-> '.join(c)}")
    print("parser implementations (one shared implementation each is the goal):")
    for kind, where in shape.parsers.items():
        print(f"  {kind:14s} {len(where):2d}  {', '.join(where)}")
    s = shape.verify_surface
    print(
        f"verify/: {s.public_names} public names, __all__ in verify/__init__: {s.has_all}, "
        f"Raises documented on {s.public_functions - len(s.raises_undocumented)} of "
        f"{s.public_functions} public functions"
    )


if __name__ == "__main__":
    main()
