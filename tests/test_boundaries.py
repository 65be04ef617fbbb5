"""The layering rules of the house: a pure core, and I/O only at the edges.

`_mapping` and `_runtime` must import neither MLflow, threads nor Inspect's hook API, so
the mapping and the engine stay testable without either; MLflow is reached only from the
writer's sink and trace sender (and provider autolog); only the hook modules register
with Inspect. A change that breaks one of these fails here, not in a code review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import inspect_mlflow

PACKAGE = Path(inspect_mlflow.__file__).parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def modules_under(*parts: str) -> list[Path]:
    return sorted(PACKAGE.joinpath(*parts).rglob("*.py"))


def importers_of(prefix: str) -> set[str]:
    hits = set()
    for path in PACKAGE.rglob("*.py"):
        if any(m == prefix or m.startswith(prefix + ".") for m in imported_modules(path)):
            hits.add(path.relative_to(PACKAGE).as_posix())
    return hits


def test_pure_core_imports_no_io() -> None:
    forbidden = ("mlflow", "threading", "inspect_ai.hooks")
    for path in modules_under("_mapping") + modules_under("_runtime"):
        for module in imported_modules(path):
            assert not any(module == f or module.startswith(f + ".") for f in forbidden), (
                f"{path.relative_to(PACKAGE)} imports {module}"
            )


def test_only_the_writer_and_autolog_reach_mlflow() -> None:
    allowed = {"_autolog.py", "_writer/mlflow_sink.py", "_writer/traces.py"}
    assert importers_of("mlflow") <= allowed
    assert "_writer/mlflow_sink.py" in importers_of("mlflow")


def test_only_the_hook_modules_touch_inspect_hooks() -> None:
    assert importers_of("inspect_ai.hooks") <= {"_hook.py", "_registry.py", "_importer.py"}
