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


def test_only_the_writer_autolog_and_the_reading_commands_reach_mlflow() -> None:
    """The live path writes through the writer alone; the eval's side never imports MLflow.

    Besides the writer and provider autolog, only commands that read what is already in
    MLflow do: ``import`` (which runs it holds already) and ``compare`` (both task runs).
    """
    reaching = importers_of("mlflow")
    outside_writer = {m for m in reaching if not m.startswith("_writer/")}
    assert outside_writer <= {"_autolog.py", "_importer.py"} | {
        m for m in reaching if m.startswith("_compare/")
    }
    assert "_writer/mlflow_sink.py" in reaching
    for eval_side in ("_hook.py", "_registry.py", "_remote.py", "_session.py", "_config.py"):
        assert eval_side not in reaching, f"{eval_side} imports MLflow"


def test_only_the_hook_modules_touch_inspect_hooks() -> None:
    # _payload_fields reads the hook payload types (for the dry run's typo check); it
    # registers nothing with Inspect.
    allowed = {"_hook.py", "_registry.py", "_importer.py", "_payload_fields.py"}
    assert importers_of("inspect_ai.hooks") <= allowed
