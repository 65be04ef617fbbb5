"""`inspect-mlflow import` of an eval set's log directory, imported as it grows.

A task fails in a first ``eval_set()`` call and succeeds when a second call on the same
log directory retries it, reusing the sample that had succeeded. The hook logs both calls
live to one experiment; after each call the log directory is imported into another.
Both must hold the same history: one parent run for the set and one run for the task,
which the second attempt continues (final status and summary of the last attempt, the
attempt count, step counters carried on, the reused sample counted once); a third
import adds nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from e2e_support import env, new_experiment_name
from inspect_ai import Task, eval_set
from inspect_ai.solver import Generate, TaskState, generate, solver, use_tools
from mlflow import MlflowClient

from inspect_mlflow._commands.cli import main
from inspect_mlflow._commands.demo import add_tool, demo_model, demo_task
from inspect_mlflow._writer.mlflow_sink import RUN_KEY_TAG

pytestmark = pytest.mark.e2e

SAMPLES = 3


def broken_task(marker: Path) -> Task:
    """The demo task whose sample 2 raises while ``marker`` says "broken"."""

    @solver
    def gate() -> Any:
        async def solve(state: TaskState, generate: Generate) -> TaskState:
            if state.sample_id == 2 and marker.read_text() == "broken":
                # An eval log's attempt times have whole-second precision, and the importer
                # treats a sample that started in the very second the retry started as new
                # (counted again rather than lost). Failing 1.5 s in keeps the samples the
                # retry reuses in an earlier second, as they are in any real eval.
                await asyncio.sleep(1.5)
                raise RuntimeError("planned failure")
            return state

        return solve

    base = demo_task(SAMPLES, name="flaky")
    return Task(
        name="flaky",
        dataset=base.dataset,
        solver=[gate(), use_tools(add_tool()), generate()],
        scorer=base.scorer,
    )


def run_set(root: Path, uri: str, experiment: str) -> bool:
    live = {
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_EXPERIMENT_NAME": experiment,
        "INSPECT_MLFLOW_AUTOLOG_ENABLED": "false",
    }
    cwd = os.getcwd()
    os.chdir(root)  # the sqlite store puts artifacts under ./mlruns
    try:
        with env(**live):
            ok, _ = eval_set(
                [broken_task(root / "marker")],
                log_dir=str(root / "logs"),
                model=demo_model(),
                display="none",
                max_samples=1,
                retry_attempts=0,
                retry_wait=0,
            )
    finally:
        os.chdir(cwd)
    return ok


def import_logs(root: Path, uri: str, experiment: str) -> str:
    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(root)  # the sqlite store puts artifacts under ./mlruns
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = main(
                ["import", str(root / "logs"), "--tracking-uri", uri, "--experiment", experiment]
            )
    finally:
        os.chdir(cwd)
    assert code == 0, out.getvalue()
    return out.getvalue()


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory, _sqlite_template: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("import-eval-set")
    shutil.copyfile(_sqlite_template, root / "mlflow.db")
    uri = f"sqlite:///{root}/mlflow.db"
    live, imported = new_experiment_name("set-live"), new_experiment_name("set-imported")
    client = MlflowClient(tracking_uri=uri)

    def runs(experiment: str) -> dict[str, Any]:
        exp = client.get_experiment_by_name(experiment)
        return {r.data.tags[RUN_KEY_TAG]: r for r in client.search_runs([exp.experiment_id])}

    (root / "marker").write_text("broken")
    assert not run_set(root, uri, live)
    first = import_logs(root, uri, imported)
    after_first = runs(imported)
    (root / "marker").write_text("fixed")
    assert run_set(root, uri, live)
    second = import_logs(root, uri, imported)
    after_second = runs(imported)
    third = import_logs(root, uri, imported)
    return {
        "client": client,
        "outputs": (first, second, third),
        "after_first": after_first,
        "after_second": after_second,
        "after_third": runs(imported),
        "live": runs(live),
    }


def task_run(runs: dict[str, Any]) -> Any:
    [run] = [run for key, run in runs.items() if key.startswith("task:")]
    return run


def test_each_import_adds_only_the_new_attempt(logged: dict[str, Any]) -> None:
    first, second, third = logged["outputs"]
    assert "1 imported, 0 skipped, 0 failed" in first
    assert "1 imported, 0 skipped, 0 failed" in second
    assert "0 imported, 1 skipped, 0 failed" in third


def test_one_parent_run_and_one_task_run_continued(logged: dict[str, Any]) -> None:
    first, second = logged["after_first"], logged["after_second"]
    assert len(first) == len(second) == 2
    assert set(second) == set(first) == set(logged["live"])
    assert logged["after_third"].keys() == second.keys()
    for key, run in second.items():
        assert run.info.run_id == first[key].info.run_id
    assert task_run(first).info.status == "FAILED"
    task = task_run(second)
    assert task.info.status == "FINISHED"
    assert task.data.metrics["attempts"] == 2
    assert task.data.metrics["completed_samples"] == SAMPLES


def test_same_history_as_live(logged: dict[str, Any]) -> None:
    client = logged["client"]
    for key, live in logged["live"].items():
        imported = logged["after_second"][key]
        assert imported.info.status == live.info.status, key
        assert imported.data.params == live.data.params
        tags = {k: v for k, v in imported.data.tags.items() if k != "mlflow.parentRunId"}
        assert tags == {k: v for k, v in live.data.tags.items() if k != "mlflow.parentRunId"}
        assert set(imported.data.metrics) == set(live.data.metrics)
        for metric in live.data.metrics:
            want = [(m.step, m.value) for m in client.get_metric_history(live.info.run_id, metric)]
            got = [
                (m.step, m.value) for m in client.get_metric_history(imported.info.run_id, metric)
            ]
            assert sorted(got) == sorted(want), metric
    task = task_run(logged["after_second"])
    steps = [m.step for m in client.get_metric_history(task.info.run_id, "per_sample/total_time")]
    # Attempt 1 ran samples 1-3 (2 failed, 3 was cancelled); attempt 2 reused sample 1.
    assert sorted(steps) == list(range(SAMPLES + SAMPLES - 1))
