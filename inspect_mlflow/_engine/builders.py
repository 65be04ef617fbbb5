"""Output builders: the models, datasets and traces (spans, feedback, expectations) a rule logs.

Each builds one operation payload from a rule document; a required part that is null
(a trace key, a span id, a dataset digest) skips that item and is counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from inspect_mlflow._engine.reading import DocumentReader
from inspect_mlflow._engine.rule_document import RuleDocument
from inspect_mlflow._engine.run_state import RunState
from inspect_mlflow._engine.values import (
    MAX_PARAM_CHARS,
    REDACTED,
    compact_json,
    expr_text,
    is_credential_key,
    json_value,
    text_value,
)
from inspect_mlflow._engine.views import MISSING, to_json
from inspect_mlflow._keys import logged_model_name, to_text
from inspect_mlflow._mapping.model import (
    DatasetSpec,
    ExpectationSpec,
    Expr,
    FeedbackSpec,
    ModelSpec,
    ObjectExpr,
    SpanSpec,
    TraceSpec,
)
from inspect_mlflow._operations import (
    DatasetData,
    ExpectationData,
    FeedbackData,
    LogTrace,
    ModelData,
    SpanData,
)

__all__ = ["ASSESSMENT_SOURCE_TYPES", "MAX_DIGEST_CHARS", "OutputBuilders"]

ASSESSMENT_SOURCE_TYPES = ("CODE", "HUMAN", "LLM_JUDGE")
"""MLflow's assessment source types a mapping may name (``source_type``)."""

MAX_DIGEST_CHARS = 36
"""MLflow keeps a dataset digest of at most 36 characters."""


def _status_ok_error(value: Any) -> str:
    """``ERROR`` when the expression says so (any case), else ``OK``."""
    return "ERROR" if isinstance(value, str) and value.upper() == "ERROR" else "OK"


def _exception(value: Any) -> dict[str, str] | None:
    """A span's exception as ``{type, message, stacktrace}`` text; a string is the message."""
    value = to_json(value)
    if value is None or value is False:
        return None
    if not isinstance(value, dict):
        return {"message": to_text(value)}
    out = {
        name: to_text(value[name])
        for name in ("type", "message", "stacktrace")
        if value.get(name) is not None
    }
    return out or None


class OutputBuilders(DocumentReader):
    """Builds the structured outputs of a rule element: model, dataset, trace."""

    def _model(self, spec: ModelSpec, run: RunState, doc: RuleDocument) -> ModelData | None:
        """The model a run evaluated; remembered on the run (``run.models``)."""
        identity = self._opt_text(spec.name, doc)
        if identity is None:
            self.problems.add("rejected_value", spec.name.where, "model name is null; no model")
            return None
        if identity not in run.models:
            run.models.append(identity)
        params: dict[str, str] = {}
        for template, expr in spec.params:
            key = self._render(template, doc)
            text = None if key is None else text_value(self._opt_value(expr, doc), MAX_PARAM_CHARS)
            if key is not None and text is not None:
                params[key] = REDACTED if is_credential_key(key) else text
        return ModelData(
            key=identity,
            name=logged_model_name(identity),
            tags=self._string_map(spec.tags, doc),
            params=params,
        )

    def _dataset(self, spec: DatasetSpec, run: RunState, doc: RuleDocument) -> DatasetData | None:
        """The data a run evaluated on; its digest is remembered for ``link.dataset``."""
        name = self._opt_text(spec.name, doc)
        digest = self._opt_text(spec.digest, doc)
        if name is None or digest is None:
            where = spec.name.where if name is None else spec.digest.where
            self.problems.add("rejected_value", where, "dataset name or digest is null; no dataset")
            return None
        digest = digest[:MAX_DIGEST_CHARS]
        run.datasets[name] = digest
        source = json_value(self._opt_value(spec.source, doc))
        if not isinstance(source, dict):
            source = {} if source is None else {"uri": expr_text(source)}
        return DatasetData(
            name=name,
            digest=digest,
            source_type=self._opt_text(spec.source_type, doc) or "inspect",
            source=compact_json(source),
            profile=self._json_text(spec.profile, doc),
            schema=self._json_text(spec.schema, doc),
            context=self._opt_text(spec.context, doc),
        )

    def _json_text(self, expr: Expr | ObjectExpr | None, doc: RuleDocument) -> str | None:
        """A ``profile``/``schema`` as compact JSON text; null stays None."""
        if expr is None:
            return None
        value = self._value(expr, doc)
        if value is MISSING or value is None:
            return None
        return compact_json(json_value(value))

    # -- traces -----------------------------------------------------------------------

    def _trace(self, spec: TraceSpec, run: RunState, doc: RuleDocument) -> LogTrace | None:
        key = self._search(spec.key, doc)
        if key is MISSING:
            return None
        if key is None:
            self.problems.add("rejected_value", spec.key.where, "trace key is null; no trace")
            return None
        trace_key = expr_text(key) or ""
        start = self._time_ns(spec.start, doc)
        if start is None:
            return None
        end = self._time_ns(spec.end, doc, required=False) if spec.end is not None else None
        name = self._opt_text(spec.name, doc) or trace_key
        spans: tuple[SpanData, ...] = ()
        if spec.spans is not None:
            spans = tuple(self._spans(spec.spans, doc))
        feedback: tuple[FeedbackData, ...] = ()
        if spec.feedback is not None:
            feedback = tuple(self._feedback(spec.feedback, doc))
        expectations: tuple[ExpectationData, ...] = ()
        if spec.expectations is not None:
            expectations = tuple(self._expectations(spec.expectations, doc))
        return LogTrace(
            run=run.key,
            trace_key=trace_key,
            name=name,
            start_time_ns=start,
            end_time_ns=end if end is not None else start,
            inputs=self._opt_json(spec.inputs, doc),
            outputs=self._opt_json(spec.outputs, doc),
            status=_status_ok_error(self._opt_value(spec.status, doc)),  # type: ignore[arg-type]
            tags=self._string_map(spec.tags, doc),
            metadata=self._string_map(spec.metadata, doc),
            model=self._opt_text(spec.model, doc),
            spans=spans,
            feedback=feedback,
            expectations=expectations,
        )

    def _spans(self, spec: SpanSpec, doc: RuleDocument) -> Iterable[SpanData]:
        for element in self._elements(spec.for_each, doc):
            span_id = self._opt_text(spec.id, element)
            if span_id is None:
                self.problems.add("rejected_value", spec.id.where, "span id is null; span skipped")
                continue
            start = self._time_ns(spec.start, element)
            if start is None:
                continue
            end = self._time_ns(spec.end, element, required=False) if spec.end else None
            status = _status_ok_error(self._opt_value(spec.status, element))
            exception = _exception(self._opt_value(spec.exception, element))
            exc_message = None
            if exception is not None:
                status = "ERROR"
                exc_message = exception.get("message") or exception.get("type")
            yield SpanData(
                span_id=span_id,
                parent_id=self._opt_text(spec.parent, element),
                name=self._opt_text(spec.name, element) or span_id,
                span_type=self._opt_text(spec.type, element) or "UNKNOWN",
                start_time_ns=start,
                end_time_ns=end if end is not None else start,
                inputs=self._opt_json(spec.inputs, element),
                outputs=self._opt_json(spec.outputs, element),
                attributes=self._json_map(spec.attributes, element),
                status=status,  # type: ignore[arg-type]
                error=self._opt_text(spec.error, element) or exc_message,
                exception=exception,
            )

    def _assessments(
        self, spec: FeedbackSpec | ExpectationSpec, doc: RuleDocument, what: str
    ) -> Iterator[tuple[RuleDocument, str, Any]]:
        """(element, name, value) of each assessment ``spec`` gives; a null name is a problem."""
        for element in self._elements(spec.for_each, doc):
            name = self._opt_text(spec.name, element)
            if name is None:
                self.problems.add(
                    "rejected_value", spec.name.where, f"{what} name is null; skipped"
                )
                continue
            value = self._search(spec.value, element)
            if value is not MISSING:
                yield element, name, value

    def _feedback(self, spec: FeedbackSpec, doc: RuleDocument) -> Iterable[FeedbackData]:
        for element, name, value in self._assessments(spec, doc, "feedback"):
            yield FeedbackData(
                name=name,
                value=json_value(value),
                rationale=self._opt_text(spec.rationale, element),
                metadata=self._string_map(spec.metadata, element),
                error=self._opt_text(spec.error, element),
                **self._source(spec, element),
            )

    def _expectations(self, spec: ExpectationSpec, doc: RuleDocument) -> Iterable[ExpectationData]:
        for element, name, value in self._assessments(spec, doc, "expectation"):
            if value is None:
                continue
            yield ExpectationData(
                name=name,
                value=json_value(value),
                metadata=self._string_map(spec.metadata, element),
                **self._source(spec, element),
            )

    def _source(self, spec: FeedbackSpec | ExpectationSpec, doc: RuleDocument) -> dict[str, str]:
        """The assessment source the mapping names; absent parts keep the operation's default."""
        out: dict[str, str] = {}
        kind = self._opt_text(spec.source_type, doc)
        if kind is not None and kind.upper() in ASSESSMENT_SOURCE_TYPES:
            out["source_type"] = kind.upper()
        elif kind is not None:
            self.problems.add(
                "rejected_value",
                spec.source_type.where,  # type: ignore[union-attr]
                f"source_type {kind!r} is not one of {', '.join(ASSESSMENT_SOURCE_TYPES)}",
            )
        source_id = self._opt_text(spec.source_id, doc)
        if source_id is not None:
            out["source_id"] = source_id
        return out
