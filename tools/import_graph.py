"""List every import edge between the modules of ``src/aioworkqueue`` and print the cycles.

Every import statement counts, wherever it sits: at module level, inside a function (a lazy
import is still a dependency, only a hidden one), under ``if TYPE_CHECKING:`` (the type checker
follows it, and it pins the two modules together just the same). The layers contract in
``pyproject.toml`` (``lint-imports``) is what CI enforces; this script is for looking.

    python tools/import_graph.py            # the cycles, then a summary
    python tools/import_graph.py --edges    # also every edge, marked [fn] / [tc]
    python tools/import_graph.py --order    # a bottom-to-top order, if there is no cycle

Exit status 1 if there is a cycle.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "aioworkqueue"


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    line: int
    in_function: bool
    type_checking: bool

    def tag(self) -> str:
        return ("[fn]" if self.in_function else "") + ("[tc]" if self.type_checking else "")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


def resolve(importer: str, is_package: bool, level: int, target: str | None) -> str:
    if level == 0:
        return target or ""
    base = importer.split(".")
    if not is_package:
        base.pop()
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(
    node: ast.AST, in_function: bool, type_checking: bool
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, in_function, type_checking
            continue
        fn = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _walk_one(stmt, fn, True)
            for stmt in child.orelse:
                yield from _walk_one(stmt, fn, type_checking)
            continue
        yield from _walk(child, fn, type_checking)


def _walk_one(
    stmt: ast.stmt, in_function: bool, type_checking: bool
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool, bool]]:
    if isinstance(stmt, ast.Import | ast.ImportFrom):
        yield stmt, in_function, type_checking
    else:
        yield from _walk(ast.Module(body=[stmt], type_ignores=[]), in_function, type_checking)


def edges_of(name: str, path: Path, modules: dict[str, Path]) -> Iterator[Edge]:
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"

    def known(candidate: str) -> str | None:
        # ``from .x import y`` names a module when ``x.y`` is one, else the module ``x``.
        while candidate and candidate not in modules:
            candidate = candidate.rpartition(".")[0]
        return candidate or None

    for node, in_function, type_checking in _walk(tree, False, False):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = resolve(name, is_package, node.level, node.module)
            targets = [f"{base}.{alias.name}" for alias in node.names] or [base]
        for target in targets:
            dst = known(target)
            if dst is not None and dst.split(".")[0] == PACKAGE and dst != name:
                yield Edge(name, dst, node.lineno, in_function, type_checking)


def graph() -> tuple[dict[str, Path], list[Edge]]:
    modules = all_modules()
    # One edge per statement and target module (``from .x import a, b`` is one edge).
    edges = list(
        dict.fromkeys(e for name, path in modules.items() for e in edges_of(name, path, modules))
    )
    return modules, edges


def strongly_connected(nodes: list[str], succ: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm; components of more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(succ.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in nodes:
        if v not in index:
            visit(v)
    return out


def short_cycle(comp: list[str], succ: dict[str, set[str]]) -> list[str]:
    """One shortest cycle through the first module of a component (breadth first)."""
    start = comp[0]
    members = set(comp)
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(succ.get(v, set()) & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [*reversed(path), start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return []


def topological(nodes: list[str], succ: dict[str, set[str]]) -> list[str]:
    """Bottom first: a module comes after everything it imports."""
    done: list[str] = []
    seen: set[str] = set()

    def visit(v: str) -> None:
        if v in seen:
            return
        seen.add(v)
        for w in sorted(succ.get(v, ())):
            visit(w)
        done.append(v)

    for v in nodes:
        visit(v)
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", action="store_true", help="print every edge")
    parser.add_argument("--order", action="store_true", help="print a bottom-to-top order")
    args = parser.parse_args()
    modules, edges = graph()
    succ: dict[str, set[str]] = {}
    for e in edges:
        succ.setdefault(e.src, set()).add(e.dst)
    short = {m: m.removeprefix(PACKAGE + ".") for m in modules}
    if args.edges:
        for e in sorted(edges, key=lambda e: (e.src, e.line)):
            print(f"{short[e.src]}:{e.line} -> {short[e.dst]} {e.tag()}")
    comps = strongly_connected(sorted(modules), succ)
    for comp in comps:
        print(f"cycle among {len(comp)} modules: {', '.join(short[m] for m in comp)}")
        print("  e.g. " + " -> ".join(short[m] for m in short_cycle(comp, succ)))
        inner = [e for e in edges if e.src in comp and e.dst in comp]
        hidden = [e for e in inner if e.in_function or e.type_checking]
        print(f"  {len(inner)} edges inside, {len(hidden)} of them in functions or TYPE_CHECKING:")
        for e in sorted(hidden, key=lambda e: (e.src, e.line)):
            print(f"    {short[e.src]}:{e.line} -> {short[e.dst]} {e.tag()}")
    n_fn = sum(e.in_function for e in edges)
    n_tc = sum(e.type_checking for e in edges)
    print(
        f"{len(modules)} modules, {len(edges)} edges ({n_fn} in functions, {n_tc} TYPE_CHECKING),"
        f" {len(comps)} cycle(s)"
    )
    if args.order and not comps:
        for m in topological(sorted(modules), succ):
            print(short[m])
    return 1 if comps else 0


if __name__ == "__main__":
    raise SystemExit(main())
