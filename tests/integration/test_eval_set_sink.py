"""Continuing runs in MLflow (``OpenRun(resume=True)``), on a sqlite file and a real server.

A later process (a new sink) finds the run by its logical key, sets it RUNNING again,
keeps its creation tags, appends to its tables and record files, and can read back the
state the engine saved when the run closed.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from inspect_mlflow._operations import (
    RUN_STATE_PATH,
    AppendRows,
    CloseRun,
    LogArtifact,
    LogMetrics,
    LogParams,
    Metric,
    OpenRun,
)
from inspect_mlflow._writer.mlflow_sink import LOGGED_ARTIFACTS_TAG, RUN_KEY_TAG

T0 = 1_700_000_000_000
STATE = {"version": 1, "counters": {"sample": 2}, "series": {"t": [0.5, 1.5]}}


def opens(eval_id: str) -> list[OpenRun]:
    return [
        OpenRun("eval:S", "eval", "inspect-set-S", None, {"inspect.run_id": eval_id}, T0, True),
        OpenRun("task:S/T", "task", "arith", "eval:S", {"inspect.eval_id": eval_id}, T0, True),
    ]


def points(start: int, n: int) -> LogMetrics:
    return LogMetrics("task:S/T", tuple(Metric("m", float(i), i, T0 + i) for i in range(start, n)))


def download(store, run_id: str, path: str, tmp_path: Path):
    dst = tmp_path / uuid.uuid4().hex[:8]
    dst.mkdir()
    return json.loads(Path(store.client().download_artifacts(run_id, path, str(dst))).read_text())


def test_a_later_sink_continues_the_run_and_appends_to_its_tables(mlflow_store, tmp_path):
    mlflow_store.create_experiment()
    first = mlflow_store.sink()
    first.send(
        [
            *opens("e1"),
            LogParams("task:S/T", {"task": "arith"}),
            points(0, 2),
            AppendRows("task:S/T", "inspect/samples.json", ({"id": 1}, {"id": 2})),
            AppendRows("task:S/T", "results.json", ({"id": 1},), "records"),
            LogArtifact("task:S/T", RUN_STATE_PATH, STATE),
            CloseRun("task:S/T", "FAILED", T0 + 10),
            CloseRun("eval:S", "FAILED", T0 + 11),
        ]
    )
    first.close()

    reader = mlflow_store.sink()
    assert reader.read_run_state("task:S/T") == STATE
    assert reader.read_run_state("eval:S") == {}  # the run exists, nothing was saved
    assert reader.read_run_state("task:S/other") is None

    later = mlflow_store.sink()
    later.send(opens("e2"))
    client = mlflow_store.client()
    task_id = later.run_id("task:S/T")
    assert task_id == first.run_id("task:S/T")
    assert client.get_run(task_id).info.status == "RUNNING"
    assert later.calls["create_run"] == 0 and later.calls["update_run"] == 2
    later.send(
        [
            LogParams("task:S/T", {"task": "arith"}),
            points(2, 4),
            AppendRows("task:S/T", "inspect/samples.json", ({"id": 3, "extra": True},)),
            AppendRows("task:S/T", "results.json", ({"id": 3},), "records"),
            CloseRun("task:S/T", "FINISHED", T0 + 20),
            CloseRun("eval:S", "FINISHED", T0 + 21),
        ]
    )
    later.close()

    experiment = client.get_experiment_by_name(mlflow_store.experiment_name)
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags[RUN_KEY_TAG] for r in runs) == ["eval:S", "task:S/T"]
    run = client.get_run(task_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["inspect.eval_id"] == "e1"  # creation tags are not set again
    assert run.data.params == {"task": "arith"}
    assert [(m.step, m.value) for m in client.get_metric_history(task_id, "m")] == [
        (i, float(i)) for i in range(4)
    ]
    table = download(mlflow_store, task_id, "inspect/samples.json", tmp_path)
    assert table == {"columns": ["id", "extra"], "data": [[1, None], [2, None], [3, True]]}
    assert download(mlflow_store, task_id, "results.json", tmp_path) == [{"id": 1}, {"id": 3}]
    assert json.loads(run.data.tags[LOGGED_ARTIFACTS_TAG]) == [
        {"path": "inspect/samples.json", "type": "table"}
    ]


def test_the_same_sink_reopens_a_run_it_closed(sqlite_store, tmp_path):
    sink = sqlite_store.sink()
    sink.send(
        [
            OpenRun("task:k", "task", "t", None, {}, T0, True),
            AppendRows("task:k", "rows.json", ({"n": 1},)),
            CloseRun("task:k", "FAILED", T0 + 1),
            OpenRun("task:k", "task", "t", None, {}, T0 + 2, True),
        ]
    )
    client = sqlite_store.client()
    run_id = sink.run_id("task:k")
    assert client.get_run(run_id).info.status == "RUNNING"
    sink.send([AppendRows("task:k", "rows.json", ({"n": 2},)), CloseRun("task:k", "KILLED", T0)])
    assert client.get_run(run_id).info.status == "KILLED"
    assert download(sqlite_store, run_id, "rows.json", tmp_path)["data"] == [[1], [2]]
    assert sink.calls["create_run"] == 1


def test_without_resume_a_closed_key_is_not_looked_up(sqlite_store):
    sink = sqlite_store.sink()
    sink.send([OpenRun("task:k", "task", "t", None, {}, T0), CloseRun("task:k", "FINISHED", T0)])
    later = sqlite_store.sink()
    later.send([OpenRun("task:k", "task", "t", None, {}, T0)])
    assert later.calls["search_runs"] == 0 and later.calls["create_run"] == 1
    assert later.run_id("task:k") != sink.run_id("task:k")
