"""The rule pipeline: ``when`` -> ``unique`` -> ``count`` -> ``collect`` -> ``for_each`` -> outputs.

One rule firing at one point on its run, per ``docs/mapping-language.md``: its outputs
(params, tags, metrics, table rows, records, artifacts, models, datasets, traces) are
merged over its ``for_each`` elements into one operation per kind of write.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from inspect_mlflow._engine.builders import OutputBuilders
from inspect_mlflow._engine.expr_compiler import is_false
from inspect_mlflow._engine.rule_document import RuleDocument
from inspect_mlflow._engine.run_state import UNKNOWN_VALUE, MetricSteps, RunState
from inspect_mlflow._engine.runs import RunLifecycle
from inspect_mlflow._engine.values import (
    MAX_PARAM_CHARS,
    MAX_RECORD_CHARS,
    MAX_TAG_CHARS,
    REDACTED,
    Rejected,
    cell_value,
    expr_text,
    fit_json,
    is_credential_key,
    json_value,
    metric_value,
    step_value,
)
from inspect_mlflow._engine.views import MISSING
from inspect_mlflow._mapping.model import CompiledMapping, Entries, KeyTemplate, Rule, Where
from inspect_mlflow._operations import (
    AppendRows,
    DatasetData,
    LogArtifact,
    LogInputs,
    LogMetrics,
    LogParams,
    LogTrace,
    Metric,
    ModelData,
    Operation,
    SetTags,
)

__all__ = ["Outputs", "RulePipeline"]


class RulePipeline(RunLifecycle, OutputBuilders):
    """Applies one rule at its point: its steps in order, then its outputs per element."""

    log_artifacts: bool = True
    """False drops tables, records and artifacts; they are then not even evaluated."""
    traces: bool = True
    """False skips ``trace`` outputs without building them."""

    def __init__(self, mapping: CompiledMapping) -> None:
        super().__init__(mapping)
        self._rule_ids: dict[int, int] = {}
        """id(rule) -> its number (the key of its ``unique`` set in a run)."""
        for rules in mapping.rules.values():
            for rule in rules:
                self._rule_ids[id(rule)] = len(self._rule_ids)

    def _apply(
        self,
        rule: Rule,
        ctx: Mapping[str, Any],
        now_ms: int,
        ops: list[Operation],
        keys: dict[str, str | None],
    ) -> None:
        key = self._run_key(rule.run, ctx, keys)
        run = self._runs.get(key) if key else None
        if run is None:
            self.problems.add("no_run", rule.where, f"no open {rule.run} run at {rule.point}")
            return
        doc = RuleDocument(ctx, self, run, {})
        if rule.when is not None:
            cond = self._search(rule.when, doc)
            if cond is MISSING or is_false(cond):
                return
        if rule.unique is not None:
            token = self._search(rule.unique, doc)
            if token is MISSING:
                return
            if token is not None:
                seen = run.seen.setdefault(self._rule_ids.get(id(rule), -1), set())
                text = expr_text(token) or ""
                if text in seen:
                    return
                seen.add(text)
        if rule.count:
            for name in rule.count:
                run.counters[name] = run.counters.get(name, 0) + 1
            doc.refresh()
        if rule.collect:
            for name, expr in rule.collect:
                value = self._search(expr, doc)
                if value is not MISSING and value is not None:
                    run.series.setdefault(name, []).append(json_value(value))
            doc.refresh()
        out = Outputs()
        for element in self._elements(rule.for_each, doc):
            self._outputs(rule, run, element, now_ms, out)
        out.emit(run.key, ops)

    def _outputs(
        self, rule: Rule, run: RunState, doc: RuleDocument, now_ms: int, out: Outputs
    ) -> None:
        """Evaluate every output of one rule element into ``out``."""
        for template, expr in rule.params:
            self._text_entry(run, "param", template, expr, doc, MAX_PARAM_CHARS, out.params)
        for template, expr in rule.tags:
            self._text_entry(run, "tag", template, expr, doc, MAX_TAG_CHARS, out.tags)
        if rule.metrics:
            self._metrics(rule, run, doc, now_ms, out)
        if self.log_artifacts:
            if rule.table is not None and rule.row:
                path = self._path(run, rule.table, doc)
                if path is not None:
                    row = self._row(run, path, rule.row, doc)
                    out.tables.setdefault(path, []).append(row)
            if rule.records is not None and rule.record is not None:
                path = self._path(run, rule.records, doc)
                value = self._value(rule.record, doc) if path is not None else None
                if path is not None and value is not MISSING and value is not None:
                    record = fit_json(json_value(value), MAX_RECORD_CHARS)
                    out.records.setdefault(path, []).append(record)
            if rule.artifact is not None and rule.value is not None:
                path = self._path(run, rule.artifact, doc)
                value = self._value(rule.value, doc) if path is not None else None
                if path is not None and value is not MISSING and value is not None:
                    out.artifacts.append((path, json_value(value)))
        if rule.model is not None:
            model = self._model(rule.model, run, doc)
            if model is not None:
                out.models.append(model)
        if rule.dataset is not None:
            dataset = self._dataset(rule.dataset, run, doc)
            if dataset is not None:
                out.datasets.append(dataset)
        if rule.trace is not None and self.traces:
            trace = self._trace(rule.trace, run, doc)
            if trace is not None:
                out.traces.append(trace)

    def _metrics(
        self, rule: Rule, run: RunState, doc: RuleDocument, now_ms: int, out: Outputs
    ) -> None:
        step = 0
        if rule.step is not None:
            value = self._search(rule.step, doc)
            if value is MISSING:
                return
            checked = step_value(value)
            if isinstance(checked, Rejected):
                self.problems.add("rejected_value", rule.step.where, checked.reason)
                return
            step = checked
        model = dataset = digest = None
        if rule.link is not None:
            model = self._opt_text(rule.link.model, doc)
            dataset = self._opt_text(rule.link.dataset, doc)
            if dataset is not None:
                digest = run.datasets.get(dataset)
                if digest is None:
                    self.problems.add(
                        "rejected_value",
                        rule.link.dataset.where,  # type: ignore[union-attr]
                        f"dataset {dataset!r} is not an input of {run.key}; "
                        "metrics written without it",
                    )
                    dataset = None
        for template, expr in rule.metrics:
            original = self._render(template, doc)
            if original is None:
                continue
            value = self._search(expr, doc)
            if value is MISSING:
                continue
            number = metric_value(value)
            if number is None:
                continue
            if isinstance(number, Rejected):
                self.problems.add("rejected_value", expr.where, f"{original}: {number.reason}")
                continue
            key = self._safe(run, "metric", original, template.where)
            points = run.points.get(key)
            if points is None:
                run.points[key] = MetricSteps(step, number)
            else:
                earlier = points.add(step, number)
                if earlier is not None and earlier != number:
                    self._step_reused(run, key, step, earlier, number, template.where)
            out.metrics.append(Metric(key, number, step, now_ms, model, dataset, digest))

    def _step_reused(
        self, run: RunState, key: str, step: int, earlier: Any, value: float, where: Where
    ) -> None:
        """Count a metric point that lands on a step already holding another value."""
        was = "another value" if earlier is UNKNOWN_VALUE else repr(earlier)
        self.problems.add(
            "step_reused",
            where,
            f"{key!r} written twice at step {step} of {run.key} ({was}, then {value!r}); "
            "MLflow shows only one of them",
        )

    def _row(self, run: RunState, path: str, entries: Entries, doc: RuleDocument) -> dict[str, Any]:
        plan = run.columns.get((path, id(entries)))
        if plan is None:
            plan = run.columns[(path, id(entries))] = [
                self._column(run, path, template) if template.is_fixed else None
                for template, _ in entries
            ]
        row: dict[str, Any] = {}
        for (template, expr), column in zip(entries, plan, strict=True):
            if column is None:
                original = self._render(template, doc)
                if original is None:
                    continue
                column = self._column(run, path, template, original)
            name, secret = column
            value = self._search(expr, doc)
            cell = None if value is MISSING else cell_value(json_value(value))
            row[name] = REDACTED if cell is not None and secret else cell
        return row

    def _column(
        self, run: RunState, path: str, template: KeyTemplate, original: str | None = None
    ) -> tuple[str, bool]:
        """A column's safe name in the run's table, and whether it names a credential."""
        if original is None:
            original = "".join(str(part) for part in template.parts)
        safe = self._safe(run, f"column:{path}", original, template.where)
        return safe, is_credential_key(original)

    def _path(self, run: RunState, template: KeyTemplate, doc: RuleDocument) -> str | None:
        original = self._render(template, doc)
        if original is None:
            return None
        return self._safe(run, "artifact", original, template.where)


class Outputs:
    """What one rule firing produced, merged over its ``for_each`` elements."""

    __slots__ = (
        "params",
        "tags",
        "metrics",
        "tables",
        "records",
        "artifacts",
        "traces",
        "models",
        "datasets",
    )

    def __init__(self) -> None:
        self.params: dict[str, str] = {}
        self.tags: dict[str, str] = {}
        self.metrics: list[Metric] = []
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self.records: dict[str, list[Any]] = {}
        self.artifacts: list[tuple[str, Any]] = []
        self.traces: list[LogTrace] = []
        self.models: list[ModelData] = []
        self.datasets: list[DatasetData] = []

    def emit(self, run: str, ops: list[Operation]) -> None:
        """Append the operations, one per kind of write (rows grouped per file)."""
        if self.models or self.datasets:
            ops.append(LogInputs(run, tuple(self.models), tuple(self.datasets)))
        if self.params:
            ops.append(LogParams(run, self.params))
        if self.tags:
            ops.append(SetTags(run, self.tags))
        if self.metrics:
            ops.append(LogMetrics(run, tuple(self.metrics)))
        for path, rows in self.tables.items():
            ops.append(AppendRows(run, path, tuple(rows), "table"))
        for path, records in self.records.items():
            ops.append(AppendRows(run, path, tuple(records), "records"))
        for path, content in self.artifacts:
            ops.append(LogArtifact(run, path, content))
        ops.extend(self.traces)
