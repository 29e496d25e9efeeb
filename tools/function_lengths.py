"""List the functions in src/nextclass longer than a limit (default 60 lines); exit 1 if any.

Usage: python tools/function_lengths.py [--limit 60] [--params 6]

Counts the lines from ``def`` to the function's last line, docstring included (what a reader scrolls
through). ``--params`` also lists functions taking more than that many parameters (self/cls, *args and
**kwargs not counted).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "nextclass"


def functions(root: Path = ROOT):
    """(path, qualified name, lines, parameters) of every function under ``root``."""
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        stack = [(tree, "")]
        while stack:
            node, prefix = stack.pop()
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    a = child.args
                    params = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg not in ("self", "cls")]
                    name = f"{prefix}{child.name}"
                    yield path.relative_to(root.parent), name, child.end_lineno - child.lineno + 1, len(params)
                    stack.append((child, name + "."))
                elif isinstance(child, ast.ClassDef):
                    stack.append((child, f"{prefix}{child.name}."))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--params", type=int, default=None)
    args = ap.parse_args(argv)
    rows = list(functions())
    long = sorted((r for r in rows if r[2] > args.limit), key=lambda r: -r[2])
    for path, name, n, _ in long:
        print(f"{n:4d} lines  {path}::{name}")
    many = sorted((r for r in rows if args.params is not None and r[3] > args.params), key=lambda r: -r[3])
    for path, name, _, p in many:
        print(f"{p:4d} params {path}::{name}")
    print(f"{len(rows)} functions, longest {max(r[2] for r in rows)} lines; {len(long)} over {args.limit}"
          + (f"; {len(many)} with more than {args.params} parameters" if args.params is not None else ""))
    return 1 if long or many else 0


if __name__ == "__main__":
    sys.exit(main())
