"""Dry run: what a mapping would write to MLflow for one eval log, without MLflow.

Why: a mapping author wants to see the runs, keys, values and steps a mapping produces,
and the expressions that silently gave nothing, before spending an eval on it. The log
is replayed through the same lifecycle points (:mod:`inspect_mlflow._inspect.log_payloads`)
and pipeline (``_delivery.pipeline``: engine, scrub, deliver) as ``inspect-mlflow import``;
only the end differs: :class:`~inspect_mlflow._commands.dryrun_plan.PlanCapture` keeps
the operations in memory instead of sending them. The engine is watched through its
public hooks (:mod:`inspect_mlflow._commands.dryrun_watch`), and the report is
:mod:`inspect_mlflow._commands.dryrun_report`.

What it flags, most certain first:

- likely typos: fields that no Inspect payload of the expression's lifecycle point has
  (``sample.scroes``), found from Inspect's own types without the log
  (:mod:`inspect_mlflow._inspect.payload_fields`), each with a "did you mean";
- the engine's problems (expressions that raised, values of the wrong type such as a
  text metric, rules with no open run, keys that collide once made MLflow-safe), each
  with where it comes from in the mapping;
- expressions that gave nothing (null, empty or failed) every time they ran, grouped by
  the field this log did not have, and rules that never applied (their point never
  fired, or their ``when`` never held);
- what MLflow would refuse or cut: a param logged again with another value, a metric
  step used twice for one key, text cut to MLflow's limits, a trace over the span cap.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from inspect_mlflow._commands.dryrun_plan import Finding, PlanCapture, RunPlan
from inspect_mlflow._commands.dryrun_report import DryRunReport, short_names
from inspect_mlflow._commands.dryrun_watch import (
    ExpressionWatch,
    PlacedProblems,
    gave_nothing,
    never_applied,
)
from inspect_mlflow._delivery.pipeline import Pipeline, environment_secrets
from inspect_mlflow._engine.contexts import context
from inspect_mlflow._inspect.log_payloads import (
    Replayed,
    run_end_point,
    run_start_point,
    task_points,
)
from inspect_mlflow._inspect.log_reading import LogReadError, read_header
from inspect_mlflow._inspect.payload_fields import field_typos
from inspect_mlflow._mapping.model import CompiledMapping

__all__ = ["DryRunReport", "Finding", "RunPlan", "dry_run"]


def dry_run(
    mapping: CompiledMapping,
    log: str | Path,
    *,
    log_artifacts: bool = True,
    traces: bool = True,
    max_spans: int = 1000,
    secrets: Sequence[str] | None = None,
) -> DryRunReport:
    """Replay one log through ``mapping`` and report what would be written.

    Args:
        mapping: The compiled mapping.
        log: A ``.eval`` or ``.json`` Inspect log.
        log_artifacts: As ``INSPECT_MLFLOW_LOG_ARTIFACTS``: False leaves tables,
            records and artifacts out.
        traces: As ``INSPECT_MLFLOW_TRACES``: False leaves traces out.
        max_spans: As ``INSPECT_MLFLOW_TRACE_MAX_SPANS``, for the over-limit check.
        secrets: Credential values to mask in what the report shows, through the live
            path's scrub step (None: those of the environment, as the hook would mask).

    Returns:
        The report.

    Raises:
        LogReadError: The log cannot be read (a sample that cannot be read is reported
            as a problem instead, after the samples before it).
    """
    header = read_header(log)
    typos = field_typos(mapping)
    watch = ExpressionWatch(mapping, typos)
    problems = PlacedProblems()
    capture = PlanCapture(max_spans)
    pipeline = Pipeline(
        mapping,
        capture.send,
        environment_secrets() if secrets is None else secrets,
        replayed=True,
        log_artifacts=log_artifacts,
        traces=traces,
        problems=problems,
        on_search=watch.searched,
        explain_error=watch.explain,
    )
    points = mapping.points()
    fired: set[str] = set()

    def feed(item: Replayed) -> None:
        if item.point not in points:
            return
        fired.add(item.point)
        pipeline.feed(item.point, context(item.point, item.data, **item.ids), at=item.time)

    feed(run_start_point([header]))
    try:
        for item in task_points(log, header, points):
            feed(item)
    except LogReadError as err:
        capture.note("unreadable", str(log), str(err))
    feed(run_end_point([header]))

    found = sorted(problems.placed.values(), key=lambda f: (f.kind, f.where))
    found.extend(capture.findings.values())
    report = DryRunReport(
        mapping=list(mapping.files),
        log=str(log),
        runs=list(capture.runs.values()),
        problems=found,
        gave_nothing=gave_nothing(mapping, watch),
        never_applied=never_applied(mapping, watch, fired),
        typos=[
            {
                "where": str(t.where),
                "expression": t.expression,
                "path": t.path,
                "message": t.message,
            }
            for t in typos
        ],
        short=short_names(mapping.files),
    )
    # The engine's messages may quote a value too: mask the whole report once more.
    return pipeline.scrubber.value(report) if pipeline.scrubber else report
