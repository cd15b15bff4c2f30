"""The package reads like its flow, and stays so: short modules and functions, and no import
cycle among the modules (read from the source, not by importing it)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "vsrpp_cli"
MOST_LINES = 400
MOST_FUNCTION_LINES = 60
# The CLI's declarative option lists and the Triton kernel are long by nature.
LONG_BY_NATURE = {"cli/definition/upscaling.py", "cli/definition/models.py", "network/deform_conv_triton.py"}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def test_no_long_module_or_function():
    long = []
    for path in modules().values():
        name = path.relative_to(PACKAGE).as_posix()
        source = path.read_text()
        if len(source.splitlines()) > MOST_LINES:
            long.append(f"{name}: {len(source.splitlines())} lines")
        if name in LONG_BY_NATURE:
            continue
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MOST_FUNCTION_LINES:
                    long.append(f"{name}: {node.name}() {length} lines")
    assert not long


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `name` imports, when it is loaded or later inside a function
    (a late import that only dodges a cycle is a cycle all the same)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom) or not node.level:
            continue
        base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
        for alias in node.names:
            submodule = f"{target}.{alias.name}"
            found.add(submodule if submodule in known else target)
    return found & known - {name}


def test_no_import_cycle():
    known = modules()
    graph = {name: imports_of(name, path, set(known)) for name, path in known.items()}
    # A package's __init__ may gather its own modules (cli.definition registers its commands).
    graph = {n: {m for m in deps if not (n.startswith(m + ".") and known[m].name == "__init__.py")}
             for n, deps in graph.items()}  # fmt: skip
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(name) :], name]))
        if name in done:
            return
        for dependency in sorted(graph[name]):
            visit(dependency, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
