"""The package's import graph: arrows point down the layers only, and there is no circle.

Every `import` / `from ... import` of every module (also those inside functions) is read from the
source, resolved to the expstore module it names, and checked against the layer rules below; the
checker itself is tested on made-up sources, so that a rule that could never fire is noticed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "expstore"

# layer -> the layers its modules may import (besides their own)
MAY_IMPORT: dict[str, set[str]] = {
    "errors": set(),
    "format": {"errors"},
    "store": {"errors", "format"},
    "backends": {"errors", "format", "store"},
    "checkpointing": {"errors", "format", "store"},
    "experiment_logger": {"errors", "format", "store", "catalog"},
    "data_export": {"errors", "format", "store"},
    "runs": {"errors", "format", "store", "experiment_logger", "checkpointing", "data_export"},  # a run composes them
    "cli": {"errors", "format", "store", "checkpointing", "experiment_logger", "data_export", "runs", "catalog", "ui"},
    "integrations": {"errors", "format", "store", "checkpointing", "experiment_logger"},  # adapters speak to facades
    "catalog": {"errors", "format", "store"},  # an index of what the loggers write; loggers push to it
    "ui": {"errors", "format", "store", "checkpointing", "experiment_logger", "catalog"},  # reads what the others write
    "sharding": {"checkpointing"},  # the re-export of ShardedArray under its first import path
    "expstore": {"errors", "store"},  # the package's own __init__: errors and open_store
    "__main__": {"cli"},
}
FACADES = {"checkpointing", "experiment_logger", "data_export", "runs"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "expstore"


def imports_of(module: str, source: str, is_package: bool) -> Iterable[tuple[int, str, list[str]]]:
    """(line, absolute module, imported names) of each expstore import in `source`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "expstore":
                    yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "expstore":
                yield node.lineno, target, [alias.name for alias in node.names]


def problems_of(module: str, source: str, is_package: bool, known_modules: set[str]) -> list[str]:
    """What breaks the layer rules in one module's source."""
    found = []
    own = layer_of(module)
    for line, target, names in imports_of(module, source, is_package):
        where = f"{module}:{line} imports {target}"
        # `from pkg import sub` names a module: check the module it names
        targets = [f"{target}.{n}" for n in names if f"{target}.{n}" in known_modules] or [target]
        private_names = [n for n in names if n.startswith("_") and f"{target}.{n}" not in known_modules]
        if private_names and target != module:
            found.append(f"{where}: private name(s) {private_names} of another module")
        for imported in targets:
            other = layer_of(imported)
            if other == own:
                continue
            if other not in MAY_IMPORT.get(own, set()):
                found.append(f"{where}: layer {own!r} may not import layer {other!r}")
            if own in FACADES | {"cli"} and other == "backends":
                found.append(f"{where}: a facade imports a backend module")
            private_modules = [p for p in imported.split(".") if p.startswith("_") and p != "__main__"]
            if private_modules:
                found.append(f"{where}: private module {imported} of another layer")
    return found


def package_sources() -> dict[str, tuple[str, bool]]:
    return {module_name(p): (p.read_text(), p.name == "__init__.py") for p in sorted(PACKAGE_ROOT.rglob("*.py"))}


def module_level_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """module -> the expstore modules it imports when it is imported (top-level statements only)."""
    graph: dict[str, set[str]] = {}
    known = set(sources)
    for module, (source, is_package) in sources.items():
        tree = ast.parse(source)
        top = ast.Module(body=[n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], type_ignores=[])
        edges = set()
        for _, target, names in imports_of(module, ast.unparse(top), is_package):
            named = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
            edges.update(named or ([target] if target in known else []))
        graph[module] = edges - {module}
    return graph


def cycles_of(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def without_package_inits(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's `__init__` re-exports its modules; a module importing its own package's siblings
    through it is no circle of code. Edges from a package to its own submodules are dropped."""
    return {m: {t for t in edges if not t.startswith(m + ".")} for m, edges in graph.items()}


def test_every_import_points_down_the_layers():
    sources = package_sources()
    known = set(sources)
    problems = [p for m, (src, pkg) in sources.items() for p in problems_of(m, src, pkg, known)]
    assert problems == []


def test_the_module_import_graph_has_no_circle():
    assert cycles_of(without_package_inits(module_level_graph(package_sources()))) == []


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("expstore.format.tree", "from ..store.base import Store\n", "layer 'format' may not import layer 'store'"),
        ("expstore.store.keys", "def f():\n    from ..checkpointing import CheckpointManager\n", "may not import layer 'checkpointing'"),
        ("expstore.checkpointing.manager", "from ..backends.local import LocalStore\n", "a facade imports a backend module"),
        ("expstore.runs", "from .experiment_logger.sink import _Sink\n", "private name(s) ['_Sink']"),
        ("expstore.checkpointing.manager", "from .names import _PART_RE\n", "private name(s) ['_PART_RE'] of another module"),
        ("expstore.cli.browse", "import expstore.backends.s3\n", "layer 'cli' may not import layer 'backends'"),
    ],
)
def test_the_checker_reports_a_forbidden_import(module, source, expected):
    known = set(package_sources())
    assert any(expected in p for p in problems_of(module, source, False, known))


def test_the_checker_finds_a_circle():
    graph = {"expstore.a": {"expstore.b"}, "expstore.b": {"expstore.c"}, "expstore.c": {"expstore.a"}, "expstore.d": set()}
    assert cycles_of(graph) == [["expstore.a", "expstore.b", "expstore.c"]]


def exported_names(source: str) -> set[str] | None:
    """The names a module's `__all__` lists (None when it has none)."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return None


def test_what_one_module_imports_from_another_is_in_its_all():
    """A package's `__init__` may gather its own modules' names; any other import of a name from a
    module names something that module exports."""
    sources = package_sources()
    exports = {m: exported_names(src) for m, (src, _) in sources.items()}
    problems = []
    for module, (source, is_package) in sources.items():
        for line, target, names in imports_of(module, source, is_package):
            if target not in sources or target == module or (is_package and target.startswith(module + ".")):
                continue
            listed = exports[target]
            missing = [n for n in names if f"{target}.{n}" not in sources and (listed is None or n not in listed)]
            if missing:
                problems.append(f"{module}:{line} imports {missing} from {target}, which does not list them in __all__")
    assert problems == []
