"""End-to-end: real ``eval_set()`` calls on the offline mock model, read back from sqlite.

Two sets, run once for the module:

- **retried**: in one ``eval_set()`` call, task ``flaky`` fails twice on sample 3 (its
  first failure is retried per sample with ``retry_on_error=1``, the second fails the
  task), and Inspect retries the task, reusing samples 1 and 2; task ``steady`` fails
  once on sample 2 and succeeds on the sample retry.
- **resumed**: a first call where task ``broken`` fails for good (``retry_attempts=0``),
  a second call on the same log dir after the "fix", and a third call on the completed
  set (Inspect then fires only eval-set start and end).

Each must show one parent run per set and one run per task, with the final attempt's
status and summary, and no metric point logged twice.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from e2e_support import download_json, env, new_experiment_name
from inspect_ai import Task, eval_set
from inspect_ai.log import read_eval_log
from inspect_ai.solver import Generate, TaskState, generate, solver, use_tools
from mlflow import MlflowClient

from inspect_mlflow._commands.demo import add_tool, demo_model, demo_task
from inspect_mlflow._writer.mlflow_sink import RUN_KEY_TAG

pytestmark = pytest.mark.e2e

SAMPLES = 5


def fails_until(marker: Path, sample_id: int, failures: int) -> Any:
    """A solver raising for ``sample_id`` until it has failed ``failures`` times."""

    @solver
    def gate() -> Any:
        async def solve(state: TaskState, generate: Generate) -> TaskState:
            if state.sample_id == sample_id:
                seen = int(marker.read_text()) if marker.exists() else 0
                if seen < failures:
                    marker.write_text(str(seen + 1))
                    raise RuntimeError(f"planned failure {seen + 1} of sample {sample_id}")
            return state

        return solve

    return gate()


def task(name: str, gate: Any, samples: int = SAMPLES) -> Task:
    base = demo_task(samples, name=name)
    return Task(
        name=name,
        dataset=base.dataset,
        solver=[gate, use_tools(add_tool()), generate()],
        scorer=base.scorer,
    )


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("eval-set")
    uri = f"sqlite:///{root}/mlflow.db"
    experiment = new_experiment_name("eval-set")
    settings = {
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_EXPERIMENT_NAME": experiment,
        "INSPECT_MLFLOW_AUTOLOG_ENABLED": "false",
    }
    common = {"model": demo_model(), "display": "none", "max_samples": 1, "retry_wait": 0}
    cwd = os.getcwd()
    os.chdir(root)  # the sqlite store puts artifacts under ./mlruns
    try:
        with env(**settings):
            retried_ok, retried_logs = eval_set(
                [
                    task("flaky", fails_until(root / "flaky", 3, failures=2)),
                    task("steady", fails_until(root / "steady", 2, failures=1), samples=3),
                ],
                log_dir=str(root / "retried"),
                retry_attempts=2,
                retry_on_error=1,
                **common,
            )
            broken = fails_until(root / "broken", 3, failures=10**6)
            first_ok, _ = eval_set(
                [task("broken", broken)], log_dir=str(root / "resumed"), retry_attempts=0, **common
            )
            client = MlflowClient(tracking_uri=uri)
            exp_id = client.get_experiment_by_name(experiment).experiment_id
            after_first = {r.data.tags[RUN_KEY_TAG]: r for r in client.search_runs([exp_id])}
            (root / "broken").write_text("0")
            fixed = fails_until(root / "broken", 3, failures=0)
            second_ok, resumed_logs = eval_set(
                [task("broken", fixed)], log_dir=str(root / "resumed"), retry_attempts=0, **common
            )
            after_second = {r.data.tags[RUN_KEY_TAG]: r for r in client.search_runs([exp_id])}
            third_ok, _ = eval_set(
                [task("broken", fixed)], log_dir=str(root / "resumed"), retry_attempts=0, **common
            )
    finally:
        os.chdir(cwd)
    assert retried_ok and not first_ok and second_ok and third_ok
    runs = client.search_runs([exp_id], max_results=100)
    return {
        "client": client,
        "runs": runs,
        "by_name": {r.info.run_name: r for r in runs},
        "retried_logs": {log.eval.task: log for log in retried_logs},
        "resumed_log": resumed_logs[0],
        "after_first": after_first,
        "after_second": after_second,
    }


def history(logged: dict, run: Any, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in logged["client"].get_metric_history(run.info.run_id, key)]


def assert_no_point_twice(logged: dict, run: Any) -> None:
    """Every metric of the run has each step at most once."""
    for key in run.data.metrics:
        steps = Counter(step for step, _ in history(logged, run, key))
        assert max(steps.values()) == 1, (run.info.run_name, key, steps)


def final_model_events(log: Any) -> int:
    full = read_eval_log(log.location)
    return sum(1 for s in full.samples or [] for e in s.events if e.event == "model")


# -- runs ---------------------------------------------------------------------------


def test_one_parent_per_set_and_one_run_per_task(logged: dict) -> None:
    names = Counter(r.info.run_name for r in logged["runs"])
    parents = [r.info.run_name for r in logged["runs"] if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 2 and all(names[name] == 1 for name in parents)
    assert sorted(n for n in names if n not in parents) == ["broken", "flaky", "steady"]
    assert sum(names.values()) == 5  # nothing else: no run per attempt, none per call
    by_id = {r.info.run_id: r for r in logged["runs"]}
    for name in ("flaky", "steady", "broken"):
        run = logged["by_name"][name]
        parent = by_id[run.data.tags["mlflow.parentRunId"]]
        set_id = run.data.tags["inspect.eval_set_id"]
        assert parent.data.tags["inspect.eval_set_id"] == set_id
        # Named from the set's tasks and model, and the start of its first attempt.
        tasks = "broken" if name == "broken" else "(flaky, steady|steady, flaky)"
        assert re.fullmatch(rf"{tasks} · mockllm/model · \d\d-\d\d \d\d:\d\d", parent.info.run_name)
        assert run.data.tags[RUN_KEY_TAG] == f"task:{set_id}/{run.data.tags['inspect.task_id']}"
    flaky, steady = logged["by_name"]["flaky"], logged["by_name"]["steady"]
    assert flaky.data.tags["mlflow.parentRunId"] == steady.data.tags["mlflow.parentRunId"]


# -- a task retried in the same call -----------------------------------------------------


def test_a_retried_task_continues_one_run_with_the_last_attempt_on_top(logged: dict) -> None:
    run, log = logged["by_name"]["flaky"], logged["retried_logs"]["flaky"]
    assert run.info.status == "FINISHED" and log.status == "success"
    assert run.data.tags["inspect.eval_id"] == log.eval.eval_id  # the last attempt's
    assert run.data.tags["inspect.attempts"] == "2"
    assert history(logged, run, "attempts") == [(1, 2.0)]
    assert run.data.params["task"] == "flaky" and run.data.params["dataset.samples"] == "5"
    assert history(logged, run, "total_samples") == [(1, 5.0)]
    accuracy = log.results.scores[0].metrics["accuracy"].value
    assert run.data.metrics[f"{log.results.scores[0].name}/accuracy"] == accuracy
    assert_no_point_twice(logged, run)


def test_reused_samples_are_counted_once(logged: dict) -> None:
    run, log = logged["by_name"]["flaky"], logged["retried_logs"]["flaky"]
    # Samples 1 and 2 ran in attempt 1 and were reused by attempt 2 (no second end).
    scores = history(logged, run, "per_sample/match")
    assert len(scores) == SAMPLES and [s for s, _ in scores] == sorted(s for s, _ in scores)
    # Every model call of the final log counted once, at consecutive steps.
    calls = history(logged, run, "per_call/model_call")
    assert [s for s, _ in calls] == list(range(final_model_events(log)))
    assert run.data.metrics["total_model_calls"] == final_model_events(log)
    rows = download_json(logged["client"], run.info.run_id, "inspect/samples.json")
    ids = [row[0] for row in rows["data"]]
    assert sorted(set(ids)) == [1, 2, 3, 4, 5] and ids.count(1) == 1 and ids.count(2) == 1
    # Sample 3 failed twice (a sample retry, then the failure that ended task attempt 1):
    # its failed run records 2 attempts, its re-run in task attempt 2 all 3.
    assert [v for _, v in history(logged, run, "per_sample/attempts")] == [2.0, 3.0]


def test_sample_retries_count_once_with_their_attempts(logged: dict) -> None:
    run = logged["by_name"]["steady"]
    assert run.info.status == "FINISHED"
    assert history(logged, run, "attempts") == [(0, 1.0)]  # the task itself ran once
    totals = history(logged, run, "per_sample/total_time")
    assert [s for s, _ in totals] == [0, 1, 2]  # three samples, one point each
    assert [v for _, v in history(logged, run, "per_sample/attempts")] == [2.0]
    traces = logged["client"].search_traces(
        locations=[run.info.experiment_id], run_id=run.info.run_id
    )
    assert len(traces) == 3
    attempts = [t.info.tags.get("inspect.attempts") for t in traces]
    assert sorted(a for a in attempts if a) == ["2"]
    assert_no_point_twice(logged, run)


# -- a set interrupted and resumed -----------------------------------------------------


def test_the_first_call_leaves_failed_runs(logged: dict) -> None:
    first = logged["after_first"]
    assert len(first) == 5  # the retried set (parent, flaky, steady) + parent and broken
    broken = [r for r in first.values() if r.info.run_name == "broken"]
    assert len(broken) == 1 and broken[0].info.status == "FAILED"
    parent = first[f"eval:{broken[0].data.tags['inspect.eval_set_id']}"]
    assert parent.info.status == "FAILED"  # a task of the set has not succeeded yet


def test_a_resumed_set_continues_its_runs(logged: dict) -> None:
    run, log = logged["by_name"]["broken"], logged["resumed_log"]
    first = logged["after_first"]
    before = next(r for r in first.values() if r.info.run_name == "broken")
    assert run.info.run_id == before.info.run_id
    assert run.info.status == "FINISHED" and log.status == "success"
    parent_key = f"eval:{run.data.tags['inspect.eval_set_id']}"
    assert logged["after_second"][parent_key].info.run_id == first[parent_key].info.run_id
    assert logged["after_second"][parent_key].info.status == "FINISHED"
    assert run.data.params == before.data.params
    assert run.data.tags["inspect.eval_id"] == log.eval.eval_id
    assert run.data.tags["inspect.run_id"] == log.eval.run_id
    # Summary: one point per attempt that ended, the final attempt's on top.
    assert history(logged, run, "attempts") == [(0, 1.0), (1, 2.0)]
    assert [s for s, _ in history(logged, run, "total_model_calls")] == [0, 1]
    assert history(logged, run, "total_samples") == [(1, SAMPLES)]  # the failed log has none
    assert run.data.metrics["completed_samples"] == log.results.completed_samples == SAMPLES
    # Step counters carried on across the two calls.
    calls = history(logged, run, "per_call/model_call")
    assert [s for s, _ in calls] == list(range(len(calls)))
    assert [v for _, v in calls] == [float(i + 1) for i in range(len(calls))]
    assert run.data.metrics["total_model_calls"] == final_model_events(log)
    scores = history(logged, run, "per_sample/match")
    assert len(scores) == SAMPLES
    assert_no_point_twice(logged, run)
    # Tables kept the rows of the first call: one row per attempt in tasks.json.
    tasks = download_json(logged["client"], run.info.run_id, "inspect/tasks.json")
    status = tasks["columns"].index("status")
    assert [row[status] for row in tasks["data"]] == ["error", "success"]
    rows = download_json(logged["client"], run.info.run_id, "inspect/samples.json")
    ids = [row[0] for row in rows["data"]]
    assert ids.count(1) == 1 and ids.count(2) == 1 and sorted(set(ids)) == [1, 2, 3, 4, 5]


def test_calling_a_completed_set_again_changes_nothing(logged: dict) -> None:
    after_second = logged["after_second"]
    now = {r.data.tags[RUN_KEY_TAG]: r for r in logged["runs"]}
    for key, run in after_second.items():
        assert now[key].info.status == run.info.status
        assert now[key].info.end_time == run.info.end_time
        assert now[key].data.metrics == run.data.metrics
