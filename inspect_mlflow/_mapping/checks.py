"""Static checks: what JMESPath and the schema cannot see until a rule runs.

``jmespath`` resolves function names and argument counts only when a call is evaluated,
and the schema checks each file's shape, not how its parts refer to each other. These
checks run at load time so a typo in a rarely-hit rule fails ``inspect-mlflow check``
instead of surfacing mid-evaluation:

- expressions (:func:`expression_problems`): unknown functions, wrong argument counts,
  ``format`` templates whose ``{}`` count does not match, references to undeclared
  ``counter.<name>`` / ``series.<name>``, and ``!a.b`` (JMESPath reads it as ``(!a).b``,
  always null);
- the mapping as a whole (:func:`structure_problems`): run kinds missing required keys
  after layering, unknown ``run``/``parent`` kinds, parent cycles, undeclared counters and
  series in ``count``/``collect``, duplicate rule ids, ``for_each`` names hiding the
  context's own names, and fixed keys MLflow would reject.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jmespath import lexer

from inspect_mlflow._keys import is_valid_key, safe_key
from inspect_mlflow._mapping.errors import DataPath
from inspect_mlflow._mapping.functions import FUNCTION_TABLE
from inspect_mlflow._mapping.schema import closest, did_you_mean

__all__ = [
    "COMPUTED_NAMES",
    "RESERVED_NAMES",
    "Problem",
    "expression_problems",
    "format_placeholders",
    "root_fields",
    "structure_problems",
]

COMPUTED_NAMES = frozenset({"counter", "series", "run"})
"""Names the engine adds to every rule document, from the state of the rule's run."""

RESERVED_NAMES = COMPUTED_NAMES | {"point"}
"""Names every context document has; a ``for_each`` name may not hide them."""

_RUN_REQUIRED = ("open", "close", "key", "status")

# Node types whose children are evaluated against the same current node as the parent
# (so a `counter.x` among them still reads the context document).
_SAME_NODE = frozenset(
    {
        "function_expression",
        "comparator",
        "and_expression",
        "or_expression",
        "not_expression",
        "multi_select_list",
        "multi_select_dict",
        "key_val_pair",
    }
)
# Node types whose first child sees the current node and the rest see something else.
_LEFT_ONLY = frozenset(
    {
        "subexpression",
        "index_expression",
        "projection",
        "value_projection",
        "filter_projection",
        "pipe",
        "flatten",
    }
)


@dataclass(frozen=True, slots=True)
class Problem:
    """A problem inside one expression; ``offset`` is a character index in its text."""

    message: str
    hint: str | None = None
    offset: int | None = None


@dataclass(frozen=True, slots=True)
class StructureProblem:
    """A problem of the mapping as a whole, at a path of the effective mapping."""

    path: DataPath
    message: str
    hint: str | None = None
    key: bool = False
    """Point at the key of ``path`` rather than its value."""


def format_placeholders(template: str) -> int:
    """Number of ``{}`` placeholders in a ``format`` template (``{{``/``}}`` escape)."""
    count = 0
    i = 0
    while i < len(template):
        pair = template[i : i + 2]
        if pair in ("{{", "}}"):
            i += 2
        elif pair == "{}":
            count += 1
            i += 2
        else:
            i += 1
    return count


def _tokens(text: str) -> list[dict[str, Any]]:
    try:
        return list(lexer.Lexer().tokenize(text))
    except Exception:  # positions are a nicety; never fail a check on them
        return []


def _call_offsets(tokens: list[dict[str, Any]]) -> list[int]:
    """Start offsets of function names (an identifier followed by ``(``), in text order."""
    return [
        token["start"]
        for token, following in zip(tokens, tokens[1:], strict=False)
        if token["type"] == "unquoted_identifier" and following["type"] == "lparen"
    ]


def _reference_offset(tokens: list[dict[str, Any]], root: str, name: str) -> int | None:
    """Offset of ``name`` in the first ``root.name`` of the text."""
    for i in range(len(tokens) - 2):
        first, dot, second = tokens[i], tokens[i + 1], tokens[i + 2]
        if (
            first["type"] == "unquoted_identifier"
            and first["value"] == root
            and dot["type"] == "dot"
            and second["value"] == name
        ):
            return second["start"]
    return None


def _not_offset(tokens: list[dict[str, Any]]) -> int | None:
    """Offset of the first ``!`` directly followed by ``name.``."""
    for i in range(len(tokens) - 2):
        if tokens[i]["type"] == "not" and tokens[i + 2]["type"] == "dot":
            return tokens[i]["start"]
    return None


def _walk(node: dict[str, Any], at_root: bool) -> Iterator[tuple[dict[str, Any], bool]]:
    """Pre-order (node, evaluated-against-the-context) pairs; text order for calls."""
    yield node, at_root
    children = node.get("children") or []
    kind = node.get("type")
    for index, child in enumerate(children):
        if not isinstance(child, dict):
            continue
        if kind in _SAME_NODE:
            child_root = at_root
        elif kind in _LEFT_ONLY:
            child_root = at_root and index == 0
        else:
            child_root = False
        yield from _walk(child, child_root)


def root_fields(ast: dict[str, Any]) -> frozenset[str]:
    """Names an expression reads from the context document itself (``x`` of ``x.y``).

    A name inside a projection, a filter or after a ``.``/``|`` reads something else.
    """
    return frozenset(
        str(node.get("value"))
        for node, at_root in _walk(ast, True)
        if at_root and node.get("type") == "field"
    )


def _declared_reference(node: dict[str, Any]) -> tuple[str, str] | None:
    """``("counter", "x")`` for a node reading ``counter.x...`` (same for ``series``)."""
    if node.get("type") != "subexpression":
        return None
    children = node.get("children") or []
    if len(children) < 2:
        return None
    first, second = children[0], children[1]
    if first.get("type") != "field" or first.get("value") not in ("counter", "series"):
        return None
    if second.get("type") != "field":
        return None
    return first["value"], second["value"]


def expression_problems(
    text: str,
    ast: dict[str, Any],
    *,
    counters: frozenset[str],
    series: frozenset[str],
) -> list[Problem]:
    """Check one compiled expression's function calls and counter/series references.

    Args:
        text: The expression text (for positions).
        ast: Its parsed AST (``ParsedResult.parsed``: plain dicts).
        counters: Declared counter names.
        series: Declared series names.

    Returns:
        The problems found, each with a character offset when one could be found.
    """
    problems: list[Problem] = []
    tokens = _tokens(text)
    calls = _call_offsets(tokens)
    call_index = 0
    for node, at_root in _walk(ast, True):
        kind = node.get("type")
        if kind == "function_expression":
            offset = calls[call_index] if call_index < len(calls) else None
            call_index += 1
            name = node.get("value")
            args = node.get("children") or []
            arity = FUNCTION_TABLE.get(name)
            if arity is None:
                guess = closest(name, FUNCTION_TABLE)
                hint = f"did you mean {guess}()?" if guess else "see docs/mapping-language.md"
                problems.append(Problem(f"unknown function {name}()", hint, offset))
                continue
            if not arity.accepts(len(args)):
                problems.append(
                    Problem(
                        f"{name}() takes {arity.describe()}, got {len(args)}",
                        None,
                        offset,
                    )
                )
                continue
            if name == "format" and args and args[0].get("type") == "literal":
                template = args[0].get("value")
                if isinstance(template, str):
                    wanted = format_placeholders(template)
                    if wanted != len(args) - 1:
                        problems.append(
                            Problem(
                                f"format() template has {wanted} {{}} placeholder"
                                f"{'s' if wanted != 1 else ''} but "
                                f"{len(args) - 1} value{'s' if len(args) != 2 else ''} "
                                f"{'follow' if len(args) != 2 else 'follows'}",
                                None,
                                offset,
                            )
                        )
        elif (
            kind == "subexpression"
            and (node.get("children") or [{}])[0].get("type") == "not_expression"
        ):
            problems.append(
                Problem(
                    "`!a.b` reads as `(!a).b`, which is always null",
                    "write `!(a.b)`",
                    _not_offset(tokens),
                )
            )
        elif at_root:
            reference = _declared_reference(node)
            if reference is None:
                continue
            root, name = reference
            declared = counters if root == "counter" else series
            if name not in declared:
                what = "counters" if root == "counter" else "series"
                problems.append(
                    Problem(
                        f"{root}.{name} reads an undeclared {root}",
                        did_you_mean(name, declared, f"declared {what}")
                        or f"declare it under `{what}:`",
                        _reference_offset(tokens, root, name),
                    )
                )
    return problems


def _check_keys(entries: Any, path: DataPath, out: list[StructureProblem], what: str) -> None:
    """Fixed (placeholder-free) param/tag/metric keys must be valid MLflow keys."""
    if not isinstance(entries, Mapping):
        return
    for key in entries:
        if "{" in key or "}" in key:
            continue  # a template: made safe when rendered
        if not is_valid_key(key):
            out.append(
                StructureProblem(
                    (*path, key),
                    f"{what} key {key!r} would be rejected by MLflow",
                    f"MLflow keys hold letters, digits, _ - . / space and :, no '//' or "
                    f"'..' segments, no leading or trailing '/', at most 250 characters; "
                    f"for example {safe_key(key)!r}",
                    key=True,
                )
            )


def _check_runs(runs: Mapping[str, Any], out: list[StructureProblem]) -> None:
    for kind, spec in runs.items():
        if not isinstance(spec, Mapping):
            continue
        for name in _RUN_REQUIRED:
            if name not in spec:
                out.append(
                    StructureProblem(
                        ("runs", kind),
                        f"run kind {kind!r} has no {name!r}",
                        "a run kind needs open, close, key and status",
                        key=True,
                    )
                )
        parent = spec.get("parent")
        if isinstance(parent, str) and parent not in runs:
            out.append(
                StructureProblem(
                    ("runs", kind, "parent"),
                    f"parent {parent!r} is not a declared run kind",
                    did_you_mean(parent, runs, "run kinds"),
                )
            )
        _check_keys(spec.get("tags"), ("runs", kind, "tags"), out, "tag")

    reported: set[str] = set()
    for kind in runs:
        seen = [kind]
        current = kind
        while True:
            spec = runs.get(current)
            parent = spec.get("parent") if isinstance(spec, Mapping) else None
            if not isinstance(parent, str) or parent not in runs:
                break
            if parent in seen:
                cycle = seen[seen.index(parent) :]
                if not reported.intersection(cycle):
                    reported.update(cycle)
                    out.append(
                        StructureProblem(
                            ("runs", kind, "parent"),
                            "run parents form a cycle: " + " -> ".join([*cycle, parent]),
                        )
                    )
                break
            seen.append(parent)
            current = parent


def _check_rule(
    rule: Mapping[str, Any],
    path: DataPath,
    runs: Mapping[str, Any],
    counters: frozenset[str],
    series: frozenset[str],
    out: list[StructureProblem],
) -> None:
    run = rule.get("run")
    if "run" not in rule:
        out.append(
            StructureProblem(
                path,
                "rule has no `run`",
                f"give it `run:`, or give its point one under `defaults.{path[1]}.run`",
            )
        )
    if isinstance(run, str) and run not in runs:
        out.append(
            StructureProblem(
                (*path, "run"),
                f"run kind {run!r} is not declared under `runs:`",
                did_you_mean(run, runs, "run kinds"),
            )
        )
    count = rule.get("count")
    names = [count] if isinstance(count, str) else list(count or [])
    for index, name in enumerate(names):
        if isinstance(name, str) and name not in counters:
            where = (*path, "count") if isinstance(count, str) else (*path, "count", index)
            out.append(
                StructureProblem(
                    where,
                    f"counter {name!r} is not declared",
                    did_you_mean(name, counters, "declared counters")
                    or "declare it under `counters:`",
                )
            )
    collect = rule.get("collect")
    if isinstance(collect, Mapping):
        for name in collect:
            if name not in series:
                out.append(
                    StructureProblem(
                        (*path, "collect", name),
                        f"series {name!r} is not declared",
                        did_you_mean(name, series, "declared series")
                        or "declare it under `series:`",
                        key=True,
                    )
                )
    loops: list[tuple[DataPath, Any]] = [
        ((*path, "let"), rule.get("let")),
        ((*path, "for_each"), rule.get("for_each")),
    ]
    lets, loop = rule.get("let"), rule.get("for_each")
    if isinstance(lets, Mapping) and isinstance(loop, Mapping):
        for name in loop:
            if name in lets:
                out.append(
                    StructureProblem(
                        (*path, "for_each", name),
                        f"for_each name {name!r} is also a `let` name of this rule",
                        "choose another name",
                        key=True,
                    )
                )
    trace = rule.get("trace")
    if isinstance(trace, Mapping):
        for part in ("spans", "feedback", "expectations"):
            section = trace.get(part)
            if isinstance(section, Mapping):
                loops.append(((*path, "trace", part, "for_each"), section.get("for_each")))
    for loop_path, loop in loops:
        if isinstance(loop, Mapping):
            for name in loop:
                if name in RESERVED_NAMES:
                    out.append(
                        StructureProblem(
                            (*loop_path, name),
                            f"{loop_path[-1]} name {name!r} would hide the context's own {name!r}",
                            "choose another name",
                            key=True,
                        )
                    )
    for section in ("params", "tags", "metrics"):
        _check_keys(rule.get(section), (*path, section), out, section.rstrip("s"))


def structure_problems(data: Mapping[str, Any]) -> list[StructureProblem]:
    """Cross-reference checks of an effective (layered) mapping.

    Args:
        data: The effective mapping, already valid against the schema file by file.

    Returns:
        Problems at paths of the effective mapping (place them with its locator).
    """
    out: list[StructureProblem] = []
    runs = data.get("runs") or {}
    if not runs:
        out.append(
            StructureProblem(
                (),
                "the mapping declares no run kinds",
                "add `runs:` (or `extends: default`)",
            )
        )
    counters = frozenset(data.get("counters") or ())
    series = frozenset(data.get("series") or ())
    _check_runs(runs, out)
    ids: dict[str, DataPath] = {}
    for point, rules in (data.get("rules") or {}).items():
        for index, rule in enumerate(rules or []):
            if not isinstance(rule, Mapping):
                continue
            path = ("rules", point, index)
            rule_id = rule.get("id")
            if isinstance(rule_id, str):
                if rule_id in ids:
                    out.append(
                        StructureProblem(
                            (*path, "id"),
                            f"duplicate rule id {rule_id!r}",
                            "rule ids must be unique in the mapping",
                        )
                    )
                else:
                    ids[rule_id] = path
            _check_rule(rule, path, runs, counters, series, out)
    return out
