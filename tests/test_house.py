"""The house stays readable: each part of the service in a room of its own with arrows
running one way, no module over 300 lines, no function on the hot path longer than a
screen (issues 20 and 27). The import graph is read from the source with ``ast``: every
import counts, those inside functions and under ``TYPE_CHECKING`` too, since each is a
dependency someone reading the code must follow."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

from scripts.local import ROOT

SERVICE = ("app", "workers")

# Every module a prediction passes through: decoding and submit in the API, the row queue,
# a worker's batch steps.
HOT_PATH = [
    "app/api/predictions.py",
    "app/api/decoding.py",
    "app/predictions/submit.py",
    "app/predictions/submission.py",
    "app/predictions/stored.py",
    "app/predictions/deferred.py",
    "app/predictions/jobs.py",
    "app/predictions/queue.py",
    "app/predictions/items.py",
    "app/predictions/view.py",
    "app/registry/signature.py",
    "workers/batching.py",
    "workers/batch_work.py",
    "workers/batch_store.py",
    "workers/batch_publish.py",
]
MAX_LINES = 60


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, Path]:
    """Every module of the service, by dotted name."""
    return {_module_name(path): path for folder in SERVICE for path in sorted((ROOT / folder).rglob("*.py"))}


def _imports(path: Path) -> list[tuple[str, str | None]]:
    """(module, name) for every import in ``path``: ``from m import n`` gives (m, n), ``import m`` (m, None)."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found += [(node.module, alias.name) for alias in node.names]
    return found


@cache
def _graph() -> dict[str, set[str]]:
    """Which service modules each service module imports (``from package import module``
    is an arrow to the module)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for module, imported in _imports(path):
            if imported is not None and f"{module}.{imported}" in modules:
                targets.add(f"{module}.{imported}")
            elif module in modules:
                targets.add(module)
        graph[name] = targets - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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


def test_no_import_cycle_among_the_service_modules():
    cycles = _cycles(_graph())

    assert not cycles, f"modules that import each other, directly or round a circle: {cycles}"


def test_no_two_parts_of_the_service_import_each_other():
    # A part is a package of app/ (predictions, registry, ...) or a module beside them; the
    # parts stand on each other in layers, so no arrow runs back up between two of them.
    def part(module: str) -> str:
        return ".".join(module.split(".")[:2])

    parts: dict[str, set[str]] = {}
    for name, targets in _graph().items():
        parts.setdefault(part(name), set()).update(part(t) for t in targets if part(t) != part(name))

    assert not _cycles(parts), f"parts that import each other: {_cycles(parts)}"


def test_the_cycle_finder_finds_a_circle_of_three():
    # The check above passes on any graph without cycles, so show that it sees one.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_of_app_imports_the_workers():
    reaching = {name: sorted(t for t in targets if t.split(".")[0] == "workers")
                for name, targets in _graph().items() if name.split(".")[0] == "app"}  # fmt: skip

    assert not {name: t for name, t in reaching.items() if t}, (
        "app/ is what workers stand on, not the reverse"
    )


def test_no_module_outside_a_package_imports_its_private_names():
    modules = _modules()
    private = []
    for name, path in modules.items():
        for module, imported in _imports(path):
            if module.split(".")[0] not in SERVICE:
                continue
            private_part = next((p for p in [*module.split("."), imported or ""] if p.startswith("_")), None)
            if private_part is None or private_part.startswith("__"):
                continue
            # The package the private name belongs to: a package's own __init__ or submodule
            # belongs to it, a name defined in a module to the module's package.
            is_package = module in modules and modules[module].name == "__init__.py"
            owner = module if is_package or f"{module}.{imported}" in modules else module.rpartition(".")[0]
            if not (name == owner or name.startswith(owner + ".")):
                private.append(f"{name} imports {module}.{imported or ''}")

    assert not private, f"private names are their package's own: {private}"


@pytest.mark.parametrize("module", HOT_PATH)
def test_no_function_on_the_hot_path_is_longer_than_sixty_lines(module):
    tree = ast.parse((ROOT / module).read_text())
    long = {
        node.name: node.end_lineno - node.lineno + 1
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_LINES
    }
    assert not long, f"{module}: {long}"


MAX_MODULE_LINES = 300
MODULES = sorted(str(path.relative_to(ROOT)) for path in _modules().values())


@pytest.mark.parametrize("module", MODULES)
def test_no_module_of_the_service_is_longer_than_three_hundred_lines(module):
    lines = len((ROOT / module).read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module} has {lines} lines: split it by what its parts do"


# Test files share code through these alone: a helper kept in a test module ties that file's
# tests to every file that borrows it, and conftest.py is pytest's plugin (fixtures, hooks).
TEST_SUPPORT = {"tests.helpers", "tests.fault_stack", "tests.slow_model", "tests.openapi_contract"}


def _tests_imported(path: Path, modules: set[str]) -> set[str]:
    """Which modules of tests/ ``path`` imports (``from tests import m`` and ``from .m import n`` too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            # tests/ is one flat package: a relative import starts from it.
            base = ".".join(filter(None, ["tests" if node.level else "", node.module or ""]))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return found & modules


def test_tests_share_code_only_through_the_support_modules():
    paths = sorted(path for path in (ROOT / "tests").glob("*.py") if path.name != "__init__.py")
    modules = {_module_name(path) for path in paths}

    wrong = {_module_name(path): sorted(found - TEST_SUPPORT)
             for path in paths if (found := _tests_imported(path, modules)) - TEST_SUPPORT}  # fmt: skip

    assert not wrong, f"import from tests/helpers.py instead of another test module or conftest: {wrong}"
