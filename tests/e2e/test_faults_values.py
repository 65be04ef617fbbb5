"""Values MLflow (or the engine) refuses: the bad item is isolated, the rest of its batch
lands, it is warned about once with its key and reason, and listed in the run-end summary.

Part one drives the writer and the MLflow sink directly against a sqlite file and a real
server, one case per test; part two is a real eval whose mapping asks for each kind of
bad value at runtime (a param re-logged with another value, a key with characters MLflow
refuses, NaN and infinite scores, an expression that fails on some payloads).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytest
from e2e_support import new_experiment_name, run_logged
from faults_support import captured_logs

from inspect_mlflow._operations import (
    CloseRun,
    LogMetrics,
    LogParams,
    Metric,
    OpenRun,
    Operation,
    SetTags,
)
from inspect_mlflow._writer.writer import BackgroundWriter

T0 = 1_700_000_000_000
RUN = "task:values"


def deliver(store: Any, *batches: list[Operation]) -> tuple[BackgroundWriter, Any]:
    """Send each batch through a writer (one flush per batch) and return the writer."""
    sink = store.sink()
    writer = BackgroundWriter(sink, schedule_delay=0.01)
    for batch in batches:
        writer.emit(batch)
        assert writer.flush(60)
    writer.shutdown(10)
    return writer, sink


def good_items() -> list[Operation]:
    return [
        LogParams(RUN, {"good_param": "kept"}),
        SetTags(RUN, {"good_tag": "kept"}),
        LogMetrics(RUN, (Metric("good_metric", 1.0, 0, T0),)),
    ]


def assert_rest_landed(store: Any, sink: Any) -> Any:
    run = store.client().get_run(sink.run_id(RUN))
    assert run.data.params.get("good_param") == "kept"
    assert run.data.tags.get("good_tag") == "kept"
    assert run.data.metrics.get("good_metric") == 1.0
    assert run.info.status == "FINISHED"
    return run


OPEN = OpenRun(run=RUN, kind="task", name="values", parent=None, start_time_ms=T0)
CLOSE = CloseRun(RUN, "FINISHED", T0 + 1)


@pytest.mark.parametrize(
    "bad, key",
    [
        pytest.param(LogParams(RUN, {"changed": "2"}), "changed", id="param-relogged"),
        pytest.param(LogParams(RUN, {"bad!key": "x"}), "bad!key", id="param-bad-key"),
        pytest.param(
            LogMetrics(RUN, (Metric("m" * 300, 1.0, 0, T0),)), "m" * 300, id="metric-key-too-long"
        ),
        pytest.param(SetTags(RUN, {"tag#1": "x"}), "tag#1", id="tag-bad-key"),
    ],
)
def test_a_refused_value_is_isolated_reported_once_and_summarised(mlflow_store, caplog, bad, key):
    first = [OPEN, LogParams(RUN, {"changed": "1"})]
    second = [*good_items()[:1], bad, *good_items()[1:], bad, CLOSE]  # the bad item twice
    with caplog.at_level(logging.WARNING, logger="inspect_mlflow"):
        writer, sink = deliver(mlflow_store, first, second)
    run = assert_rest_landed(mlflow_store, sink)
    if key == "changed":
        assert run.data.params["changed"] == "1", "the first value stays"
    assert {r.key for r in writer.rejected} == {key}
    count = len(writer.rejected)  # a repeated param or tag merges; a metric point does not
    warnings = [r for r in caplog.records if repr(key) in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING, "warned once"
    assert "rejected" in warnings[0].getMessage()
    [line] = writer.problem_summary()
    assert f"{count} value(s) rejected by the backend: {key}" in line


def test_nan_and_infinity_reach_mlflow_as_it_stores_them(mlflow_store):
    # The engine refuses non-finite metric values itself (see the eval below); a spool
    # or another producer may still carry them: MLflow keeps NaN and clamps infinities.
    points = (Metric("nan", math.nan, 0, T0), Metric("inf", math.inf, 0, T0))
    writer, sink = deliver(mlflow_store, [OPEN, *good_items(), LogMetrics(RUN, points), CLOSE])
    run = assert_rest_landed(mlflow_store, sink)
    assert math.isnan(run.data.metrics["nan"])
    assert run.data.metrics["inf"] > 1e300
    assert writer.rejected == []


# -- the same at runtime, from a real eval -------------------------------------------------

MAPPING = """
version: 1
extends: default
rules:
  sample_end:
    - id: fault-probes
      run: task
      step: counter.sample.index
      params:
        last_sample: sample.id
      metrics:
        "odd key {sample.id}!": "`1`"
        abs_id: abs(sample.id)
"""


def _task() -> Any:
    from inspect_ai import Task
    from inspect_ai.dataset import Sample
    from inspect_ai.scorer import Score, Target, mean, scorer
    from inspect_ai.solver import TaskState, generate, use_tools

    from inspect_mlflow._commands.demo import add_tool

    @scorer(metrics=[mean()])
    def odd_numbers() -> Any:
        async def score(state: TaskState, target: Target) -> Score:
            value = {2: math.nan, 4: math.inf}.get(state.sample_id, 1.0)
            return Score(value=value)

        return score

    ids: list[Any] = [1, 2, "three", 4, "five", 6]
    return Task(
        name="odd_values",
        dataset=[
            Sample(id=i, input=f"What is {n} + {n}?", target=str(2 * n))
            for n, i in enumerate(ids, start=1)
        ],
        solver=[use_tools(add_tool()), generate()],
        scorer=odd_numbers(),
    )


@pytest.fixture(scope="module")
def odd_eval(tmp_path_factory: pytest.TempPathFactory, _sqlite_template: Path) -> dict[str, Any]:
    import shutil

    root = tmp_path_factory.mktemp("values")
    shutil.copyfile(_sqlite_template, root / "mlflow.db")
    mapping = root / "probes.yaml"
    mapping.write_text(MAPPING)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    experiment = new_experiment_name("values")
    with captured_logs() as logs:
        [log] = run_logged(
            _task(),
            uri,
            experiment,
            log_dir=str(root / "logs"),
            max_samples=1,
            extra_env={
                "INSPECT_MLFLOW_MAPPING": str(mapping),
                "INSPECT_MLFLOW_SPOOL_DIR": str(root / "spool"),
            },
        )
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    # By the tag only the task's run carries: the eval run's name starts with the task's
    # name too, and which of the two search_runs lists first depends on the clock.
    [task] = [r for r in runs if r.data.tags.get("inspect.eval_id") == log.eval.eval_id]
    return {
        "log": log,
        "client": client,
        "task": task,
        "warnings": logs.messages(logging.WARNING),
        "spool": root / "spool",
    }


def test_the_eval_is_not_disturbed_and_the_good_values_land(odd_eval):
    assert odd_eval["log"].status == "success"
    metrics = odd_eval["task"].data.metrics
    history = odd_eval["client"].get_metric_history(odd_eval["task"].info.run_id, "abs_id")
    assert sorted(m.value for m in history) == [1, 2, 4, 6], "the text ids skipped one write"
    assert "per_sample/odd_numbers" in metrics
    assert not odd_eval["spool"].exists() or not list(odd_eval["spool"].iterdir())


def test_keys_are_made_mlflow_safe_before_sending(odd_eval):
    metrics = odd_eval["task"].data.metrics
    assert "odd key 1_" in metrics and "odd key three_" in metrics
    assert not any("!" in key for key in metrics)


def test_a_param_relogged_with_another_value_is_warned_once_and_summarised(odd_eval):
    assert odd_eval["task"].data.params["last_sample"] == "1", "the first value stays"
    said = [m for m in odd_eval["warnings"] if "'last_sample'" in m and "rejected" in m]
    assert len(said) == 1, odd_eval["warnings"]
    summary = [m for m in odd_eval["warnings"] if "value(s) rejected by the backend" in m]
    assert len(summary) == 1 and "last_sample" in summary[0]
    assert "5 value(s) rejected by the backend: last_sample x5" in summary[0], summary


def test_runtime_type_errors_and_non_finite_scores_are_counted_and_reported(odd_eval):
    [summary] = [m for m in odd_eval["warnings"] if "(first:" in m]
    assert "2 expression errors" in summary, summary
    assert "abs" in summary
    # The NaN and infinite scores, and the task's mean of them.
    assert "3 rejected values" in summary, summary
    assert "not finite" in summary
    # Each kind is warned about once when first seen, then only counted.
    firsts = [m for m in odd_eval["warnings"] if "further ones are counted" in m]
    assert len(firsts) == 2, firsts
    assert any("not finite" in m for m in firsts) and any("abs(" in m for m in firsts)
