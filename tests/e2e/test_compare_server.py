"""``compare`` against a real ``mlflow server``: artifacts and traces come over HTTP."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from e2e_support import env, failing_task, run_logged

from inspect_mlflow._commands.cli import main
from inspect_mlflow._commands.compare import compare_runs
from inspect_mlflow._commands.demo import demo_task


def _wait_for_scored_traces(store: Any, eval_id: str, count: int) -> None:
    """Wait until the server lists the run's scored traces (a loaded machine may be slow)."""
    from mlflow.tracing.client import TracingClient

    client = store.client()
    experiment = client.get_experiment_by_name(store.experiment_name)
    [run] = client.search_runs([experiment.experiment_id], f"tags.`inspect.eval_id` = '{eval_id}'")
    deadline = time.monotonic() + 60
    while True:
        traces = TracingClient(store.tracking_uri).search_traces(
            locations=[experiment.experiment_id], run_id=run.info.run_id, max_results=100
        )
        scored = [t for t in traces if t.info.assessments]
        if len(scored) >= count or time.monotonic() > deadline:
            return
        time.sleep(1)


@pytest.mark.server
def test_compare_and_log_over_http(server_store: Any, capsys: pytest.CaptureFixture[str]) -> None:
    uri, name = server_store.tracking_uri, server_store.experiment_name
    [log_a] = run_logged(demo_task(8), uri, name)  # the demo model is wrong on 5
    [log_b] = run_logged(failing_task({2}, samples=8, name="demo_addition"), uri, name,
                         fail_on_error=False)  # fmt: skip
    no_tables = {"INSPECT_MLFLOW_LOG_ARTIFACTS": "false"}
    [log_c] = run_logged(failing_task({2}, samples=8, name="demo_addition"), uri, name,
                         fail_on_error=False, extra_env=no_tables)  # fmt: skip
    _wait_for_scored_traces(server_store, log_c.eval.eval_id, 7)
    a, b = log_a.eval.eval_id, log_b.eval.eval_id
    capsys.readouterr()  # the evals' own output
    with env(MLFLOW_TRACKING_URI=uri, MLFLOW_EXPERIMENT_NAME=name):
        assert main(["compare", a, b, "--format", "json", "--log"]) == 0
        from_traces = compare_runs(a, log_c.eval.eval_id, resamples=500)
    document = json.loads(capsys.readouterr().out)
    match = next(row for row in document["scorers"] if row["scorer"] == "match")
    # same model on both sides: nothing flips; sample 2 raised in B
    assert match["n"] == 7 and match["diff"] == 0 and match["p_value"] == 1.0
    assert match["unscored_b"] == ["2"]
    assert match["a_right_b_wrong"] == match["a_wrong_b_right"] == []
    assert from_traces.b.source == "mlflow-traces"
    assert from_traces.get("match").unscored_b == ["2"] and from_traces.get("match").n == 7
    client = server_store.client()
    run = client.get_run(document["logged_run_id"])
    assert run.data.tags["inspect.comparison"] == "true"
    assert run.data.tags["inspect.compare.a_run_id"] == document["a"]["run_id"]
    assert run.data.metrics["compare/match/n"] == 7
    assert {f.path for f in client.list_artifacts(run.info.run_id, "inspect")} == {
        "inspect/comparison.json",
        "inspect/comparison_samples.json",
    }
