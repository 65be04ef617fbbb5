"""Write operations: the plain-data boundary between the mapping engine and the writer.

The engine turns a lifecycle point into a list of these; the writer turns them into
MLflow calls. They hold only JSON-like values (str, int, float, bool, None, lists and
dicts of those) so they can be queued, spooled to JSON lines and replayed later.

Runs are named by a *logical key* (``"<run kind>:<key value>"``, for example
``"task:Zk3..."``), never by an MLflow run id: a run that never reached the server can
still be created when a spool is replayed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

JSONValue: TypeAlias = Any
"""A value made only of dict, list, str, int, float, bool and None."""

RunStatus = Literal["FINISHED", "FAILED", "KILLED"]


@dataclass(frozen=True, slots=True)
class OpenRun:
    """Create a run (once per logical key; a second OpenRun for the same key is ignored)."""

    run: str
    """Logical key of the run."""
    kind: str
    """Run kind from the mapping (``eval``, ``task``, ...)."""
    name: str | None
    """Run name shown in the MLflow UI."""
    parent: str | None
    """Logical key of the parent run, or None for a top-level run."""
    tags: dict[str, str] = field(default_factory=dict)
    """Tags set when the run is created."""
    start_time_ms: int = 0
    """Start time, milliseconds since the epoch."""
    resume: bool = False
    """Continue the run with this logical key if it exists already (found by its key,
    even when it ended in an earlier process): set it RUNNING again, keep its creation
    tags, and append to its tables at close instead of replacing them."""


RUN_STATE_PATH = "inspect_mlflow/state.json"
"""Artifact where a resumable run's counters and series are kept when it closes, so a
later process that continues the run carries on counting (``{"version", "counters",
"series"}``)."""


@dataclass(frozen=True, slots=True)
class SetTags:
    """Set tags on an open run."""

    run: str
    tags: dict[str, str]


@dataclass(frozen=True, slots=True)
class LogParams:
    """Log params on a run (values already stringified and cut to MLflow's limit)."""

    run: str
    params: dict[str, str]


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric point."""

    key: str
    value: float
    step: int
    timestamp_ms: int
    model: str | None = None
    """Identity of the LoggedModel the point is for (see :class:`ModelData`): the sink
    sends it with that model's id, so the model's page lists it."""
    dataset_name: str | None = None
    """Name of the dataset the point was measured on (with ``dataset_digest``)."""
    dataset_digest: str | None = None


@dataclass(frozen=True, slots=True)
class LogMetrics:
    """Log metric points on a run."""

    run: str
    metrics: tuple[Metric, ...]


@dataclass(frozen=True, slots=True)
class AppendRows:
    """Append rows to an accumulated JSON artifact, written once when the run closes.

    ``format="table"`` writes MLflow's table format (``{"columns": [...], "data": [...]}``)
    and registers the file in the run's ``mlflow.loggedArtifacts`` tag so the UI shows it
    as a table; ``format="records"`` writes a plain JSON array of the rows.
    """

    run: str
    path: str
    rows: tuple[dict[str, JSONValue], ...]
    format: Literal["table", "records"] = "table"


@dataclass(frozen=True, slots=True)
class LogArtifact:
    """Write one JSON document as an artifact at ``path`` (relative to the run root)."""

    run: str
    path: str
    content: JSONValue


@dataclass(frozen=True, slots=True)
class SpanData:
    """One span of a trace, with real start and end times."""

    span_id: str
    """Unique within the trace (for example an Inspect event uuid)."""
    parent_id: str | None
    """span_id of the parent span; None means the trace's root span."""
    name: str
    span_type: str
    """MLflow span type: LLM, TOOL, CHAIN, AGENT, RETRIEVER, UNKNOWN, ..."""
    start_time_ns: int
    end_time_ns: int
    inputs: JSONValue = None
    outputs: JSONValue = None
    attributes: dict[str, JSONValue] = field(default_factory=dict)
    status: Literal["OK", "ERROR"] = "OK"
    error: str | None = None
    exception: dict[str, str] | None = None
    """The exception the span raised (``type``, ``message``, ``stacktrace``, each
    optional): recorded as the span's ``exception`` event, as OpenTelemetry does."""


@dataclass(frozen=True, slots=True)
class ExpectationData:
    """One ground-truth assessment (MLflow ``Expectation``) on a trace."""

    name: str
    value: JSONValue
    source_type: str = "CODE"
    source_id: str = "inspect_ai"
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FeedbackData:
    """One assessment (``mlflow.log_feedback`` semantics) on a trace."""

    name: str
    value: JSONValue
    rationale: str | None = None
    source_type: str = "CODE"
    source_id: str = "inspect_ai"
    metadata: dict[str, str] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class LogTrace:
    """Store one trace (root span + child spans) linked to a run, then its feedback."""

    run: str
    trace_key: str
    """Logical, deterministic key of the trace (for example the Inspect sample uuid)."""
    name: str
    start_time_ns: int
    end_time_ns: int
    inputs: JSONValue = None
    outputs: JSONValue = None
    status: Literal["OK", "ERROR"] = "OK"
    tags: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    model: str | None = None
    """Identity of the LoggedModel the trace is for: the sink sets its id as the trace
    metadata ``mlflow.modelId``, which links the trace to the model."""
    spans: tuple[SpanData, ...] = ()
    feedback: tuple[FeedbackData, ...] = ()
    expectations: tuple[ExpectationData, ...] = ()
    """Ground truth (the sample's target): sent with the trace like its feedback."""


@dataclass(frozen=True, slots=True)
class ModelData:
    """An evaluated model: one MLflow LoggedModel per identity in the experiment."""

    key: str
    """The model's identity (for example ``openai/gpt-4o``): the sink finds the model
    again by it, in this and later evals, instead of creating another."""
    name: str
    """The LoggedModel's name (the identity with the characters MLflow refuses replaced)."""
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    """Set when the model is created (a model found again keeps its own)."""


@dataclass(frozen=True, slots=True)
class DatasetData:
    """The data a run evaluated on, as an MLflow dataset input."""

    name: str
    digest: str
    """Short and stable for the same data; another digest is another dataset."""
    source_type: str = "inspect"
    source: str = "{}"
    """JSON text naming where the data came from (``{"uri": ...}``)."""
    profile: str | None = None
    """JSON text summarising the data (``{"num_rows": 120}``)."""
    schema: str | None = None
    context: str | None = None
    """The input tag ``mlflow.data.context`` (``eval``, ``train``, ...)."""


@dataclass(frozen=True, slots=True)
class LogInputs:
    """Link models and datasets to a run as its inputs (models created when missing)."""

    run: str
    models: tuple[ModelData, ...] = ()
    datasets: tuple[DatasetData, ...] = ()


@dataclass(frozen=True, slots=True)
class CloseRun:
    """Terminate a run: flush its accumulated tables and records, then set its status."""

    run: str
    status: RunStatus
    end_time_ms: int


Operation: TypeAlias = (
    OpenRun
    | SetTags
    | LogParams
    | LogMetrics
    | AppendRows
    | LogArtifact
    | LogTrace
    | LogInputs
    | CloseRun
)
"""Every write the engine can ask of the writer."""

ALL_OPERATIONS: tuple[type, ...] = (
    OpenRun,
    SetTags,
    LogParams,
    LogMetrics,
    AppendRows,
    LogArtifact,
    LogTrace,
    LogInputs,
    CloseRun,
)
