"""Compile an effective (layered) mapping into the immutable model the engine runs.

Every expression is parsed here, once, with :func:`jmespath.compile`; a syntax error is
reported at the character where the parser stopped. Each parsed AST then goes through
:func:`~inspect_mlflow._mapping.checks.expression_problems`, and the mapping as a whole
through :func:`~inspect_mlflow._mapping.checks.structure_problems`. All problems are
collected and raised together as :class:`MappingInvalid`, sorted by position.

Before that, each file's per-point ``defaults`` are filled into its rules
(:mod:`~inspect_mlflow._mapping.defaults`). After the checks, each tree is rewritten into
what the engine evaluates (:mod:`~inspect_mlflow._mapping.rewrite`: a lazy ``if``,
version 1's ``to_number``), following the version of the file the expression is in.
Where an expression is expected, a YAML number or boolean, or ``{const: value}``, is a
constant; a rule's ``let`` bindings become one-element loops ahead of its ``for_each``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import jmespath
from jmespath import exceptions

from inspect_mlflow._mapping.checks import expression_problems, root_fields, structure_problems
from inspect_mlflow._mapping.defaults import apply_defaults
from inspect_mlflow._mapping.errors import DataPath, MappingError, MappingInvalid
from inspect_mlflow._mapping.functions import OPTIONS
from inspect_mlflow._mapping.layering import Layered
from inspect_mlflow._mapping.model import (
    LIFECYCLE_POINTS,
    CompiledMapping,
    DatasetSpec,
    Entries,
    ExpectationSpec,
    Expr,
    FeedbackSpec,
    KeyTemplate,
    LinkSpec,
    Loops,
    ModelSpec,
    ObjectExpr,
    Rule,
    RunSpec,
    SpanSpec,
    TraceSpec,
)
from inspect_mlflow._mapping.rewrite import constant, let_binding, rewrite

__all__ = ["TemplateError", "compile_layered", "is_constant", "split_template"]


class TemplateError(ValueError):
    """A key template with unbalanced or empty ``{...}``; ``offset`` is where."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


def _skip_quoted(text: str, start: int) -> int:
    """Index just after the quoted section (``'...'``, ``"..."``, `` `...` ``) at ``start``."""
    quote = text[start]
    i = start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == quote:
            return i + 1
        i += 1
    return len(text)


def split_template(text: str) -> list[str | tuple[int, str]]:
    """Split a key template into literal text and ``(offset, expression)`` placeholders.

    Braces nest (``{format('{}', x)}`` is one placeholder) and quoted sections of the
    expression may hold any brace.

    >>> split_template("usage/{model.key}/tokens")
    ['usage/', (7, 'model.key'), '/tokens']

    Raises:
        TemplateError: on an unmatched brace or an empty placeholder.
    """
    parts: list[str | tuple[int, str]] = []
    literal_start = 0
    i = 0
    while i < len(text):
        char = text[i]
        if char == "}":
            raise TemplateError("unmatched '}' in template", i)
        if char != "{":
            i += 1
            continue
        if i > literal_start:
            parts.append(text[literal_start:i])
        depth = 1
        j = i + 1
        while j < len(text) and depth:
            inner = text[j]
            if inner in "'\"`":
                j = _skip_quoted(text, j)
                continue
            if inner == "{":
                depth += 1
            elif inner == "}":
                depth -= 1
            j += 1
        if depth:
            raise TemplateError("unmatched '{' in template", i)
        expression = text[i + 1 : j - 1]
        if not expression.strip():
            raise TemplateError("empty {} placeholder in template", i)
        parts.append((i + 1, expression))
        literal_start = i = j
    if literal_start < len(text):
        parts.append(text[literal_start:])
    return parts


def _parse_error_text(error: exceptions.ParseError) -> tuple[str, int]:
    """A readable message and the character offset of a JMESPath syntax error."""
    if isinstance(error, exceptions.LexerError):
        return f"expression syntax error: {error.message}", error.lexer_position
    if isinstance(error, exceptions.IncompleteExpressionError):
        return "expression syntax error: the expression is incomplete", error.lex_position
    detail = error.msg if error.msg != exceptions.ParseError._ERROR_MESSAGE else None
    token = error.token_value
    what = f"unexpected {token!r}" if token not in (None, "") else "unexpected end"
    message = f"expression syntax error: {what}"
    if detail:
        message += f" ({detail})"
    return message, error.lex_position or 0


def is_constant(value: Any) -> bool:
    """A number, a boolean or ``{const: value}``: a constant where an expression goes."""
    if isinstance(value, (bool, int, float)):
        return True
    return isinstance(value, Mapping) and len(value) == 1 and "const" in value


class _Compiler:
    """Builds the model from one layered mapping, collecting every problem."""

    def __init__(self, layered: Layered) -> None:
        self.layered = layered
        self.locator = layered.locator
        data = layered.data
        self.counters = frozenset(data.get("counters") or ())
        self.series = frozenset(data.get("series") or ())
        self.errors: list[MappingError] = []

    # -- expressions ---------------------------------------------------------------

    def version_at(self, path: DataPath) -> int:
        """The language version of the file the piece at ``path`` was written in."""
        version = self.locator.origin(path).loaded.data.get("version", 1)
        return version if isinstance(version, int) else 1

    def expr(self, path: DataPath, text: Any, *, key: bool = False, offset: int = 0) -> Expr | None:
        """Compile the expression at ``path`` (or inside the key of ``path`` at ``offset``).

        A number, a boolean or ``{const: value}`` is a constant (never parsed).
        """
        if is_constant(text):
            value = text["const"] if isinstance(text, Mapping) else text
            return Expr(
                text=constant(value).expression,
                parsed=constant(value),
                where=self.locator.where(path),
                options=OPTIONS,
            )
        if not isinstance(text, str):
            return None
        try:
            parsed = jmespath.compile(text)
        except exceptions.ParseError as error:
            message, position = _parse_error_text(error)
            self.errors.append(self.locator.error(path, message, key=key, offset=offset + position))
            return None
        for problem in expression_problems(
            text, parsed.parsed, counters=self.counters, series=self.series
        ):
            at = offset + problem.offset if problem.offset is not None else None
            if at is None and key:
                at = offset
            self.errors.append(
                self.locator.error(path, problem.message, problem.hint, key=key, offset=at)
            )
        return Expr(
            text=text,
            parsed=rewrite(parsed, self.version_at(path)),
            where=self.locator.where(path, key=key),
            options=OPTIONS,
        )

    def optional(self, spec: Mapping[str, Any], path: DataPath, name: str) -> Expr | None:
        """The expression under ``name``, or None when absent or null."""
        value = spec.get(name)
        return None if value is None else self.expr((*path, name), value)

    def flag(self, spec: Mapping[str, Any], path: DataPath, name: str) -> Expr | None:
        """A key that is a boolean or an expression, compiled as an expression or None.

        ``true`` becomes an expression that is always true; ``false`` and absent become
        None (never); a string is compiled like any other expression.
        """
        value = spec.get(name)
        if value is True:
            value = "`true`"
        return self.expr((*path, name), value) if isinstance(value, str) else None

    def template(self, path: DataPath, text: Any, *, key: bool) -> KeyTemplate | None:
        """Compile a key template (a map key when ``key``, else a string value)."""
        if not isinstance(text, str):
            return None
        try:
            pieces = split_template(text)
        except TemplateError as error:
            self.errors.append(self.locator.error(path, str(error), key=key, offset=error.offset))
            return None
        parts: list[str | Expr] = []
        for piece in pieces:
            if isinstance(piece, str):
                parts.append(piece)
                continue
            start, expression = piece
            compiled = self.expr(path, expression, key=key, offset=start)
            if compiled is None:
                return None
            parts.append(compiled)
        return KeyTemplate(text=text, parts=tuple(parts), where=self.locator.where(path, key=key))

    def entries(self, spec: Mapping[str, Any], path: DataPath, name: str) -> Entries:
        """A map key template -> expression, in order."""
        entries = spec.get(name)
        if not isinstance(entries, Mapping):
            return ()
        out: list[tuple[KeyTemplate, Expr]] = []
        for key, text in entries.items():
            here = (*path, name, key)
            template = self.template(here, key, key=True)
            value = self.expr(here, text)
            if template is not None and value is not None:
                out.append((template, value))
        return tuple(out)

    def lets(self, spec: Mapping[str, Any], path: DataPath) -> Loops:
        """A rule's ``let`` bindings, as one-element loops (each is evaluated once)."""
        bindings = spec.get("let")
        if not isinstance(bindings, Mapping):
            return ()
        out: list[tuple[str, Expr]] = []
        for name, text in bindings.items():
            compiled = self.expr((*path, "let", name), text)
            if compiled is not None:
                boxed = let_binding(compiled.parsed)
                out.append((name, Expr(compiled.text, boxed, compiled.where, OPTIONS)))
        return tuple(out)

    def early_lets(self, rule: Rule, names: frozenset[str], path: DataPath) -> None:
        """Report ``when``/``unique``/``collect`` reading a ``let`` name: they run first."""
        early = [("when", rule.when), ("unique", rule.unique)]
        early += [(("collect", name), expr) for name, expr in rule.collect]
        for part, expr in early:
            if expr is None:
                continue
            read = sorted(root_fields(expr.parsed.parsed) & names)
            if read:
                where = (*path, *part) if isinstance(part, tuple) else (*path, part)
                self.errors.append(
                    self.locator.error(
                        where,
                        f"`let` name {read[0]!r} is not bound yet here",
                        "when, unique and collect are evaluated before `let`; "
                        "write the expression itself",
                    )
                )

    def loops(self, spec: Mapping[str, Any], path: DataPath) -> Loops:
        """A ``for_each`` map name -> list expression, in order."""
        loops = spec.get("for_each")
        if not isinstance(loops, Mapping):
            return ()
        out: list[tuple[str, Expr]] = []
        for name, text in loops.items():
            compiled = self.expr((*path, "for_each", name), text)
            if compiled is not None:
                out.append((name, compiled))
        return tuple(out)

    def value_or_object(
        self, spec: Mapping[str, Any], path: DataPath, name: str
    ) -> Expr | ObjectExpr | None:
        """``record``/``value``: one expression, or a map key -> expression."""
        value = spec.get(name)
        here = (*path, name)
        # In version 2 `{const: v}` is a constant here too; version 1 read it as an object.
        if isinstance(value, Mapping) and not (is_constant(value) and self.version_at(here) >= 2):
            if is_constant(value) and not isinstance(value["const"], str):
                self.errors.append(
                    self.locator.error(
                        (*here, "const"),
                        "in version 1 this builds an object whose `const` is an expression",
                        "for a constant here, write `version: 2`",
                    )
                )
            entries = self.entries(spec, path, name)
            text = "{" + ", ".join(f"{k.text}: {v.text}" for k, v in entries) + "}"
            return ObjectExpr(text=text, entries=entries, where=self.locator.where((*path, name)))
        return None if value is None else self.expr((*path, name), value)

    # -- parts ---------------------------------------------------------------------

    def run(self, kind: str, spec: Mapping[str, Any]) -> RunSpec:
        path = ("runs", kind)
        return RunSpec(
            kind=kind,
            open=spec.get("open", ""),
            close=spec.get("close", ""),
            key=self.optional(spec, path, "key"),  # type: ignore[arg-type]
            parent=spec.get("parent"),
            name=self.optional(spec, path, "name"),
            tags=self.entries(spec, path, "tags"),
            status=self.optional(spec, path, "status"),  # type: ignore[arg-type]
            where=self.locator.where(path),
            resume=self.flag(spec, path, "resume"),
            start=self.optional(spec, path, "start"),
            end=self.optional(spec, path, "end"),
        )

    def spans(self, spec: Mapping[str, Any], path: DataPath) -> SpanSpec:
        return SpanSpec(
            for_each=self.loops(spec, path),
            id=self.optional(spec, path, "id"),  # type: ignore[arg-type]
            parent=self.optional(spec, path, "parent"),
            name=self.optional(spec, path, "name"),  # type: ignore[arg-type]
            type=self.optional(spec, path, "type"),
            start=self.optional(spec, path, "start"),  # type: ignore[arg-type]
            end=self.optional(spec, path, "end"),
            inputs=self.optional(spec, path, "inputs"),
            outputs=self.optional(spec, path, "outputs"),
            attributes=self.entries(spec, path, "attributes"),
            status=self.optional(spec, path, "status"),
            error=self.optional(spec, path, "error"),
            exception=self.optional(spec, path, "exception"),
        )

    def expectations(self, spec: Mapping[str, Any], path: DataPath) -> ExpectationSpec:
        return ExpectationSpec(
            for_each=self.loops(spec, path),
            name=self.optional(spec, path, "name"),  # type: ignore[arg-type]
            value=self.optional(spec, path, "value"),  # type: ignore[arg-type]
            metadata=self.entries(spec, path, "metadata"),
            source_type=self.optional(spec, path, "source_type"),
            source_id=self.optional(spec, path, "source_id"),
        )

    def feedback(self, spec: Mapping[str, Any], path: DataPath) -> FeedbackSpec:
        return FeedbackSpec(
            for_each=self.loops(spec, path),
            name=self.optional(spec, path, "name"),  # type: ignore[arg-type]
            value=self.optional(spec, path, "value"),  # type: ignore[arg-type]
            rationale=self.optional(spec, path, "rationale"),
            metadata=self.entries(spec, path, "metadata"),
            error=self.optional(spec, path, "error"),
            source_type=self.optional(spec, path, "source_type"),
            source_id=self.optional(spec, path, "source_id"),
        )

    def trace(self, spec: Mapping[str, Any], path: DataPath) -> TraceSpec:
        spans = spec.get("spans")
        feedback = spec.get("feedback")
        expectations = spec.get("expectations")
        return TraceSpec(
            key=self.optional(spec, path, "key"),  # type: ignore[arg-type]
            name=self.optional(spec, path, "name"),
            start=self.optional(spec, path, "start"),  # type: ignore[arg-type]
            end=self.optional(spec, path, "end"),
            inputs=self.optional(spec, path, "inputs"),
            outputs=self.optional(spec, path, "outputs"),
            status=self.optional(spec, path, "status"),
            tags=self.entries(spec, path, "tags"),
            metadata=self.entries(spec, path, "metadata"),
            model=self.optional(spec, path, "model"),
            spans=self.spans(spans, (*path, "spans")) if isinstance(spans, Mapping) else None,
            feedback=(
                self.feedback(feedback, (*path, "feedback"))
                if isinstance(feedback, Mapping)
                else None
            ),
            expectations=(
                self.expectations(expectations, (*path, "expectations"))
                if isinstance(expectations, Mapping)
                else None
            ),
        )

    def model(self, spec: Mapping[str, Any], path: DataPath) -> ModelSpec:
        return ModelSpec(
            name=self.optional(spec, path, "name"),  # type: ignore[arg-type]
            tags=self.entries(spec, path, "tags"),
            params=self.entries(spec, path, "params"),
        )

    def dataset(self, spec: Mapping[str, Any], path: DataPath) -> DatasetSpec:
        return DatasetSpec(
            name=self.optional(spec, path, "name"),  # type: ignore[arg-type]
            digest=self.optional(spec, path, "digest"),  # type: ignore[arg-type]
            source=self.optional(spec, path, "source"),
            source_type=self.optional(spec, path, "source_type"),
            profile=self.value_or_object(spec, path, "profile"),
            schema=self.value_or_object(spec, path, "schema"),
            context=self.optional(spec, path, "context"),
        )

    def link(self, spec: Mapping[str, Any], path: DataPath) -> LinkSpec:
        return LinkSpec(
            model=self.optional(spec, path, "model"),
            dataset=self.optional(spec, path, "dataset"),
        )

    def rule(self, point: str, index: int, spec: Mapping[str, Any]) -> Rule:
        path = ("rules", point, index)
        count = spec.get("count")
        counts = (count,) if isinstance(count, str) else tuple(count or ())
        collect = spec.get("collect") if isinstance(spec.get("collect"), Mapping) else {}
        collected: list[tuple[str, Expr]] = []
        for name, text in collect.items():
            compiled = self.expr((*path, "collect", name), text)
            if compiled is not None:
                collected.append((name, compiled))
        trace = spec.get("trace")
        model, dataset, link = spec.get("model"), spec.get("dataset"), spec.get("link")
        lets = self.lets(spec, path)
        built = Rule(
            point=point,
            id=spec.get("id"),
            run=spec.get("run", ""),
            where=self.locator.where(path),
            when=self.optional(spec, path, "when"),
            unique=self.optional(spec, path, "unique"),
            count=counts,
            collect=tuple(collected),
            for_each=lets + self.loops(spec, path),
            step=self.optional(spec, path, "step"),
            params=self.entries(spec, path, "params"),
            tags=self.entries(spec, path, "tags"),
            metrics=self.entries(spec, path, "metrics"),
            table=self.template((*path, "table"), spec.get("table"), key=False),
            row=self.entries(spec, path, "row"),
            records=self.template((*path, "records"), spec.get("records"), key=False),
            record=self.value_or_object(spec, path, "record"),
            artifact=self.template((*path, "artifact"), spec.get("artifact"), key=False),
            value=self.value_or_object(spec, path, "value"),
            trace=self.trace(trace, (*path, "trace")) if isinstance(trace, Mapping) else None,
            model=self.model(model, (*path, "model")) if isinstance(model, Mapping) else None,
            dataset=(
                self.dataset(dataset, (*path, "dataset")) if isinstance(dataset, Mapping) else None
            ),
            link=self.link(link, (*path, "link")) if isinstance(link, Mapping) else None,
        )
        if lets:
            self.early_lets(built, frozenset(name for name, _ in lets), path)
        return built

    def compile(self) -> CompiledMapping:
        data = self.layered.data
        for problem in structure_problems(data):
            self.errors.append(
                self.locator.error(problem.path, problem.message, problem.hint, key=problem.key)
            )
        runs = {kind: self.run(kind, spec) for kind, spec in (data.get("runs") or {}).items()}
        rules: dict[str, tuple[Rule, ...]] = {}
        raw_rules = data.get("rules") or {}
        for point in LIFECYCLE_POINTS:
            compiled = tuple(
                self.rule(point, index, spec)
                for index, spec in enumerate(raw_rules.get(point) or [])
            )
            if compiled:
                rules[point] = compiled
        if self.errors:
            raise MappingInvalid(self.errors)
        return CompiledMapping(
            version=data.get("version", 1),
            runs=MappingProxyType(runs),
            rules=MappingProxyType(rules),
            counters=self.counters,
            series=self.series,
            effective=data,
            files=self.layered.files,
        )


def compile_layered(layered: Layered) -> CompiledMapping:
    """Compile and statically check a layered mapping.

    Args:
        layered: The effective mapping with its locator (see ``layering``).

    Returns:
        The compiled mapping.

    Raises:
        MappingInvalid: with every problem found, each placed in its own file.
    """
    return _Compiler(apply_defaults(layered)).compile()
