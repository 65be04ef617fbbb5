"""End-to-end: the default mapping on a real offline eval, read back from real MLflow.

One test per section of docs/default-mapping.md. The module fixture runs the eval once per
store (12 samples, 2 epochs, 4 concurrent samples): on a sqlite file and on a real
`mlflow server` serving artifacts over HTTP; every test reads what actually reached it.
"""

from __future__ import annotations

import json
import os

import pytest
from e2e_support import (
    download_json,
    eval_events,
    eval_run_name,
    new_experiment_name,
    run_logged,
    runs_by_name,
)
from mlflow import MlflowClient

from inspect_mlflow._commands.demo import demo_task

pytestmark = pytest.mark.e2e

SAMPLES = 12
EPOCHS = 2
TABLES = (
    "inspect/tasks.json",
    "inspect/samples.json",
    "inspect/messages.json",
    "inspect/sample_scores.json",
    "inspect/events.json",
    "inspect/model_usage.json",
)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("server", marks=pytest.mark.server)])
def logged(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One eval per store, shared by the module's tests."""
    root = tmp_path_factory.mktemp(f"e2e-default-{request.param}")
    if request.param == "server":
        uri = request.getfixturevalue("mlflow_server").url
    else:
        uri = f"sqlite:///{root}/mlflow.db"
    experiment = new_experiment_name("default")
    cwd = os.getcwd()
    os.chdir(root)  # the sqlite store puts artifacts under ./mlruns
    try:
        logs = run_logged(
            demo_task(SAMPLES),
            uri,
            experiment,
            log_dir=str(root / "logs"),
            epochs=EPOCHS,
            max_samples=4,
        )
    finally:
        os.chdir(cwd)
    client = MlflowClient(tracking_uri=uri)
    runs = runs_by_name(client, experiment)
    log = logs[0]
    parent = runs[eval_run_name(logs)]
    task = runs["demo_addition"]
    return {"client": client, "log": log, "parent": parent, "task": task, "runs": runs}


def history(logged: dict, key: str) -> list:
    return logged["client"].get_metric_history(logged["task"].info.run_id, key)


def test_runs_parent_and_task(logged: dict) -> None:
    log, parent, task = logged["log"], logged["parent"], logged["task"]
    assert len(logged["runs"]) == 2
    assert parent.data.tags["inspect.run_id"] == log.eval.run_id
    assert parent.data.tags["inspect.task_count"] == "1"
    assert parent.data.tags["inspect.tasks"] == "demo_addition"
    assert "inspect.eval_set_id" not in parent.data.tags
    assert parent.info.status == "FINISHED"
    assert task.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert task.data.tags["inspect.eval_id"] == log.eval.eval_id
    assert task.data.tags["inspect.run_id"] == log.eval.run_id
    assert task.data.tags["inspect.task"] == "demo_addition"
    assert task.data.tags["inspect.model"] == "mockllm/model"
    assert task.data.tags["mlflow.runType"] == "genai_evaluate"
    assert task.info.status == "FINISHED"


def test_params(logged: dict) -> None:
    params = logged["task"].data.params
    assert params["task"] == "demo_addition"
    assert params["model"] == "mockllm/model"
    assert params["dataset.samples"] == str(SAMPLES)
    assert params["solver"] == "use_tools, generate"
    assert "tags" not in params  # empty values are not logged
    assert "temperature" not in params


def test_per_sample_step_metrics(logged: dict) -> None:
    log = logged["log"]
    n = SAMPLES * EPOCHS
    for key in ("per_sample/match", "per_sample/includes", "per_sample/total_time"):
        points = history(logged, key)
        assert sorted(p.step for p in points) == list(range(n)), key
    correct = sum(1 for s in log.samples if s.scores["match"].value == "C")
    assert sum(p.value for p in history(logged, "per_sample/match")) == correct


def test_event_metrics_match_the_log(logged: dict) -> None:
    truth = eval_events(logged["log"].location)
    model_calls = history(logged, "per_call/model_call")
    assert sorted(p.step for p in model_calls) == list(range(truth["model"]))
    assert sorted(p.value for p in model_calls) == [float(i + 1) for i in range(truth["model"])]
    assert len(history(logged, "per_call/input_tokens")) == truth["model"]
    assert {p.value for p in history(logged, "per_call/input_tokens")} == {12.0}
    tool_calls = history(logged, "per_call/tool_call")
    assert sorted(p.step for p in tool_calls) == list(range(truth["tool"]))
    assert sum(p.value for p in history(logged, "per_call/tool_error")) == truth["tool_error"]
    assert len(history(logged, "per_call/tool_time")) == truth["tool"]


def test_summary_metrics(logged: dict) -> None:
    log, metrics = logged["log"], logged["task"].data.metrics
    match = next(s for s in log.results.scores if s.name == "match")
    assert metrics["match/accuracy"] == pytest.approx(match.metrics["accuracy"].value)
    assert metrics["total_samples"] == SAMPLES * EPOCHS
    usage = log.stats.model_usage["mockllm/model"]
    assert metrics["usage/mockllm/model/input_tokens"] == usage.input_tokens
    assert metrics["usage/mockllm/model/total_tokens"] == usage.total_tokens
    truth = eval_events(log.location)
    assert metrics["total_model_calls"] == truth["model"]
    assert metrics["total_tool_calls"] == truth["tool"]
    times = sorted(s.total_time for s in log.samples)
    assert metrics["latency/per_sample_mean_seconds"] == pytest.approx(
        sum(times) / len(times), rel=1e-6
    )
    assert metrics["latency/total_seconds"] >= 0
    assert "cost/total_usd" not in metrics  # no cost known: absent, not zero


def test_tables_are_registered_and_hold_json_cells(logged: dict) -> None:
    client, task = logged["client"], logged["task"]
    registered = json.loads(task.data.tags["mlflow.loggedArtifacts"])
    assert sorted(entry["path"] for entry in registered) == sorted(TABLES)
    assert {entry["type"] for entry in registered} == {"table"}
    samples = download_json(client, task.info.run_id, "inspect/samples.json")
    columns = samples["columns"]
    rows = [dict(zip(columns, row, strict=True)) for row in samples["data"]]
    assert len(rows) == SAMPLES * EPOCHS
    assert {(r["sample_id"], r["epoch"]) for r in rows} == {
        (i, e) for i in range(1, SAMPLES + 1) for e in range(1, EPOCHS + 1)
    }
    assert isinstance(rows[0]["scores"], dict)  # objects stay objects
    assert isinstance(rows[0]["total_time"], float)
    for path in TABLES[2:]:
        table = download_json(client, task.info.run_id, path)
        assert table["data"], path
        assert {"sample_id", "epoch"} <= set(table["columns"]), path
    tasks = download_json(client, task.info.run_id, "inspect/tasks.json")
    assert len(tasks["data"]) == 1


def test_sample_results_and_eval_log_artifacts(logged: dict) -> None:
    client, task = logged["client"], logged["task"]
    results = download_json(client, task.info.run_id, "sample_results/demo_addition.json")
    assert len(results) == SAMPLES * EPOCHS
    assert {"id", "epoch", "input", "target", "output", "scores"} <= set(results[0])
    header = download_json(client, task.info.run_id, "eval_logs/demo_addition.json")
    assert header["eval"]["task"] == "demo_addition"
    assert "samples" not in header


def test_a_trace_per_sample_with_scores_as_feedback(logged: dict) -> None:
    from mlflow.tracing.client import TracingClient

    client, task, log = logged["client"], logged["task"], logged["log"]
    experiment_id = task.info.experiment_id
    traces = TracingClient(client.tracking_uri).search_traces(
        locations=[experiment_id], run_id=task.info.run_id
    )
    assert len(traces) == SAMPLES * EPOCHS
    assessments = [a for t in traces for a in t.info.assessments if a.feedback is not None]
    assert len(assessments) == SAMPLES * EPOCHS * 2
    # Besides the scores, each trace holds its target as an expectation.
    expected = [a for t in traces for a in t.info.assessments if a.expectation is not None]
    assert len(expected) == SAMPLES * EPOCHS
    assert {a.name for a in assessments} == {"match", "includes"}
    correct = sum(1 for s in log.samples if s.scores["match"].value == "C")
    assert sum(a.value for a in assessments if a.name == "match") == correct
    parent_traces = TracingClient(client.tracking_uri).search_traces(
        locations=[experiment_id], run_id=logged["parent"].info.run_id
    )
    assert parent_traces == []
