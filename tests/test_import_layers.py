"""bench/ imports one way: no module imports, at the top or inside a function, one that imports it back.

The imports are read from the source with `ast` (nothing runs), so an import hidden in a function body to
dodge a cycle at import time still counts: the cycle is one of the design, not of the import order.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def module_name(package: Path, path: Path) -> str:
    """`bench/data/beton/write.py` -> bench.data.beton.write; a package's `__init__.py` is the package."""
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(package: Path, path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that the file at `path` imports anywhere in it, its own packages left out.

    `from bench.data import check_name` imports bench.data, `from bench import grid` bench.config.grid: each
    name is taken to the deepest module of `known` it names."""
    me = module_name(package, path)
    here = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from . import x, from ..y import z
                parts = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != me and not me.startswith(name + "."):
                found.add(name)
    return found


def import_graph(package: Path) -> dict[str, set[str]]:
    """module -> the modules of `package` it imports."""
    files = {module_name(package, path): path for path in sorted(package.rglob("*.py"))}
    return {name: imported_modules(package, path, set(files)) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One closed path `a -> b -> ... -> a` per set of modules that import each other (Tarjan's strongly
    connected components of more than one module, each shown as a shortest way around from its first)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                components.append(set(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_way_around(graph, component) for component in components]


def _way_around(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """The shortest closed path through the first module of `component`, inside it (breadth first)."""
    start = min(component)
    came_from = {start: None}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & component):
                if nxt == start:
                    path = [node]
                    while came_from[path[-1]] is not None:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if nxt not in came_from:
                    came_from[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no way around {sorted(component)}")  # a component always has one


def test_bench_has_no_import_cycle():
    found = cycles(import_graph(ROOT / "bench"))
    assert not found, "import cycles in bench/ (imports inside functions count):\n" + "\n".join(
        " -> ".join(cycle) for cycle in found
    )


def test_a_cycle_through_an_import_inside_a_function_is_found_and_named(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("def f():\n    from pkg.sub.top import g\n")
    (package / "sub" / "__init__.py").write_text("from .top import g\n")
    (package / "sub" / "top.py").write_text("from pkg import low\n\ndef g():\n    pass\n")
    (package / "leaf.py").write_text("import pkg.low\n")
    graph = import_graph(package)
    assert graph["pkg.sub"] == {"pkg.sub.top"} and graph["pkg.leaf"] == {"pkg.low"}
    assert cycles(graph) == [["pkg.low", "pkg.sub.top", "pkg.low"]]


def test_a_package_importing_one_way_has_no_cycle(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from pkg.top import g\n")
    (package / "low.py").write_text("X = 1\n")
    (package / "top.py").write_text("from pkg.low import X\n\ndef g():\n    from pkg import low\n")
    graph = import_graph(package)
    assert graph["pkg.top"] == {"pkg.low"} and cycles(graph) == []


# bench/'s layers, lowest first (../shared/spec/design.md, "Layout of bench/"): a module imports only
# from its own layer or those below it. A module's layer is that of the longest name here it starts with.
LAYERS = [
    # the foundations every wing imports; config/names.py is the name rule that method discovery uses
    ("bench.layout", "bench.files", "bench.option", "bench.distributed", "bench.config.names"),
    ("bench.layers", "bench.models"),  # the leaves a rule builds on
    ("bench.local", "bench.method"),  # what a rule author imports
    ("bench.data",),
    ("bench.config",),  # config -> run -> measure -> record -> report, as data flows; the trainer
    ("bench.measure",),  # (run) calls the measures and builds the record, so it stands above both
    ("bench.record",),
    ("bench.run",),
    ("bench.gridrun", "bench.perf", "bench.report"),  # tools on top, and the report on the records
    ("bench.cli", "bench.__main__", "bench"),
]


def layer_of(module: str) -> int:
    matches = [
        (len(name), i)
        for i, names in enumerate(LAYERS)
        for name in names
        if module == name or module.startswith(name + ".")
    ]
    assert matches, f"{module} is in no layer of LAYERS: place it there"
    return max(matches)[1]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
        for a, imported in graph.items()
        for b in imported
        if layer_of(b) > layer_of(a)
    )


def test_bench_imports_only_from_its_own_layer_or_below():
    found = upward_imports(import_graph(ROOT / "bench"))
    assert not found, "imports from a higher layer of bench/:\n" + "\n".join(found)


def test_an_upward_import_is_found_and_named():
    graph = {"bench.record.types": {"bench.run.train"}, "bench.run.train": {"bench.record"}}
    assert upward_imports(graph) == [
        "bench.record.types (layer 6) imports bench.run.train (layer 7)"
    ]


def test_at_most_8_modules_directly_in_bench_and_none_over_300_lines():
    flat = sorted(p.name for p in (ROOT / "bench").glob("*.py"))
    assert len(flat) <= 8, flat
    long = [
        f"{p.relative_to(ROOT)}: {n} lines"
        for p in sorted((ROOT / "bench").rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > 300
    ]
    assert not long, long
