"""Reading a rule document: expressions evaluated, problems counted, keys made MLflow-safe.

The base of the engine (:class:`~inspect_mlflow._engine.engine.Engine` is built on it):
every output is read through these methods, so an expression that fails skips only its
output and is counted in ``problems`` with where it came from, and two keys that become
one MLflow-safe key in a run are told apart by a hash suffix.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from inspect_mlflow._engine.expr_compiler import Evaluator
from inspect_mlflow._engine.problems import Problems
from inspect_mlflow._engine.rule_document import RuleDocument
from inspect_mlflow._engine.run_state import RunState
from inspect_mlflow._engine.values import (
    MAX_TAG_CHARS,
    REDACTED,
    expr_text,
    is_credential_key,
    json_value,
    text_value,
)
from inspect_mlflow._engine.views import MISSING, to_json
from inspect_mlflow._keys import MAX_KEY_LENGTH, safe_key, safe_path, to_text
from inspect_mlflow._mapping.functions import OPTIONS
from inspect_mlflow._mapping.model import (
    CompiledMapping,
    Entries,
    Expr,
    KeyTemplate,
    Loops,
    ObjectExpr,
    Rule,
    Where,
)

__all__ = ["DocumentReader"]

_SAFE_CACHE_LIMIT = 20_000


class DocumentReader:
    """Evaluates a mapping's expressions on rule documents, never raising into the hook.

    Args:
        mapping: The compiled, validated mapping.
    """

    def __init__(self, mapping: CompiledMapping) -> None:
        self.mapping = mapping
        self.problems = Problems()
        self._safe_cache: dict[str, str] = {}
        self._path_cache: dict[str, str] = {}
        """Artifact paths keep Unicode letters (:func:`safe_path`); keys do not."""
        self._epoch_ns = _epoch_ns_function()
        self._evaluator = Evaluator(OPTIONS)
        self.on_search: Callable[[Expr, Any, Any], None] | None = None
        """Called after each evaluation with (expression, document, value); the value is
        ``MISSING`` when it raised. For a watcher such as the dry run (see ``Engine``)."""
        self.explain_error: Callable[[Expr, Exception], str] | None = None
        """How an expression that raised is described in its problem (None: its text and
        the error)."""
        self._fixed: dict[int, str] = {}
        """id(key template) -> its text, for templates without placeholders."""
        for rules in mapping.rules.values():
            for rule in rules:
                for template in self._templates(rule):
                    if template.is_fixed:
                        self._fixed[id(template)] = "".join(str(p) for p in template.parts)

    def _guard(self, where: Where, step: Callable[..., None], *args: Any) -> None:
        """Run one open or rule; a bug in it is counted, never raised into the hook."""
        try:
            step(*args)
        except Exception as err:  # the engine must not break the eval
            self.problems.add("expression_error", where, f"unexpected error: {err!r}")

    def _search(self, expr: Expr, doc: Any) -> Any:
        """Evaluate (compiled to closures once); on error count it and return ``MISSING``."""
        try:
            value = self._evaluator.search(expr, doc)
        except Exception as err:
            explain = self.explain_error
            message = explain(expr, err) if explain is not None else f"{expr.text}: {err}"
            self.problems.add("expression_error", expr.where, message)
            value = MISSING
        if self.on_search is not None:
            self.on_search(expr, doc, value)
        return value

    def _value(self, expr: Expr | ObjectExpr, doc: RuleDocument) -> Any:
        """A ``record``/``value``: one expression, or an object built entry by entry.

        An object entry that fails is left out (and counted); the others still land.
        """
        if not isinstance(expr, ObjectExpr):
            return self._search(expr, doc)
        out: dict[str, Any] = {}
        for template, item in expr.entries:
            name = self._render(template, doc)
            if name is None:
                continue
            value = self._search(item, doc)
            if value is not MISSING:
                out[name] = value
        return out

    def _render(self, template: KeyTemplate, doc: RuleDocument) -> str | None:
        """Fill a key template; None when a placeholder is null or fails."""
        fixed = self._fixed.get(id(template))
        if fixed is not None:
            return fixed
        out: list[str] = []
        for part in template.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = self._search(part, doc)
            if value is MISSING or value is None:
                return None
            out.append(to_text(to_json(value)))
        return "".join(out)

    def _safe(self, run: RunState, space: str, original: str, where: Where) -> str:
        """The MLflow-safe key for ``original`` in ``run``; a hash suffix after a collision."""
        renamed = run.renamed.get((space, original))
        if renamed is not None:
            return renamed
        is_path = space == "artifact"
        cache = self._path_cache if is_path else self._safe_cache
        safe = cache.get(original)
        if safe is None:
            if len(cache) >= _SAFE_CACHE_LIMIT:
                cache.clear()
            safe = cache[original] = safe_path(original) if is_path else safe_key(original)
        owner = run.keys.setdefault((space, safe), original)
        if owner == original:
            return safe
        alt = _suffixed(safe, original, is_path=is_path)
        run.renamed[(space, original)] = alt
        run.keys.setdefault((space, alt), original)
        self.problems.add(
            "key_collision",
            where,
            f"{original!r} and {owner!r} both become {safe!r} in {run.key}; "
            f"{original!r} is written as {alt!r}",
        )
        return alt

    def _elements(self, loops: Loops, doc: RuleDocument) -> list[RuleDocument]:
        """One document per element of the ``for_each`` cartesian product (or just ``doc``)."""
        docs = [doc]
        for name, expr in loops:
            nxt: list[RuleDocument] = []
            for current in docs:
                value = self._search(expr, current)
                if value is MISSING or value is None:
                    continue
                if isinstance(value, Mapping):
                    seq: Iterable[Any] = [{"key": k, "value": v} for k, v in value.items()]
                elif isinstance(value, list):
                    seq = value
                else:
                    self.problems.add(
                        "rejected_value",
                        expr.where,
                        f"for_each {name} must give a list or an object, "
                        f"got {type(to_json(value)).__name__}",
                    )
                    continue
                nxt.extend(current.bind({name: item}) for item in seq)
            docs = nxt
            if not docs:
                break
        return docs

    def _text_entry(
        self,
        run: RunState,
        space: str,
        template: KeyTemplate,
        expr: Expr,
        doc: RuleDocument,
        limit: int,
        into: dict[str, str],
    ) -> None:
        """One param or tag: key made safe, value as bounded text, credentials hidden."""
        original = self._render(template, doc)
        if original is None:
            return
        value = self._search(expr, doc)
        if value is MISSING:
            return
        text = text_value(value, limit)
        if text is None:
            return
        if is_credential_key(original):
            text = REDACTED
        into[self._safe(run, space, original, template.where)] = text

    def _time_ns(self, expr: Expr | None, doc: RuleDocument, required: bool = True) -> int | None:
        """An ISO time or epoch seconds as integer nanoseconds; counted when unusable."""
        if expr is None:
            return None
        value = self._search(expr, doc)
        if value is MISSING:
            return None
        if value is None:
            if required:
                self.problems.add("rejected_value", expr.where, "time is null")
            return None
        try:
            return int(self._epoch_ns(to_json(value)))
        except Exception as err:
            self.problems.add("rejected_value", expr.where, f"not a time: {err}")
            return None

    def _opt_value(self, expr: Expr | None, doc: RuleDocument) -> Any:
        if expr is None:
            return None
        value = self._search(expr, doc)
        return None if value is MISSING else value

    def _opt_text(self, expr: Expr | None, doc: RuleDocument) -> str | None:
        return expr_text(self._opt_value(expr, doc))

    def _opt_json(self, expr: Expr | None, doc: RuleDocument) -> Any:
        return json_value(self._opt_value(expr, doc))

    def _string_map(self, entries: Entries, doc: RuleDocument) -> dict[str, str]:
        out: dict[str, str] = {}
        for template, expr in entries:
            key = self._render(template, doc)
            if key is None:
                continue
            value = self._opt_value(expr, doc)
            text = text_value(value, MAX_TAG_CHARS)
            if text is not None:
                out[key] = REDACTED if is_credential_key(key) else text
        return out

    def _json_map(self, entries: Entries, doc: RuleDocument) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for template, expr in entries:
            key = self._render(template, doc)
            if key is None:
                continue
            value = json_value(self._opt_value(expr, doc))
            if value is not None:
                out[key] = REDACTED if is_credential_key(key) else value
        return out

    @staticmethod
    def _templates(rule: Rule) -> Iterable[KeyTemplate]:
        for entries in (rule.params, rule.tags, rule.metrics, rule.row):
            for template, _ in entries:
                yield template
        for template in (rule.table, rule.records, rule.artifact):
            if template is not None:
                yield template
        for value in (rule.record, rule.value):
            if isinstance(value, ObjectExpr):
                for template, _ in value.entries:
                    yield template


def _suffixed(safe: str, original: str, *, is_path: bool) -> str:
    """``safe`` with ``_<6 hex of sha1(original)>``; before a file extension for paths."""
    suffix = "_" + hashlib.sha1(original.encode("utf-8")).hexdigest()[:6]
    if is_path:
        head, slash, last = safe.rpartition("/")
        stem, dot, ext = last.rpartition(".")
        if dot and stem:
            return safe_path(f"{head}{slash}{stem}{suffix}.{ext}")
        return safe_path(safe[: MAX_KEY_LENGTH - len(suffix)] + suffix)
    return safe_key(safe[: MAX_KEY_LENGTH - len(suffix)] + suffix)


def _epoch_ns_function() -> Callable[[Any], Any]:
    """The mapping language's ``epoch_ns`` (one definition of time parsing for both)."""
    functions = OPTIONS.custom_functions

    def epoch_ns(value: Any) -> Any:
        return functions.call_function("epoch_ns", [value])

    return epoch_ns
