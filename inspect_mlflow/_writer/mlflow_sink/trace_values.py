"""What the parts of a trace look like in MLflow: reserved keys, identities, attribute text.

Identity is deterministic, so a batch that is sent twice (a retry, a spool replay) updates
what is there instead of duplicating it: the trace id is ``tr-`` + 32 hex digits of a hash
of (MLflow run id, trace key) (the format the server derives from an OTLP trace id), span
ids are hashes of (trace key, span id), assessment ids hashes of (trace id, position, name).

Values become the JSON text MLflow stores, bounded and always valid JSON; the attributes
MLflow sums over a trace (token usage, cost) are reshaped so its sums never meet a null or
a string. All pure: the builder (``trace_build``) uses these, the sender none of them.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from typing import Any

from inspect_mlflow._keys import finite, truncate_text

__all__ = [
    "ATTRIBUTE_SHAPERS",
    "DROPPED_SPANS",
    "as_text",
    "assessment_id_for",
    "attribute",
    "dump",
    "preview",
    "span_id_for",
    "trace_id_for",
]

# MLflow's reserved keys (mlflow.tracing.constant), spelled out so a rename in MLflow
# shows up as a failing test rather than as a silent import of a moved name.
SOURCE_RUN = "mlflow.sourceRun"
SCHEMA_VERSION = "mlflow.trace_schema.version"
TRACE_TOKEN_USAGE = "mlflow.trace.tokenUsage"
TRACE_COST = "mlflow.trace.cost"
TRACE_NAME = "mlflow.traceName"
ASSESSMENT_SOURCE_RUN = "mlflow.assessment.sourceRunId"
SPAN_REQUEST_ID = "mlflow.traceRequestId"
SPAN_TYPE = "mlflow.spanType"
SPAN_INPUTS = "mlflow.spanInputs"
SPAN_OUTPUTS = "mlflow.spanOutputs"
TOKEN_USAGE = "mlflow.chat.tokenUsage"
LLM_COST = "mlflow.llm.cost"

DROPPED_SPANS = "inspect_mlflow.droppedSpans"
"""Trace metadata key: how many child spans ``max_spans_per_trace`` left out."""

TOKEN_KEYS = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)
"""Keys MLflow reads in ``mlflow.chat.tokenUsage`` (the first three are always summed)."""

COST_KEYS = ("input_cost", "output_cost", "total_cost")
"""Keys MLflow reads in ``mlflow.llm.cost`` (US dollars)."""

PREVIEW_CHARS = 1000
"""MLflow's own request/response preview length for non-Databricks stores."""
MAX_METADATA_CHARS = 250
"""Trace metadata values every MLflow backend keeps in full."""
MAX_ASSESSMENT_NAME_CHARS = 250
ROOT_SPAN_TYPE = "CHAIN"


# -- deterministic identities ---------------------------------------------------------


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()


def trace_id_for(trace_key: str, run_id: str) -> str:
    """The MLflow trace id of a trace of a run: ``tr-`` and 32 hex digits.

    Trace ids are unique in a whole tracking store, so the id depends on the MLflow run
    as well as the trace key: the same sample logged to a second run (an import into
    another experiment, ``--force``) gets a trace of its own, while a resend to the same
    run (a retry, a replayed spool) updates the one it already has. It is also the
    OpenTelemetry trace id in hex, which is what the server derives the MLflow id from
    when spans arrive over OTLP, so both paths agree.

    Example: ``trace_id_for("3kB9...", "a1b2...")`` gives ``"tr-5f0c..."`` (32 hex
    digits), the same on every call and in every process.
    """
    value = int.from_bytes(_digest("trace", run_id, trace_key)[:16], "big") or 1  # 0 is invalid
    return f"tr-{value:032x}"


def span_id_for(trace_key: str, span_key: str) -> int:
    """A stable, non-zero 64-bit OpenTelemetry span id for a span of a trace."""
    value = int.from_bytes(_digest("span", trace_key, span_key)[:8], "big")
    return value or 1


def assessment_id_for(trace_id: str, position: int, name: str) -> str:
    """A stable assessment id (``a-`` and 32 hex digits), so a resend updates, not adds."""
    return "a-" + _digest("assessment", trace_id, str(position), name)[:16].hex()


# -- value shaping --------------------------------------------------------------------


def dump(value: Any) -> str:
    """JSON text of a value; NaN and infinities as text, anything else JSON lacks as str."""
    # Nearly every value is finite: dump it as it is, and only when JSON refuses a NaN or
    # an infinity (or a key) walk it with finite(), instead of copying every value first.
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, default=str)
    except (ValueError, TypeError):
        return json.dumps(finite(value, as_text=True), ensure_ascii=False, default=str)


def attribute(value: Any, limit: int) -> str:
    """A span attribute as MLflow stores it: JSON text of the value.

    A value whose JSON is longer than ``limit`` becomes a JSON *string* holding the cut
    JSON text and a marker, so the attribute stays valid JSON and the UI shows the start.
    """
    text = dump(value)
    if len(text) <= limit:
        return text
    return json.dumps(truncate_text(text, limit), ensure_ascii=False)


def as_text(value: Any) -> str:
    """A string as it is, any other value as its JSON text."""
    return value if isinstance(value, str) else dump(value)


def _message_text(message: Any) -> str | None:
    if not isinstance(message, dict):
        return None
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict)]
        joined = "\n".join(t for t in texts if isinstance(t, str))
        return joined or None
    return None


def preview(value: Any, role: str) -> str | None:
    """Request/response preview: the last ``role`` message of a chat, else the JSON text."""
    if value is None:
        return None
    messages = value.get("messages") if isinstance(value, dict) else value
    if isinstance(messages, list) and messages and all(isinstance(m, dict) for m in messages):
        chosen = [m for m in messages if m.get("role") == role] or messages
        text = _message_text(chosen[-1])
        if text:
            return truncate_text(text, PREVIEW_CHARS)
    return truncate_text(as_text(value), PREVIEW_CHARS)


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def token_usage(value: Any) -> dict[str, int] | None:
    """``mlflow.chat.tokenUsage`` with only integer counts under MLflow's keys."""
    if not isinstance(value, dict):
        return None
    usage = {k: int(n) for k in TOKEN_KEYS if (n := _number(value.get(k))) is not None}
    if not usage:
        return None
    for key in TOKEN_KEYS[:3]:
        usage.setdefault(key, 0)
    if usage["total_tokens"] == 0:
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
    return usage


def cost(value: Any) -> dict[str, float] | None:
    """``mlflow.llm.cost``; a bare number is the total cost."""
    if (number := _number(value)) is not None:
        return {"total_cost": float(number)}
    if not isinstance(value, dict):
        return None
    parts = {k: float(n) for k in COST_KEYS if (n := _number(value.get(k))) is not None}
    return parts or None


ATTRIBUTE_SHAPERS: dict[str, Callable[[Any], Any]] = {TOKEN_USAGE: token_usage, LLM_COST: cost}
"""Attributes MLflow aggregates: reshaped so its sums never meet a null or a string."""
