"""The house: layers that only import downward, and no import circle (inside functions too).

    interfaces (MCP server, facade, CLI)  >  runtime (worker, beat, monitor, embedded broker)
    >  service (operations, policy)  >  stores (persistent formats)
    >  base (app, config, errors, logs, models, demo tasks; and the leaves stores.keys and
       stores.clients, which import nothing of ours)

An import under `if TYPE_CHECKING:` is for types only and never runs: it may point anywhere.
A load through `importlib.import_module` is an import too: the funnel imports every operation's
implementation (`Operation.implemented_in`, read from the table).
The package root (`celery_mcp`: `__version__` and the public names, loaded lazily) sits on top
and may be imported by anyone for `__version__`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from celery_mcp.service.registry import OPERATIONS  # the table: models only, no Celery
from tests.support import ROOT

PACKAGE = ROOT / "celery_mcp"
LEAVES = {"celery_mcp.stores.keys", "celery_mcp.stores.clients"}
LAYERS = {"stores": 1, "service": 2, "runtime": 3, "interfaces": 4}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer(name: str) -> int:
    if name in LEAVES:
        return 0
    parts = name.split(".")
    if name == "celery_mcp" or parts[1:2] == ["__main__"]:
        return 5
    return LAYERS.get(parts[1], 0)


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


#: What each `importlib.import_module(<argument>)` loads of ours, by the argument's last name:
#: the funnel loads every operation's implementation (the table names the modules); app.py
#: loads the user's app, which is not ours.
LOADED = {
    "implemented_in": {op.implemented_in for op in OPERATIONS.values()},
    "module_name": set(),
}


def _loaded_by_name(node: ast.AST) -> str | None:
    """The last name in the argument of an `importlib.import_module(...)` call, else None."""
    if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("import_module"):
        return ast.unparse(node.args[0]).rsplit(".", 1)[-1] if node.args else ""
    return None


def imports(name: str) -> set[str]:
    """The celery_mcp modules `name` imports when it runs (any depth, TYPE_CHECKING aside),
    `importlib.import_module` loads included."""
    tree = ast.parse(MODULES[name].read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        loaded = _loaded_by_name(node)
        if loaded is not None:
            found |= LOADED.get(loaded, set())
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("celery_mcp")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("celery_mcp"):
            base = str(node.module)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imports(name) for name in MODULES}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_point_down_the_layers(name: str) -> None:
    upward = sorted(m for m in GRAPH[name] if layer(m) > layer(name) and m != "celery_mcp")
    assert not upward, f"{name} (layer {layer(name)}) imports {upward}"


def test_leaves_import_nothing_of_ours() -> None:
    assert {leaf: GRAPH[leaf] for leaf in LEAVES} == {leaf: set() for leaf in LEAVES}


def test_nothing_imports_the_front_ends() -> None:
    users = {
        name: sorted(m for m in deps if m.startswith("celery_mcp.interfaces"))
        for name, deps in GRAPH.items()
        if not name.startswith("celery_mcp.interfaces") and layer(name) < 5
    }
    assert not {n: u for n, u in users.items() if u}


def test_every_load_by_name_is_counted() -> None:
    arguments = {
        (name, loaded)
        for name, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if (loaded := _loaded_by_name(node)) is not None
    }
    assert {loaded for _, loaded in arguments} <= set(LOADED), arguments
    assert "celery_mcp.service.diagnose" in GRAPH["celery_mcp.service.funnel"]


def test_no_import_circle() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for dep in GRAPH[node]:
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for name in sorted(GRAPH):
        if name not in index:
            visit(name)
    assert not circles, circles


def _unexplained_imports(path: Path) -> list[str]:
    """Imports inside a function with no comment saying why: none on the import, above its
    run of imports, or opening the function's body."""
    lines = path.read_text().splitlines()
    found = []
    for fn in ast.walk(ast.parse("\n".join(lines))):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        opening = lines[fn.body[0].lineno - 2 : fn.body[0].lineno - 1]  # a comment before it
        for node in ast.walk(fn):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            said = "#" in "".join(lines[node.lineno - 1 : node.end_lineno])
            above = node.lineno - 2
            while not said and above >= 0:
                text = lines[above].strip()
                said = text.startswith("#")
                if not (said or text.startswith(("import ", "from "))):
                    break
                above -= 1
            if not said and not any(line.strip().startswith("#") for line in opening):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {lines[node.lineno - 1]}")
    return found


def test_every_import_inside_a_function_says_why() -> None:
    # an import deferred to a function hides an edge and costs a lookup per call: only for a
    # measured start-up cost (the server answers tools/list before Celery is imported)
    assert [line for path in MODULES.values() for line in _unexplained_imports(path)] == []


def _readme_map() -> set[str]:
    """The files the README's module map ("How it is built") names, as paths: a name ending in
    `/` opens a folder for the lines indented under it, a name ending in `.py` is a file of the
    innermost open folder."""
    section = (ROOT / "README.md").read_text().split("## How it is built", 1)[1]
    block = section.split("```", 2)[1]
    named: set[str] = set()
    folders: list[tuple[int, str]] = []  # (indent, path), innermost last
    for line in block.splitlines():
        indent = len(line) - len(line.lstrip())
        while folders and folders[-1][0] >= indent:
            folders.pop()
        words = [w.strip("`,;:()") for w in line.split()]
        if words and words[0].endswith("/"):
            parent = folders[-1][1] if folders else ""
            folders.append((indent, parent + words[0]))
        where = folders[-1][1] if folders else ""
        named |= {where + w for w in words if w.endswith(".py") and "/" not in w}
    return named


def test_the_readme_map_names_every_module() -> None:
    files = {
        path.relative_to(ROOT).as_posix()
        for path in PACKAGE.rglob("*.py")
        # a package's docstring-only __init__.py is its folder, which the map names
        if not (path.name == "__init__.py" and len(ast.parse(path.read_text()).body) <= 1)
    }
    assert sorted(files - _readme_map()) == []
