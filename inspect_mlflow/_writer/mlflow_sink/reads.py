"""Read-only questions to MLflow: a run by its logical key, a JSON artifact, a table's rows.

The import and the replay ask these on a sink of their own while the writer's sink
delivers (see :meth:`MlflowSink.find_runs` and friends), and the sink itself asks them
to resume a run: find it again rather than create a duplicate, and read back the rows
its tables already hold. Nothing here writes, and nothing is cached.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterable
from typing import Any

from mlflow.entities import ViewType

from inspect_mlflow._operations import RUN_STATE_PATH

__all__ = [
    "RUN_KEY_TAG",
    "active_experiment_id",
    "download_json",
    "existing_rows",
    "find_runs",
    "metric_points",
    "read_run_state",
    "search_run",
]

RUN_KEY_TAG = "inspect_mlflow.run_key"
"""Tag holding a run's logical key, so a replay finds the run instead of duplicating it."""

Call = Callable[..., Any]
"""The sink's counted MLflow call: ``call("method", *args, **kwargs)``."""


def active_experiment_id(call: Call, name: str) -> str | None:
    """The id of the experiment of this name, or None when there is none or it is deleted."""
    experiment = call("get_experiment_by_name", name)
    if experiment is None or experiment.lifecycle_stage != "active":
        return None
    return str(experiment.experiment_id)


def search_run(call: Call, experiment_id: str | None, run: str) -> Any:
    """The active run tagged with this logical key, or None (one request)."""
    if "'" in run or "\\" in run:
        return None  # not expressible in a filter string; create a new run instead
    found = call(
        "search_runs",
        [experiment_id],
        filter_string=f"tags.`{RUN_KEY_TAG}` = '{run}'",
        run_view_type=ViewType.ACTIVE_ONLY,
        max_results=1,
    )
    return found[0] if found else None


def find_runs(call: Call, experiment_id: str, runs: Iterable[str]) -> dict[str, Any]:
    """Key -> the MLflow ``Run`` tagged with it, for the keys that have one (one search each)."""
    found: dict[str, Any] = {}
    for run in runs:
        existing = search_run(call, experiment_id, run)
        if existing is not None:
            found[run] = existing
    return found


def metric_points(call: Call, run_id: str, key: str) -> list[tuple[int, int, float]]:
    """Stored points of one metric of a run, as ``(step, timestamp ms, value)``."""
    history = call("get_metric_history", run_id, key)
    return [(int(m.step), int(m.timestamp), float(m.value)) for m in history]


def read_run_state(call: Call, experiment_id: str, run: str) -> dict[str, Any] | None:
    """The state a resumable run was closed with: ``{}`` if none was saved, None if no run."""
    existing = search_run(call, experiment_id, run)
    if existing is None:
        return None
    state = download_json(call, existing.info.run_id, RUN_STATE_PATH)
    return state if isinstance(state, dict) else {}


def download_json(call: Call, run_id: str, path: str) -> Any:
    """Parse a JSON artifact of a run; None when the run has no such file.

    Lists the parent folder first, so a missing file is an answer and not an error
    (stores differ in what they raise for one); a failing call still raises.
    """
    folder = path.rpartition("/")[0] or None
    listed = call("list_artifacts", run_id, folder)
    if not any(entry.path == path and not entry.is_dir for entry in listed):
        return None
    with tempfile.TemporaryDirectory(prefix="inspect-mlflow-") as tmp:
        local = call("download_artifacts", run_id, path, tmp)
        try:
            with open(local, encoding="utf-8") as handle:
                return json.load(handle)
        except ValueError:
            return None


def existing_rows(call: Call, run_id: str, path: str, fmt: str) -> list[Any]:
    """The rows of a table or record file a run already has (none when absent)."""
    content = download_json(call, run_id, path)
    if fmt == "table":
        if not isinstance(content, dict):
            return []
        columns, data = content.get("columns"), content.get("data")
        if not isinstance(columns, list) or not isinstance(data, list):
            return []
        return [dict(zip(columns, row, strict=False)) for row in data if isinstance(row, list)]
    return list(content) if isinstance(content, list) else []
