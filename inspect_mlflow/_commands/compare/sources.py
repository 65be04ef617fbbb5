"""Per-sample scores of one evaluation, read from what MLflow holds (or an Inspect log).

A side is named by an MLflow run id (a task run, or an eval's parent run with a single
task), an eval id, a task name or a run name within an experiment, or the path of an
Inspect ``.eval``/``.json`` log. From MLflow the scores come from the task run's table
``inspect/sample_scores.json``, so live and imported runs read alike; without that
table, from the run's traces (one per sample and epoch, each score an assessment).
Errored samples come from ``inspect/samples.json`` (or ``ERROR`` traces) so they are
reported, not missed.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from inspect_mlflow._commands.compare.result import Comparison, RunRef
from inspect_mlflow._commands.compare.stats import (
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    compare_scores,
    is_reducer,
)

__all__ = [
    "DEFAULT_EXPERIMENT",
    "SideScores",
    "compare_runs",
    "load_side",
    "reducers_from_metrics",
    "resolve_run",
    "resolve_target",
]

DEFAULT_EXPERIMENT = "inspect_ai"
SCORES_TABLE = "inspect/sample_scores.json"
SAMPLES_TABLE = "inspect/samples.json"
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class SideScores:
    """One side: what it is, its ``{scorer: {sample_id: [epoch scores]}}`` and notes."""

    ref: RunRef
    scores: dict[str, dict[str, list[Any]]]
    reducers: list[str] = field(default_factory=lambda: ["mean"])
    """Epoch reducers the eval used, when it says (several: one row per reducer)."""
    notes: list[str] = field(default_factory=list)


def _table(client: Any, run_id: str, path: str) -> list[dict[str, Any]] | None:
    """Rows of an MLflow table artifact, or None when the run has none at ``path``."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except (MlflowException, OSError):
            return None
        content = json.loads(Path(local).read_text())
    return [dict(zip(content["columns"], row, strict=True)) for row in content["data"]]


def _add(scores: dict[str, dict[str, list[Any]]], scorer: str, sample: Any, value: Any) -> None:
    scores.setdefault(scorer, {}).setdefault(str(sample), []).append(value)


def _mark_errored(scores: dict[str, dict[str, list[Any]]], errored: set[str]) -> None:
    """Errored samples have no score rows: list them (empty) under every scorer."""
    for samples in scores.values():
        for sample in errored:
            samples.setdefault(sample, [])


def _scores_from_table(rows: list[dict[str, Any]], notes: list[str]) -> dict[str, Any]:
    latest: dict[tuple[str, Any, str], Any] = {}
    for row in rows:
        value = row.get("numeric_value")
        key = (str(row.get("sample_id")), row.get("epoch"), str(row.get("scorer")))
        latest[key] = value if value is not None else row.get("value")
    if len(latest) < len(rows):
        notes.append(
            f"{len(rows) - len(latest)} repeated score rows (same sample, epoch, scorer): "
            "the last one of each is used"
        )
    scores: dict[str, dict[str, list[Any]]] = {}
    for (sample, _epoch, scorer), value in latest.items():
        _add(scores, scorer, sample, value)
    return scores


def _scores_from_traces(
    uri: str, experiment_id: str, run_id: str
) -> tuple[dict[str, Any], set[str], int]:
    """Scores from the run's traces' assessments; also the errored samples' ids."""
    from mlflow.tracing.client import TracingClient

    client = TracingClient(uri)
    scores: dict[str, dict[str, list[Any]]] = {}
    errored: set[str] = set()
    count = 0
    token: str | None = None
    while True:
        page = client.search_traces(
            locations=[experiment_id], run_id=run_id, max_results=500, page_token=token
        )
        for trace in page:
            count += 1
            sample = trace.info.tags.get("inspect.sample_id")
            if sample is None:
                continue
            feedback = [a for a in trace.info.assessments or [] if a.feedback is not None]
            for assessment in feedback:
                _add(scores, assessment.name, sample, assessment.feedback.value)
            if not feedback and str(trace.info.state).endswith("ERROR"):
                errored.add(str(sample))
        token = page.token
        if not token:
            return scores, errored, count


def reducers_from_metrics(metrics: Mapping[str, float], scorers: Sequence[str]) -> list[str]:
    """``mean`` and the reducers named by summary keys ``<scorer>/<reducer>/<metric>``.

    With several epoch reducers the task run keeps the primary one's results under
    ``<scorer>/<metric>`` and the others' under ``<scorer>/<reducer>/<metric>``.
    """
    found: list[str] = []
    for key in metrics:
        parts = key.split("/")
        if len(parts) == 3 and parts[0] in scorers and parts[1] not in found:
            if is_reducer(parts[1]):
                found.append(parts[1])
    return _with_mean(found)


def _with_mean(reducers: Sequence[str]) -> list[str]:
    """Every comparison has the per-sample mean; other reducers come after it."""
    return ["mean", *(r for r in dict.fromkeys(reducers) if r != "mean")]


def resolve_run(client: Any, ref: str, experiment: str) -> tuple[Any, list[str]]:
    """The task run ``ref`` names, and notes on how it was chosen."""
    from mlflow.exceptions import MlflowException

    if _RUN_ID.match(ref):
        try:
            run = client.get_run(ref)
        except MlflowException:
            run = None
        if run is not None:
            if "inspect.task" in run.data.tags:
                return run, []
            children = client.search_runs(
                [run.info.experiment_id], f"tags.mlflow.parentRunId = '{ref}'"
            )
            tasks = [c for c in children if "inspect.task" in c.data.tags]
            if len(tasks) == 1:
                return tasks[0], [f"{ref} is an eval run: using its task run"]
            names = ", ".join(f"{c.data.tags['inspect.task']} {c.info.run_id}" for c in tasks)
            raise ValueError(f"run {ref} has {len(tasks)} task runs ({names}): pass one of them")
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ValueError(f"no experiment {experiment!r} (and {ref!r} is not a run id or file)")
    if "'" in ref:
        raise ValueError(f"{ref!r}: quotes are not allowed in a run reference")
    for what, flt in (
        ("eval id", f"tags.`inspect.eval_id` = '{ref}'"),
        ("task", f"tags.`inspect.task` = '{ref}'"),
        ("run name", f"attributes.run_name = '{ref}'"),
    ):
        runs = client.search_runs(
            [found.experiment_id], flt, order_by=["attributes.start_time DESC"], max_results=50
        )
        runs = [r for r in runs if "inspect.task" in r.data.tags]
        if runs:
            notes = []
            if len(runs) > 1:
                notes.append(
                    f"{what} {ref!r} matches {len(runs)} task runs in {experiment!r}: using "
                    f"the latest, {runs[0].info.run_id} (pass a run id to choose)"
                )
            return runs[0], notes
    raise ValueError(f"no task run with run id, eval id, task or name {ref!r} in {experiment!r}")


def _load_mlflow(client: Any, uri: str, ref: str, experiment: str, label: str) -> SideScores:
    run, notes = resolve_run(client, ref, experiment)
    run_id = run.info.run_id
    tags = run.data.tags
    rows = _table(client, run_id, SCORES_TABLE)
    if rows is not None:
        source = "mlflow-table"
        scores = _scores_from_table(rows, notes)
        samples = _table(client, run_id, SAMPLES_TABLE) or []
        errored = {str(r.get("sample_id")) for r in samples if r.get("error")}
    else:
        source = "mlflow-traces"
        scores, errored, count = _scores_from_traces(uri, run.info.experiment_id, run_id)
        notes.append(f"run {run_id} has no {SCORES_TABLE}: scores read from {count} traces")
    if not scores:
        notes.append(f"run {run_id} has no scores (no {SCORES_TABLE}, no scored traces)")
    _mark_errored(scores, errored)
    side_ref = RunRef(
        label=label,
        run_id=run_id,
        eval_id=tags.get("inspect.eval_id"),
        task=tags.get("inspect.task"),
        model=tags.get("inspect.model"),
        source=source,
        location=uri,
        experiment_id=run.info.experiment_id,
    )
    reducers = reducers_from_metrics(run.data.metrics, list(scores))
    return SideScores(side_ref, scores, reducers, notes)


def _load_log(path: Path, label: str) -> SideScores:
    from inspect_ai.log import read_eval_log

    log = read_eval_log(str(path))
    scores: dict[str, dict[str, list[Any]]] = {}
    errored: set[str] = set()
    for sample in log.samples or []:
        for scorer, score in (sample.scores or {}).items():
            _add(scores, scorer, sample.id, score.value)
        if sample.error is not None and not sample.scores:
            errored.add(str(sample.id))
    _mark_errored(scores, errored)
    ref = RunRef(
        label=label,
        eval_id=log.eval.eval_id,
        task=log.eval.task,
        model=log.eval.model,
        source="eval-log",
        location=str(path),
    )
    return SideScores(ref, scores, _with_mean(log.eval.config.epochs_reducer or []))


def load_side(
    ref: str, *, label: str, tracking_uri: str | None = None, experiment: str | None = None
) -> SideScores:
    """Read one side: a log file when ``ref`` is an existing path, else from MLflow."""
    path = Path(ref)
    if path.is_file():
        return _load_log(path, label)
    from mlflow import MlflowClient

    uri, name = resolve_target(tracking_uri, experiment)
    return _load_mlflow(MlflowClient(tracking_uri=uri), uri, ref, name, label)


def resolve_target(tracking_uri: str | None, experiment: str | None) -> tuple[str, str]:
    """The tracking URI and experiment the hook would use, unless given."""
    from inspect_mlflow._config import Settings, SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError:
        settings = Settings(tracking_uri=None)
    uri = tracking_uri or settings.tracking_uri
    if not uri:
        raise ValueError("no tracking URI: set MLFLOW_TRACKING_URI or pass --tracking-uri")
    return uri, experiment or settings.experiment_name or DEFAULT_EXPERIMENT


def compare_runs(
    a: str,
    b: str,
    *,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    reducers: Sequence[str] | None = None,
    confidence: float = 0.95,
    power: float = 0.8,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Comparison:
    """Compare task run B against task run A from what MLflow (or a log file) holds.

    Args:
        a: Run id, eval id, task name or run name (in ``experiment``), or a log path.
        b: The same for B.
        tracking_uri: Default ``$MLFLOW_TRACKING_URI`` (``INSPECT_MLFLOW_TRACKING_URI`` wins).
        experiment: Default ``$MLFLOW_EXPERIMENT_NAME``, else ``inspect_ai``.
        reducers: Epoch reducers; default: those both evals used when they used several
            (from ``<scorer>/<reducer>/<metric>`` keys or the log), else ``mean``.
        confidence: Interval level; ``1 - confidence`` is the alpha of the tests.
        power: Power of the minimum detectable difference.
        resamples: Bootstrap resamples.
        seed: Bootstrap seed.
    """
    side_a = load_side(a, label="A", tracking_uri=tracking_uri, experiment=experiment)
    side_b = load_side(b, label="B", tracking_uri=tracking_uri, experiment=experiment)
    if side_a.ref.run_id is not None and side_a.ref.run_id == side_b.ref.run_id:
        raise ValueError(f"A and B are the same run ({side_a.ref.run_id}): pass run ids")
    notes = [f"A: {n}" for n in side_a.notes] + [f"B: {n}" for n in side_b.notes]
    if reducers is None:
        reducers = [r for r in side_a.reducers if r in side_b.reducers] or ["mean"]
        if side_a.reducers != side_b.reducers:
            notes.append(
                f"epoch reducers differ (A {', '.join(side_a.reducers)}; B "
                f"{', '.join(side_b.reducers)}): comparing {', '.join(reducers)}"
            )
    result = compare_scores(
        side_a.scores,
        side_b.scores,
        reducers=reducers,
        confidence=confidence,
        power=power,
        resamples=resamples,
        seed=seed,
        a=side_a.ref,
        b=side_b.ref,
    )
    return replace(result, notes=result.notes + notes)
