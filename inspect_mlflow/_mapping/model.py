"""The compiled mapping: immutable, validated, every expression parsed once.

The loader (``_mapping.load``) builds these from YAML; the engine (``_engine.engine``)
only reads them. No expression text is parsed after loading.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from inspect_mlflow._keys import to_text

LIFECYCLE_POINTS: tuple[str, ...] = (
    "eval_set_start",
    "eval_set_end",
    "run_start",
    "run_end",
    "task_start",
    "task_end",
    "sample_init",
    "sample_start",
    "sample_attempt_start",
    "sample_attempt_end",
    "sample_event",
    "sample_scoring",
    "sample_end",
    "model_usage",
    "model_cache_usage",
    "before_model_generate",
    "model_retry",
)
"""Inspect's hook methods without ``on_``: the only names a mapping may use for points."""

RUN_STATUSES: tuple[str, ...] = ("FINISHED", "FAILED", "KILLED")


class Searchable(Protocol):
    """What the engine needs of a compiled expression."""

    text: str

    def search(self, doc: Any) -> Any:
        """Evaluate against a context document; raise on a runtime type error."""
        ...


@dataclass(frozen=True, slots=True)
class Where:
    """Where a piece of the mapping came from, for runtime error reports."""

    file: str
    json_path: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        place = f"{self.file}:{self.line}:{self.col}" if self.line else self.file
        return f"{place}: {self.json_path}"


@dataclass(frozen=True, slots=True)
class Expr:
    """A compiled JMESPath expression with the mapping's extra functions."""

    text: str
    parsed: Any
    """The ``jmespath`` ParsedResult."""
    where: Where
    options: Any = field(repr=False, compare=False, default=None)
    """``jmespath.Options`` carrying the custom functions."""

    def search(self, doc: Any) -> Any:
        """Evaluate against ``doc``; JMESPath errors propagate to the caller."""
        return self.parsed.search(doc, self.options)


@dataclass(frozen=True, slots=True)
class KeyTemplate:
    """A key such as ``usage/{model.key}/tokens``: literal text and expressions."""

    text: str
    parts: tuple[str | Expr, ...]
    where: Where

    @property
    def is_fixed(self) -> bool:
        """True when the key has no placeholder."""
        return all(isinstance(p, str) for p in self.parts)

    def render(self, doc: Any, to_text: Any = str) -> str | None:
        """Fill the placeholders; None when any placeholder evaluates to null."""
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = part.search(doc)
            if value is None:
                return None
            out.append(to_text(value))
        return "".join(out)


Entries = tuple[tuple[KeyTemplate, Expr], ...]
"""Ordered (key template, value expression) pairs of a params/tags/metrics/row map."""


@dataclass(frozen=True, slots=True)
class ObjectExpr:
    """A map key -> expression that evaluates to one object (``record``/``value`` maps).

    It has the same ``text``/``search`` shape as :class:`Expr`, so the engine treats a
    ``record`` or ``value`` alike whichever form the mapping used. A key whose
    placeholder is null is left out; a null value stays in the object.
    """

    text: str
    entries: tuple[tuple[KeyTemplate, Expr], ...]
    where: Where

    def search(self, doc: Any) -> Any:
        """Evaluate every entry against ``doc``; JMESPath errors propagate."""
        out: dict[str, Any] = {}
        for key, value in self.entries:
            name = key.render(doc, to_text)
            if name is not None:
                out[name] = value.search(doc)
        return out


Loops = tuple[tuple[str, Expr], ...]
"""Ordered (name, list expression) pairs of a ``for_each``."""


@dataclass(frozen=True, slots=True)
class SpanSpec:
    """How to build the child spans of a trace."""

    for_each: Loops
    id: Expr
    parent: Expr | None
    name: Expr
    type: Expr | None
    start: Expr
    end: Expr | None
    inputs: Expr | None
    outputs: Expr | None
    attributes: Entries
    status: Expr | None
    error: Expr | None
    exception: Expr | None = None
    """An object ``{type, message, stacktrace}`` (or a message): the span's exception
    event; the span is then ERROR."""


@dataclass(frozen=True, slots=True)
class ExpectationSpec:
    """How to build the ground-truth assessments (MLflow expectations) of a trace."""

    for_each: Loops
    name: Expr
    value: Expr
    metadata: Entries
    source_type: Expr | None = None
    """MLflow's assessment source type (``CODE``, ``HUMAN``, ``LLM_JUDGE``); null: ``CODE``."""
    source_id: Expr | None = None
    """Who made the assessment (a scorer's name, say); null: ``inspect_ai``."""


@dataclass(frozen=True, slots=True)
class FeedbackSpec:
    """How to build the assessments of a trace."""

    for_each: Loops
    name: Expr
    value: Expr
    rationale: Expr | None
    metadata: Entries
    error: Expr | None
    source_type: Expr | None = None
    """MLflow's assessment source type (``CODE``, ``HUMAN``, ``LLM_JUDGE``); null: ``CODE``."""
    source_id: Expr | None = None
    """Who made the assessment (a scorer's name, say); null: ``inspect_ai``."""


@dataclass(frozen=True, slots=True)
class TraceSpec:
    """How to build one trace from a context."""

    key: Expr
    name: Expr | None
    start: Expr
    end: Expr | None
    inputs: Expr | None
    outputs: Expr | None
    status: Expr | None
    tags: Entries
    metadata: Entries
    spans: SpanSpec | None
    feedback: FeedbackSpec | None
    expectations: ExpectationSpec | None = None
    model: Expr | None = None
    """Identity of the model the trace is for (its id becomes ``mlflow.modelId``)."""


@dataclass(frozen=True, slots=True)
class RunSpec:
    """A run kind: when it opens and closes, how it is keyed, named, tagged, ended."""

    kind: str
    open: str
    close: str
    key: Expr
    parent: str | None
    name: Expr | None
    tags: Entries
    status: Expr
    where: Where
    resume: Expr | None = None
    """When truthy on the opening context, a run with the same key that was closed
    before (in this process or an earlier one) is continued instead of left closed."""
    start: Expr | None = None
    """The run's start time (ISO or epoch seconds) on the opening context; null or
    absent: the time of the point (the log's time on import)."""
    end: Expr | None = None
    """The run's end time on the closing context; null or absent: the point's time."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """How to name (and tag) the model a run evaluated: a LoggedModel in MLflow."""

    name: Expr
    """The model's identity; the same value is the same LoggedModel, in later evals too."""
    tags: Entries = ()
    params: Entries = ()


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """How to describe the data a run evaluated on: a dataset input in MLflow."""

    name: Expr
    digest: Expr
    source: Expr | None = None
    source_type: Expr | None = None
    profile: Expr | ObjectExpr | None = None
    schema: Expr | ObjectExpr | None = None
    context: Expr | None = None


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """What a rule's metrics are measured for: a model (by identity), a dataset (by name)."""

    model: Expr | None = None
    dataset: Expr | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of one lifecycle point."""

    point: str
    id: str | None
    run: str
    where: Where
    when: Expr | None = None
    unique: Expr | None = None
    count: tuple[str, ...] = ()
    collect: tuple[tuple[str, Expr], ...] = ()
    for_each: Loops = ()
    step: Expr | None = None
    params: Entries = ()
    tags: Entries = ()
    metrics: Entries = ()
    table: KeyTemplate | None = None
    row: Entries = ()
    records: KeyTemplate | None = None
    record: Expr | ObjectExpr | None = None
    artifact: KeyTemplate | None = None
    value: Expr | ObjectExpr | None = None
    trace: TraceSpec | None = None
    model: ModelSpec | None = None
    dataset: DatasetSpec | None = None
    link: LinkSpec | None = None


@dataclass(frozen=True, slots=True)
class CompiledMapping:
    """A whole validated mapping, ready for the engine."""

    version: int
    runs: Mapping[str, RunSpec]
    rules: Mapping[str, tuple[Rule, ...]]
    """Rules by lifecycle point; points with no rules are absent."""
    counters: frozenset[str]
    series: frozenset[str]
    effective: Mapping[str, Any]
    """The merged mapping as plain data (what ``check --print-effective`` prints)."""
    files: tuple[str, ...]
    """The files it was built from, base first."""

    def resume_points(self) -> frozenset[str]:
        """Points that may open a resumable run (its saved state may need reading first)."""
        return frozenset(spec.open for spec in self.runs.values() if spec.resume is not None)

    def points(self) -> frozenset[str]:
        """Every lifecycle point that opens or closes a run or has a rule."""
        found = set(self.rules)
        for spec in self.runs.values():
            found.update((spec.open, spec.close))
        return frozenset(found)
