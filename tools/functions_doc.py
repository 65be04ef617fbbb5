"""Write ``docs/functions.md``: the mapping language's functions, from their docstrings.

Why generated: one table, and it must say what the code does. It is read from the
functions object every mapping expression is evaluated with (``OPTIONS.custom_functions``),
not from a source file, so it follows the functions wherever they are defined. Each
example is the first doctest of the function's docstring, run again here and shown as
JSON. ``tests/unit/test_functions_doc.py`` fails when the page differs from what
``python tools/functions_doc.py`` writes, or when a function has no docstring or example.
"""

from __future__ import annotations

import ast
import doctest
import inspect
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jmespath
from jmespath.functions import Functions

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from generated_page import write_or_check  # noqa: E402  (tools/ is not a package)

PAGE = ROOT / "docs" / "functions.md"


@dataclass(frozen=True)
class Function:
    """One function of the mapping language, as a table row shows it."""

    name: str
    call: str
    """``format(template, ...)``: the parameters' names."""
    summary: str
    example: str
    replaces_builtin: bool


def options() -> jmespath.Options:
    """The options every mapping expression is evaluated with."""
    from inspect_mlflow._mapping.functions import OPTIONS

    return OPTIONS


def _builtins() -> dict[str, Any]:
    return dict(Functions.FUNCTION_TABLE)


def _call(name: str, method: Any) -> str:
    params = list(inspect.signature(method).parameters.values())[1:]  # without self
    names = [("..." if p.kind is p.VAR_POSITIONAL else p.name) for p in params]
    return f"{name}({', '.join(names)})"


def _summary(doc: str) -> str:
    first = inspect.cleandoc(doc).split("\n\n")[0]
    return " ".join(first.split())


def _search_call(node: ast.AST) -> ast.Call | None:
    """``jmespath.search(expression, data, ...)``, also inside ``print(...)``."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args:
        node = node.args[0]  # print(...)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "search"
        and len(node.args) >= 2
    ):
        return node
    return None


def _example(doc: str) -> str:
    """The first doctest that is one ``jmespath.search`` on literal data, run again as JSON."""
    names: dict[str, Any] = {}
    found: list[tuple[bool, str]] = []
    for example in doctest.DocTestParser().get_examples(doc):
        try:
            [statement] = ast.parse(example.source).body
            if isinstance(statement, ast.Assign) and isinstance(statement.targets[0], ast.Name):
                names[statement.targets[0].id] = ast.literal_eval(statement.value)
                continue
            value = statement.value if isinstance(statement, ast.Expr) else None
            each = value.generators[0] if isinstance(value, ast.ListComp) else None
            call = _search_call(value.elt if each else value)  # type: ignore[union-attr]
            if call is None:
                continue
            expression = ast.literal_eval(call.args[0])
            given = call.args[1]
            if each is not None:  # [jmespath.search(e, v, ...) for v in [...]]
                cases = list(ast.literal_eval(each.iter))
            elif isinstance(given, ast.Name):
                cases = [names[given.id]]
            else:
                cases = [ast.literal_eval(given)]
        except (ValueError, SyntaxError, KeyError, TypeError, AttributeError):
            continue
        shown = []
        for data in cases[:4]:
            result = jmespath.search(expression, data, options())
            on = "" if data in ({}, None) else f"on {code(_json(data))} "
            shown.append((result is None, f"{on}→ {code(_json(result))}"))
        text = f"{code(expression)} " + "; ".join(part for _, part in shown)
        found.append((all(null for null, _ in shown), text))
    # A null result shows the least: prefer the first example that gives a value.
    return min(found, key=lambda item: item[0])[1] if found else ""


def code(text: str) -> str:
    """A Markdown code span, also for text that holds backticks (JMESPath literals)."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def functions() -> list[Function]:
    """Every function the mapping language adds to JMESPath (or changes), by name."""
    table = options().custom_functions.FUNCTION_TABLE
    builtins = _builtins()
    out = []
    for name, spec in sorted(table.items()):
        method = spec["function"]
        if name.startswith("_"):
            continue  # internal: not callable from a mapping
        base = builtins.get(name)
        if base is not None and base["function"] is method:
            continue
        doc = method.__doc__ or ""
        out.append(
            Function(
                name=name,
                call=_call(name, method),
                summary=_summary(doc) if doc.strip() else "",
                example=_example(doc),
                replaces_builtin=base is not None,
            )
        )
    return out


def builtin_names() -> list[str]:
    """JMESPath's own functions that a mapping uses unchanged."""
    table = options().custom_functions.FUNCTION_TABLE
    return sorted(
        n for n, s in _builtins().items() if table.get(n, {}).get("function") is s["function"]
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    """The page's text."""
    lines = [
        "# Functions",
        "",
        "<!-- Generated by tools/functions_doc.py from the functions' docstrings; do not edit. -->",
        "",
        "A mapping expression is JMESPath with a few more functions. JMESPath's own",
        "(see [its specification](https://jmespath.org/specification.html#built-in-functions)):",
        ", ".join(f"`{n}`" for n in builtin_names()) + ".",
        "",
        "The functions the mapping language adds"
        + (", or changes," if any(f.replaces_builtin for f in functions()) else "")
        + " follow. Arguments in the examples are",
        "JSON; `@` is the data shown. A function given a value of the wrong type fails the",
        "expression, which is reported against its rule (the dry run shows where).",
        "",
        "| function | what it gives | for example |",
        "|---|---|---|",
    ]
    for function in functions():
        summary = function.summary or "(no docstring)"
        if function.replaces_builtin:
            summary += " *(Replaces JMESPath's function of that name.)*"
        lines.append(f"| `{_cell(function.call)}` | {_cell(summary)} | {_cell(function.example)} |")
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    """Write the page; with ``--check``, exit 1 when it is out of date instead."""
    return write_or_check(PAGE, render(), "tools/functions_doc.py")


if __name__ == "__main__":
    sys.exit(main())
