"""The layering rules of the house, checked on the source: a change that breaks one fails here.

The package is folders per stage, and dependencies point one way (top to bottom)::

    inspect_mlflow (the facade), tracking
    _commands     cli, check/dry run, import, replay, demo, compare
    _inspect      everything that knows Inspect: the hook, its registration, log reading
    _delivery     session, delivery process, wire, the pipeline (engine -> scrub -> deliver)
    _engine  _writer    compiled mapping x document -> operations | operations -> MLflow
    _mapping      YAML -> a compiled mapping
    _config _notice                       shared settings and user notices
    _operations _keys _paths _version     small shared leaves

Imports inside a function count as much as those at the top: a cycle hidden in a function is
still a cycle. `_mapping` and `_engine` stay pure (no MLflow, no threads, no Inspect hook API),
MLflow is reached only from the writer, provider autolog and the commands that read what MLflow
holds, and only `_inspect` talks to Inspect's hook API.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import inspect_mlflow

PACKAGE = Path(inspect_mlflow.__file__).parent

LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"", "tracking"}),
    frozenset({"_commands"}),
    frozenset({"_inspect"}),
    frozenset({"_delivery"}),
    frozenset({"_engine", "_writer"}),
    frozenset({"_mapping"}),
    frozenset({"_config", "_notice"}),
    frozenset({"_operations", "_keys", "_paths", "_version"}),
)
"""Each unit (top-level module or folder) may import only units of a lower layer."""

MAX_LINES = 520
"""About 500 lines: a module longer than this holds more than one job."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    """``inspect_mlflow._engine.views`` -> ``_engine``; the package itself -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(unit: str) -> int:
    for index, layer in enumerate(LAYERS):
        if unit in layer:
            return index
    raise AssertionError(f"inspect_mlflow.{unit} is in no layer: add it to LAYERS")


def imports(path: Path) -> Iterator[tuple[str, list[str]]]:
    """(module, names imported from it) for every import in the file, nested ones too."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [alias.name for alias in node.names]


def imported_modules(path: Path) -> set[str]:
    return {module for module, _ in imports(path)}


def package_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def modules_under(*parts: str) -> list[Path]:
    return sorted(PACKAGE.joinpath(*parts).rglob("*.py"))


def importers_of(prefix: str) -> set[str]:
    hits = set()
    for path in package_files():
        if any(m == prefix or m.startswith(prefix + ".") for m in imported_modules(path)):
            hits.add(path.relative_to(PACKAGE).as_posix())
    return hits


def own_imports(path: Path) -> set[str]:
    """The package's own modules a file imports (a name imported from a package that is
    itself a module, ``from inspect_mlflow._engine import views``, counts as that module)."""
    found = set()
    for module, names in imports(path):
        if module != "inspect_mlflow" and not module.startswith("inspect_mlflow."):
            continue
        found.add(module)
        for name in names:
            sub = PACKAGE.parent.joinpath(*f"{module}.{name}".split("."))
            if sub.with_suffix(".py").exists() or (sub / "__init__.py").exists():
                found.add(f"{module}.{name}")
    return found


def test_every_unit_imports_only_lower_layers() -> None:
    wrong = []
    for path in package_files():
        here = module_name(path)
        if here == "inspect_mlflow":
            continue  # the facade names the public API of every layer, lazily
        mine = unit_of(here)
        for module in own_imports(path):
            theirs = unit_of(module)
            if theirs != mine and layer_of(theirs) <= layer_of(mine):
                wrong.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_no_import_cycle_between_files() -> None:
    graph = {module_name(p): own_imports(p) for p in package_files()}
    # A package's __init__ importing its own modules is how a package exposes them, not a
    # dependency in the other direction.
    for name, deps in graph.items():
        graph[name] = {d for d in deps if d in graph and not name.startswith(d + ".")}
    seen: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for dep in sorted(graph[node]):
            if seen.get(dep) == 1:
                cycles.append(" -> ".join([*path[path.index(dep) :], dep]))
            elif dep not in seen:
                visit(dep, [*path, dep])
        seen[node] = 2

    for start in sorted(graph):
        if start not in seen:
            visit(start, [start])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_private_name_crosses_modules() -> None:
    crossing = []
    for path in package_files():
        for module, names in imports(path):
            if not module.startswith("inspect_mlflow"):
                continue
            for name in names:
                if name.startswith("_") and not name.startswith("__"):
                    sub = PACKAGE.parent.joinpath(*f"{module}.{name}".split("."))
                    is_module = sub.with_suffix(".py").exists() or (sub / "__init__.py").exists()
                    if not is_module:
                        crossing.append(f"{path.relative_to(PACKAGE)}: {name} from {module}")
    assert not crossing, "private names imported across modules:\n" + "\n".join(crossing)


def test_modules_hold_one_job_each() -> None:
    long = {
        p.relative_to(PACKAGE).as_posix(): n
        for p in package_files()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_pure_core_imports_no_io() -> None:
    forbidden = ("mlflow", "threading", "inspect_ai.hooks")
    for path in modules_under("_mapping") + modules_under("_engine"):
        for module in imported_modules(path):
            assert not any(module == f or module.startswith(f + ".") for f in forbidden), (
                f"{path.relative_to(PACKAGE)} imports {module}"
            )


def test_only_the_writer_autolog_and_the_reading_commands_reach_mlflow() -> None:
    """The live path writes through the writer alone; the eval's side never imports MLflow.

    Besides the writer and provider autolog, only commands that read what is already in
    MLflow do: ``import`` (which runs it holds already) and ``compare`` (both task runs).
    """
    reaching = importers_of("mlflow")
    allowed_prefixes = ("_writer/", "_commands/importer", "_commands/compare/")
    outside = {m for m in reaching if not m.startswith(allowed_prefixes)}
    assert outside <= {"_delivery/autolog.py"}, outside
    assert any(m.startswith("_writer/mlflow_sink/") for m in reaching)
    for eval_side in (
        "_inspect/hook.py",
        "_inspect/registry.py",
        "_delivery/remote.py",
        "_delivery/session.py",
        "_config.py",
    ):
        assert eval_side not in reaching, f"{eval_side} imports MLflow"


def test_only_the_inspect_folder_touches_inspect_hooks() -> None:
    assert importers_of("inspect_ai.hooks") <= {
        m for m in importers_of("inspect_ai.hooks") if m.startswith("_inspect/")
    }, importers_of("inspect_ai.hooks")
