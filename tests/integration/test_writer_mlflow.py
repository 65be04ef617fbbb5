"""MlflowSink against real MLflow: a sqlite file per test, and a real `mlflow server`.

Tests taking ``mlflow_store`` run on both (the server variant is marked ``server``);
tests taking ``sqlite_store`` or ``server_store`` run on one of them.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import types
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from inspect_mlflow._operations import (
    AppendRows,
    CloseRun,
    LogArtifact,
    LogMetrics,
    LogParams,
    LogTrace,
    Metric,
    OpenRun,
    SetTags,
)
from inspect_mlflow._writer.mlflow_sink import (
    LOGGED_ARTIFACTS_TAG,
    RUN_KEY_TAG,
    MlflowSink,
    plan,
    table_json,
)
from inspect_mlflow._writer.sink import Rejection, SinkError
from inspect_mlflow._writer.writer import BackgroundWriter

T0 = 1_700_000_000_000


def open_runs() -> list:
    return [
        OpenRun(
            run="eval:r1",
            kind="eval",
            name="inspect-r1",
            parent=None,
            tags={"inspect.run_id": "r1"},
            start_time_ms=T0,
        ),
        OpenRun(
            run="task:e1",
            kind="task",
            name="arith",
            parent="eval:r1",
            tags={"inspect.task": "arith", "inspect.model": "mockllm/model"},
            start_time_ms=T0 + 1,
        ),
    ]


def metric_points(key: str, n: int, start: int = 0) -> tuple[Metric, ...]:
    return tuple(Metric(key, float(i) / 2, i, T0 + i) for i in range(start, start + n))


def runs_by_key(store, experiment_id: str) -> dict:
    runs = store.client().search_runs([experiment_id], max_results=100)
    return {r.data.tags[RUN_KEY_TAG]: r for r in runs}


def download_json(store, run_id: str, path: str, tmp_path: Path):
    dst = tmp_path / f"dl-{uuid.uuid4().hex[:8]}"
    dst.mkdir()
    local = store.client().download_artifacts(run_id, path, str(dst))
    return json.loads(Path(local).read_text(encoding="utf-8"))


# -- the core checks, on sqlite and on a server ---------------------------------------------


def test_runs_params_metrics_tables_artifacts_and_status_land(mlflow_store, tmp_path):
    sink = mlflow_store.sink()
    rows_a = (
        {"sample_id": 1, "epoch": 1, "score": 1.0, "meta": {"k": [1, 2]}},
        {"sample_id": 2, "epoch": 1, "score": 0.0},
    )
    rows_b = ({"sample_id": 3, "epoch": 1, "output": "five", "score": None},)
    sink.send(
        [
            *open_runs(),
            LogParams("task:e1", {"model": "mockllm/model", "temperature": "0.5"}),
            LogMetrics("task:e1", metric_points("sample/accuracy", 3)),
            AppendRows("task:e1", "inspect/samples.json", rows_a),
            SetTags("task:e1", {"inspect.eval_id": "e1"}),
        ]
    )
    sink.send(
        [
            LogMetrics("task:e1", metric_points("sample/accuracy", 2, start=3)),
            AppendRows("task:e1", "inspect/samples.json", rows_b),
            AppendRows("task:e1", "inspect/records.json", ({"a": 1}, {"b": [2]}), "records"),
            LogArtifact("task:e1", "eval_logs/arith.json", {"status": "success", "n": [1, 2]}),
            LogMetrics("task:e1", (Metric("accuracy/mean", 0.5, 0, T0),)),
            CloseRun("task:e1", "FINISHED", T0 + 100),
            CloseRun("eval:r1", "FINISHED", T0 + 200),
        ]
    )
    experiment_id = sink.experiment_id
    runs = runs_by_key(mlflow_store, experiment_id)
    assert set(runs) == {"eval:r1", "task:e1"}
    parent, task = runs["eval:r1"], runs["task:e1"]

    assert parent.info.run_name == "inspect-r1" and task.info.run_name == "arith"
    assert task.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert "mlflow.parentRunId" not in parent.data.tags
    assert task.data.tags["inspect.task"] == "arith"
    assert task.data.tags["inspect.eval_id"] == "e1"
    assert parent.data.tags["inspect.run_id"] == "r1"
    assert task.data.params == {"model": "mockllm/model", "temperature": "0.5"}
    assert task.info.status == "FINISHED" and parent.info.status == "FINISHED"
    assert task.info.start_time == T0 + 1 and task.info.end_time == T0 + 100

    history = mlflow_store.client().get_metric_history(task.info.run_id, "sample/accuracy")
    assert sorted((m.step, m.value) for m in history) == [(i, i / 2) for i in range(5)]
    assert task.data.metrics["accuracy/mean"] == 0.5

    table = download_json(mlflow_store, task.info.run_id, "inspect/samples.json", tmp_path)
    assert table["columns"] == ["sample_id", "epoch", "score", "meta", "output"]
    assert table["data"] == [
        [1, 1, 1.0, {"k": [1, 2]}, None],
        [2, 1, 0.0, None, None],
        [3, 1, None, None, "five"],
    ]
    records = download_json(mlflow_store, task.info.run_id, "inspect/records.json", tmp_path)
    assert records == [{"a": 1}, {"b": [2]}]
    artifact = download_json(mlflow_store, task.info.run_id, "eval_logs/arith.json", tmp_path)
    assert artifact == {"status": "success", "n": [1, 2]}
    # Exactly what MlflowClient.log_table writes, once, tables only (not records).
    assert task.data.tags[LOGGED_ARTIFACTS_TAG] == json.dumps(
        [{"path": "inspect/samples.json", "type": "table"}]
    )
    assert LOGGED_ARTIFACTS_TAG not in parent.data.tags


def test_tables_match_what_mlflow_log_table_writes(mlflow_store, tmp_path):
    import pandas as pd

    rows = [{"task": "a", "n": 1}, {"task": "b", "n": 2}]
    sink = mlflow_store.sink()
    sink.send(
        [
            open_runs()[0],
            AppendRows("eval:r1", "inspect/tasks.json", (rows[0],)),
            AppendRows("eval:r1", "inspect/tasks.json", (rows[1],)),
            CloseRun("eval:r1", "FINISHED", T0 + 5),
        ]
    )
    client = mlflow_store.client()
    reference = client.create_run(sink.experiment_id).info.run_id
    client.log_table(reference, pd.DataFrame(rows), "inspect/tasks.json")
    ours = sink.run_id("eval:r1")
    assert (
        client.get_run(ours).data.tags[LOGGED_ARTIFACTS_TAG]
        == client.get_run(reference).data.tags[LOGGED_ARTIFACTS_TAG]
    )
    assert download_json(mlflow_store, ours, "inspect/tasks.json", tmp_path) == download_json(
        mlflow_store, reference, "inspect/tasks.json", tmp_path
    )
    # The lookup MlflowClient.load_table does (it goes through process-wide state itself).
    pattern = '"path"%:%"inspect/tasks.json",%"type"%:%"table"'
    found = client.search_runs(
        [sink.experiment_id], filter_string=f"tags.{LOGGED_ARTIFACTS_TAG} LIKE '%{pattern}%'"
    )
    assert {r.info.run_id for r in found} == {ours, reference}


@pytest.mark.parametrize("status", ["FINISHED", "FAILED", "KILLED"])
def test_close_sets_the_status(sqlite_store, status):
    sink = sqlite_store.sink()
    sink.send([open_runs()[0], CloseRun("eval:r1", status, T0 + 9)])
    run = runs_by_key(sqlite_store, sink.experiment_id)["eval:r1"]
    assert run.info.status == status
    assert run.info.end_time == T0 + 9


@pytest.mark.server
def test_server_statuses_and_one_create_request_per_run(server_store):
    server = server_store.server
    sink = server_store.sink()
    sink.send([OpenRun(run="eval:x", kind="eval", name="x", parent=None, tags={})])
    before = server.log_size()
    ops = []
    for status in ("FINISHED", "FAILED", "KILLED"):
        key = f"task:{status}"
        ops += [
            OpenRun(run=key, kind="task", name=status, parent="eval:x", tags={"a": "b"}),
            LogParams(key, {"p": "1"}),
            LogMetrics(key, metric_points("m", 3)),
            CloseRun(key, status, T0 + 1),
        ]
    sink.send(ops)
    counts = server.requests_since(before)
    assert counts[("POST", "/api/2.0/mlflow/runs/create")] == 3
    assert counts[("POST", "/api/2.0/mlflow/runs/log-batch")] == 3
    assert counts[("POST", "/api/2.0/mlflow/runs/search")] == 0
    runs = runs_by_key(server_store, sink.experiment_id)
    assert {k: r.info.status for k, r in runs.items() if k != "eval:x"} == {
        "task:FINISHED": "FINISHED",
        "task:FAILED": "FAILED",
        "task:KILLED": "KILLED",
    }


def test_2500_metrics_in_one_run_are_split_within_limits(mlflow_store):
    sink = mlflow_store.sink()
    points = tuple(Metric(f"m{i % 5}", float(i), i // 5, T0 + i) for i in range(2500))
    sink.send([open_runs()[0], LogMetrics("eval:r1", points)])
    assert sink.calls["log_batch"] == 3
    run_id = sink.run_id("eval:r1")
    client = mlflow_store.client()
    for k in range(5):
        history = client.get_metric_history(run_id, f"m{k}")
        assert len(history) == 500
        assert sorted(m.step for m in history) == list(range(500))


def test_large_params_and_tags_are_split_under_the_request_size_limit(mlflow_store):
    sink = mlflow_store.sink()
    params = {f"p{i:03d}": "x" * 5900 for i in range(150)}
    tags = {f"t{i:03d}": "y" * 7900 for i in range(150)}
    sink.send(
        [
            open_runs()[0],
            LogParams("eval:r1", params),
            SetTags("eval:r1", tags),
            LogMetrics("eval:r1", metric_points("m", 10)),
        ]
    )
    run = mlflow_store.client().get_run(sink.run_id("eval:r1"))
    assert run.data.params == params
    assert all(run.data.tags[k] == v for k, v in tags.items())
    assert run.data.metrics["m"] == 4.5
    # 100 params + 100 tags (1.4 MB) exceed the server's 1 MB body limit: params, tags and
    # the rest go in three requests, none refused (a refusal would bisect into more).
    assert sink.calls["log_batch"] == 3


def test_a_refused_param_is_isolated_and_the_rest_of_the_batch_lands(mlflow_store):
    sink = mlflow_store.sink()
    sink.send([open_runs()[0], LogParams("eval:r1", {"lr": "0.1"})])
    with pytest.raises(SinkError) as caught:
        sink.send(
            [
                LogParams("eval:r1", {"lr": "0.2", "batch": "32"}),
                SetTags("eval:r1", {"note": "kept"}),
                LogMetrics("eval:r1", metric_points("loss", 4)),
                CloseRun("eval:r1", "FINISHED", T0 + 3),
            ]
        )
    error = caught.value
    assert error.transient is False
    assert error.pending == () and error.failed == ()
    assert [(r.run, r.key) for r in error.rejected] == [("eval:r1", "lr")]
    assert "param" in error.rejected[0].reason.lower()
    run = mlflow_store.client().get_run(sink.run_id("eval:r1"))
    assert run.data.params == {"lr": "0.1", "batch": "32"}
    assert run.data.tags["note"] == "kept"
    assert len(mlflow_store.client().get_metric_history(run.info.run_id, "loss")) == 4
    assert run.info.status == "FINISHED"


def test_writer_and_sink_deliver_a_stream_of_emits(mlflow_store):
    sink = mlflow_store.sink()
    writer = BackgroundWriter(sink, schedule_delay=0.05)
    try:
        writer.emit(open_runs())
        for i in range(20):
            writer.emit(
                [
                    LogMetrics("task:e1", (Metric("sample/score", float(i), i, T0 + i),)),
                    AppendRows("task:e1", "inspect/samples.json", ({"id": i},)),
                ]
            )
        writer.emit([CloseRun("task:e1", "FINISHED", T0 + 50), CloseRun("eval:r1", "FAILED", T0)])
        assert writer.flush(60)
    finally:
        assert writer.shutdown(30)
    assert writer.stats["ops_failed"] == 0 and writer.failed == []
    runs = runs_by_key(mlflow_store, sink.experiment_id)
    task = runs["task:e1"]
    history = mlflow_store.client().get_metric_history(task.info.run_id, "sample/score")
    assert sorted(m.step for m in history) == list(range(20))
    assert task.info.status == "FINISHED" and runs["eval:r1"].info.status == "FAILED"


# -- sqlite-only details ---------------------------------------------------------------------


def test_open_run_is_idempotent_per_key(sqlite_store):
    sink = sqlite_store.sink()
    sink.send(open_runs())
    sink.send(open_runs())
    assert sink.calls["create_run"] == 2
    assert len(runs_by_key(sqlite_store, sink.experiment_id)) == 2


def test_consecutive_ops_of_a_run_are_coalesced_across_the_batch(sqlite_store):
    sink = sqlite_store.sink()
    ops = list(open_runs())
    for i in range(40):
        ops.append(LogMetrics("task:e1", (Metric("a", float(i), i, T0),)))
        ops.append(SetTags("eval:r1", {f"t{i}": "v"}))
        ops.append(LogParams("task:e1", {f"p{i}": str(i)}))
    sink.send(ops)
    assert sink.calls["log_batch"] == 2  # one per run, not 120
    run = sqlite_store.client().get_run(sink.run_id("task:e1"))
    assert len(run.data.params) == 40


def test_plan_keeps_order_relative_to_open_and_close():
    ops = [
        LogMetrics("a", ()),
        OpenRun(run="b", kind="task", name=None, parent=None),
        LogMetrics("a", ()),
        CloseRun("a", "FINISHED", 0),
        LogMetrics("a", ()),
        LogTrace("b", "t1", "s", 0, 1),
        OpenRun(run="c", kind="task", name=None, parent=None),
        LogTrace("c", "t2", "s", 0, 1),
    ]
    steps = [(s.kind, s.indices) for s in plan(ops)]
    assert steps == [
        ("data", [0, 2]),
        ("OpenRun", [1]),
        ("CloseRun", [3]),
        ("data", [4]),
        ("trace", [5]),
        ("OpenRun", [6]),
        ("trace", [7]),
    ]


def test_trace_steps_before_any_open_start_with_the_batch():
    """They refer to runs that exist already; after an open or inputs, they wait their turn."""
    from inspect_mlflow._writer.mlflow_sink.planning import early_traces

    ended = [
        LogMetrics("a", ()),
        LogTrace("a", "t1", "s", 0, 1),
        CloseRun("a", "FINISHED", 0),
        LogTrace("b", "t2", "s", 0, 1),
    ]
    steps = plan(ended)
    assert [s.kind for s in steps] == ["data", "trace", "CloseRun", "trace"]
    assert early_traces(steps) == {1, 3}
    opened = [LogMetrics("a", ()), OpenRun(run="b", kind="task", name=None, parent=None)]
    opened.append(LogTrace("b", "t3", "s", 0, 1))
    assert early_traces(plan(opened)) == set()


def test_table_json_unions_columns_in_first_seen_order():
    text = table_json([{"b": 1}, {"a": float("nan"), "b": 2}, {"c": {"x": 1}}])
    assert json.loads(text) == {
        "columns": ["b", "a", "c"],
        "data": [[1, None, None], [2, None, None], [None, None, {"x": 1}]],
    }


def test_ops_for_an_unknown_run_fail_and_others_land(sqlite_store):
    sink = sqlite_store.sink()
    with pytest.raises(SinkError) as caught:
        sink.send(
            [
                open_runs()[0],
                LogParams("task:nope", {"a": "1"}),
                LogParams("eval:r1", {"b": "2"}),
                CloseRun("task:nope", "FINISHED", T0),
            ]
        )
    error = caught.value
    assert not error.transient and error.kind == "unknown_run"
    assert [type(op).__name__ for op in error.failed] == ["LogParams", "CloseRun"]
    assert all(op.run == "task:nope" for op in error.failed)
    assert sqlite_store.client().get_run(sink.run_id("eval:r1")).data.params == {"b": "2"}


def test_a_child_whose_parent_is_unknown_is_created_and_reported(sqlite_store):
    sink = sqlite_store.sink()
    with pytest.raises(SinkError) as caught:
        sink.send([open_runs()[1]])
    assert caught.value.rejected == (
        Rejection("task:e1", "mlflow.parentRunId", "parent run 'eval:r1' was never created"),
    )
    assert caught.value.failed == ()
    assert sink.run_id("task:e1") is not None


def test_resume_adopts_the_run_with_the_same_key(sqlite_store):
    first = sqlite_store.sink()
    first.send(
        [
            open_runs()[0],
            AppendRows("eval:r1", "inspect/a.json", ({"x": 1},)),
            CloseRun("eval:r1", "FINISHED", T0 + 1),
        ]
    )
    replay = sqlite_store.sink(resume=True)
    replay.send(
        [
            open_runs()[0],
            LogParams("eval:r1", {"late": "yes"}),
            AppendRows("eval:r1", "inspect/b.json", ({"y": 2},)),
            CloseRun("eval:r1", "FINISHED", T0 + 2),
        ]
    )
    assert replay.calls["search_runs"] == 1 and replay.calls["create_run"] == 0
    assert replay.run_id("eval:r1") == first.run_id("eval:r1")
    runs = runs_by_key(sqlite_store, first.experiment_id)
    assert len(runs) == 1
    run = runs["eval:r1"]
    assert run.data.params == {"late": "yes"}
    assert json.loads(run.data.tags[LOGGED_ARTIFACTS_TAG]) == [
        {"path": "inspect/a.json", "type": "table"},
        {"path": "inspect/b.json", "type": "table"},
    ]


def test_the_live_path_does_not_search_for_runs(sqlite_store):
    sink = sqlite_store.sink()
    sink.send(open_runs())
    assert sink.calls["search_runs"] == 0


def test_the_sink_creates_its_experiment_at_the_artifact_location(sqlite_store, tmp_path):
    sink = sqlite_store.sink()
    sink.send([open_runs()[0], LogArtifact("eval:r1", "x/doc.json", {"a": 1})])
    experiment = sqlite_store.client().get_experiment(sink.experiment_id)
    assert experiment.name == sqlite_store.experiment_name
    assert Path(experiment.artifact_location.removeprefix("file://")) == tmp_path / "artifacts"
    assert list((tmp_path / "artifacts").rglob("doc.json"))


def test_an_experiment_created_concurrently_is_reused(sqlite_store):
    other = sqlite_store.client()

    class RacingSink(MlflowSink):
        def _call(self, name, *args, **kwargs):
            if name == "create_experiment":  # another process wins the race
                other.create_experiment(sqlite_store.experiment_name)
            return super()._call(name, *args, **kwargs)

    sink = RacingSink(sqlite_store.tracking_uri, sqlite_store.experiment_name)
    sink.send([open_runs()[0]])
    assert (
        sink.experiment_id
        == other.get_experiment_by_name(sqlite_store.experiment_name).experiment_id
    )
    assert sink.calls["get_experiment_by_name"] == 2


def test_an_unreachable_server_is_a_transient_error_with_everything_pending(monkeypatch):
    from mlflow_server import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    sink = MlflowSink(f"http://127.0.0.1:{free_port()}", "nowhere")
    ops = open_runs()
    with pytest.raises(SinkError) as caught:
        sink.send(ops)
    assert caught.value.transient is True
    assert caught.value.pending == tuple(ops)


# -- traces ---------------------------------------------------------------------------------


def test_traces_go_to_the_trace_sender_with_their_run_ids(sqlite_store, monkeypatch):
    made: list = []

    class FakeTraceSender:
        def __init__(self, tracking_uri, experiment_id, **options):
            self.args = (tracking_uri, experiment_id, options)
            self.items: list = []
            made.append(self)

        def send(self, items):
            self.items.extend(items)

    module = types.ModuleType("inspect_mlflow._writer.mlflow_sink.trace_send")
    module.TraceSender = FakeTraceSender
    monkeypatch.setitem(sys.modules, "inspect_mlflow._writer.mlflow_sink.trace_send", module)
    sink = sqlite_store.sink(trace_options={"max_spans_per_trace": 7, "max_attribute_chars": 500})
    trace = LogTrace("task:e1", "sample-1", "sample 1", 0, 1)
    sink.send([*open_runs(), trace, CloseRun("task:e1", "FINISHED", T0)])
    (sender,) = made
    assert sender.args == (
        sqlite_store.tracking_uri,
        sink.experiment_id,
        {"max_spans_per_trace": 7, "max_attribute_chars": 500},
    )
    assert sender.items == [(trace, sink.run_id("task:e1"))]


def test_traces_that_fail_transiently_are_the_only_ones_pending(sqlite_store, monkeypatch):
    class Flaky(Exception):
        def __init__(self, failed):
            super().__init__("503")
            self.failed, self.transient = failed, True

    class FakeTraceSender:
        def __init__(self, *args, **kwargs):
            pass

        def send(self, items):
            raise Flaky([items[1]])

    module = types.ModuleType("inspect_mlflow._writer.mlflow_sink.trace_send")
    module.TraceSender = FakeTraceSender
    monkeypatch.setitem(sys.modules, "inspect_mlflow._writer.mlflow_sink.trace_send", module)
    sink = sqlite_store.sink()
    t1, t2 = (LogTrace("eval:r1", f"s{i}", "s", 0, 1) for i in (1, 2))
    close = CloseRun("eval:r1", "FINISHED", T0)
    with pytest.raises(SinkError) as caught:
        sink.send([open_runs()[0], t1, t2, close])
    assert caught.value.transient is True
    assert caught.value.pending == (t2, close)


@pytest.mark.server
def test_closing_a_run_on_a_server_is_one_request_and_prints_its_link(
    server_store, capsys, monkeypatch
):
    sink = server_store.sink()
    sink.send([OpenRun(run="eval:l", kind="eval", name="linked", parent=None, tags={})])
    capsys.readouterr()
    before = server_store.server.log_size()
    sink.send([CloseRun("eval:l", "FAILED", T0 + 5)])
    requests_made = server_store.server.requests_since(before)
    assert requests_made == {("POST", "/api/2.0/mlflow/runs/update"): 1}  # no runs/get
    run_id = sink.run_id("eval:l")
    run = server_store.client().get_run(run_id)
    assert (run.info.status, run.info.end_time) == ("FAILED", T0 + 5)
    experiment = f"{server_store.tracking_uri}/#/experiments/{sink.experiment_id}"
    assert capsys.readouterr().out == (
        f"🏃 View run linked at: {experiment}/runs/{run_id}\n🧪 View experiment at: {experiment}\n"
    )
    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    sink.send([OpenRun(run="eval:q", kind="eval", name="quiet", parent=None, tags={})])
    sink.send([CloseRun("eval:q", "FINISHED", T0 + 6)])
    assert capsys.readouterr().out == ""


@pytest.mark.server
def test_the_closing_link_names_a_renamed_run_by_its_new_name(server_store, capsys):
    """The eval run is renamed at task start (``mlflow.runName``): its link must agree."""
    sink = server_store.sink()
    sink.send([OpenRun(run="eval:n", kind="eval", name="inspect-abc", parent=None, tags={})])
    sink.send([SetTags("eval:n", {"mlflow.runName": "math · mockllm/model · 12-04 02:40"})])
    capsys.readouterr()
    sink.send([CloseRun("eval:n", "FINISHED", T0 + 5)])
    run_id = sink.run_id("eval:n")
    assert server_store.client().get_run(run_id).info.run_name == (
        "math · mockllm/model · 12-04 02:40"
    )
    assert "View run math · mockllm/model · 12-04 02:40 at:" in capsys.readouterr().out


def _fake_trace_module(monkeypatch, send) -> None:
    """Replace the trace sender with one whose ``send`` is ``send(items)``."""

    class FakeTraceSender:
        def __init__(self, *args, **kwargs):
            pass

        def send(self, items):
            return send(items)

    module = types.ModuleType("inspect_mlflow._writer.mlflow_sink.trace_send")
    module.TraceSender = FakeTraceSender
    monkeypatch.setitem(sys.modules, "inspect_mlflow._writer.mlflow_sink.trace_send", module)


class _Failed(Exception):
    """What the trace sender raises: the items that did not land, and whether to retry."""

    def __init__(self, failed, transient):
        super().__init__("503" if transient else "refused")
        self.failed, self.transient = failed, transient


@pytest.mark.server
def test_over_http_a_runs_close_does_not_wait_for_the_traces_before_it(server_store, monkeypatch):
    closed = threading.Event()
    seen: list = []

    def send(items):
        # Blocks until the run's close (the step after the traces) has run: sent one
        # after the other, this would wait the full 10 s and record False.
        seen.append((closed.wait(10), list(items)))

    _fake_trace_module(monkeypatch, send)
    sink = server_store.sink()
    original = sink._close_run

    def close_run(*args):
        original(*args)
        closed.set()

    monkeypatch.setattr(sink, "_close_run", close_run)
    trace = LogTrace("eval:r1", "s1", "s", 0, 1)
    sink.send([open_runs()[0], trace, CloseRun("eval:r1", "FINISHED", T0)])
    assert seen == [(True, [(trace, sink.run_id("eval:r1"))])]
    run = server_store.client().get_run(sink.run_id("eval:r1"))
    assert run.info.status == "FINISHED"


@pytest.mark.server
def test_over_http_a_trace_that_fails_transiently_is_pending_and_the_close_lands(
    server_store, monkeypatch
):
    _fake_trace_module(monkeypatch, lambda items: _raise(_Failed([items[1]], True)))
    sink = server_store.sink()
    t1, t2 = (LogTrace("eval:r1", f"s{i}", "s", 0, 1) for i in (1, 2))
    with pytest.raises(SinkError) as caught:
        sink.send([open_runs()[0], t1, t2, CloseRun("eval:r1", "FINISHED", T0)])
    assert caught.value.transient is True
    assert caught.value.pending == (t2,)
    assert caught.value.failed == ()
    run = server_store.client().get_run(sink.run_id("eval:r1"))
    assert run.info.status == "FINISHED"


@pytest.mark.server
def test_over_http_a_refused_trace_fails_alone(server_store, monkeypatch):
    _fake_trace_module(monkeypatch, lambda items: _raise(_Failed([items[0]], False)))
    sink = server_store.sink()
    t1, t2 = (LogTrace("eval:r1", f"s{i}", "s", 0, 1) for i in (1, 2))
    metrics = LogMetrics("eval:r1", metric_points("m", 2))
    with pytest.raises(SinkError) as caught:
        sink.send([open_runs()[0], t1, t2, metrics])
    assert caught.value.transient is False
    assert caught.value.failed == (t1,)
    assert caught.value.pending == ()
    history = server_store.client().get_metric_history(sink.run_id("eval:r1"), "m")
    assert [m.step for m in history] == [0, 1]


@pytest.mark.server
def test_over_http_a_close_that_fails_transiently_leaves_the_landed_traces_out(
    server_store, monkeypatch
):
    sent: list = []
    _fake_trace_module(monkeypatch, sent.extend)
    sink = server_store.sink()

    def terminate(*args):
        raise requests.exceptions.ConnectionError("connection reset")

    monkeypatch.setattr(sink, "_terminate", terminate)
    trace = LogTrace("eval:r1", "s1", "s", 0, 1)
    close = CloseRun("eval:r1", "FINISHED", T0)
    with pytest.raises(SinkError) as caught:
        sink.send([open_runs()[0], trace, close])
    assert caught.value.transient is True
    assert caught.value.pending == (close,)  # the trace landed: it is not sent again
    assert [op for op, _ in sent] == [trace]


def _raise(error: BaseException) -> None:
    raise error


def test_without_the_traces_module_traces_are_skipped_with_one_warning(
    sqlite_store, monkeypatch, caplog
):
    monkeypatch.setitem(sys.modules, "inspect_mlflow._writer.mlflow_sink.trace_send", None)
    sink = sqlite_store.sink()
    with caplog.at_level(logging.WARNING, logger="inspect_mlflow._writer.mlflow_sink"):
        sink.send([open_runs()[0], LogTrace("eval:r1", "s1", "s", 0, 1)])
        sink.send([LogTrace("eval:r1", "s2", "s", 0, 1), CloseRun("eval:r1", "FINISHED", T0)])
    assert sink.calls["traces_skipped"] == 2
    assert len([r for r in caplog.records if "trace" in r.getMessage()]) == 1
    assert runs_by_key(sqlite_store, sink.experiment_id)["eval:r1"].info.status == "FINISHED"


def test_the_writer_hands_ops_for_an_unreachable_server_to_on_failure(monkeypatch):
    from mlflow_server import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    failures: list = []
    sink = MlflowSink(f"http://127.0.0.1:{free_port()}", "nowhere")
    writer = BackgroundWriter(
        sink,
        schedule_delay=0.01,
        retry_timeout=0.5,
        backoff=0.05,
        max_backoff=0.1,
        on_failure=lambda ops, error: failures.append((ops, error)),
    )
    ops = open_runs()
    writer.emit(ops)
    assert writer.flush(30)
    assert writer.shutdown(5)
    assert [op for failed, _ in failures for op in failed] == ops
    assert isinstance(failures[0][1], SinkError) and failures[0][1].transient
    assert writer.stats["retries"] >= 1


def test_a_trace_with_feedback_lands_on_its_run_through_the_real_trace_sender(sqlite_store):
    from mlflow.tracing.client import TracingClient

    from inspect_mlflow._operations import FeedbackData, SpanData

    t = 1_700_000_000_000_000_000
    trace = LogTrace(
        run="task:e1",
        trace_key="sample-uuid-1",
        name="sample 1",
        start_time_ns=t,
        end_time_ns=t + 2_000_000,
        inputs={"question": "2+3?"},
        outputs={"answer": "5"},
        spans=(SpanData("ev1", None, "generate", "LLM", t + 10, t + 1_000_000),),
        feedback=(FeedbackData(name="match", value=1.0, rationale="exact"),),
    )
    sink = sqlite_store.sink(trace_options={"max_spans_per_trace": 10, "max_attribute_chars": 1000})
    sink.send([*open_runs(), trace, CloseRun("task:e1", "FINISHED", T0 + 3)])
    found = TracingClient(sqlite_store.tracking_uri).search_traces(
        locations=[sink.experiment_id], run_id=sink.run_id("task:e1")
    )
    assert len(found) == 1
    assert [(a.name, a.value) for a in found[0].info.assessments] == [("match", 1.0)]


# -- a run's documents and tables go up side by side when it closes ----------------------


class _SlowUploads:
    """Wraps a sink's single-file upload: each takes 200 ms more; records how many overlap."""

    def __init__(self, upload: Any) -> None:
        self.upload = upload
        self.lock = threading.Lock()
        self.active = self.most = 0
        self.spans: dict[str, tuple[float, float]] = {}

    def __call__(self, run_id: str, text: str, path: str) -> Any:
        began = time.monotonic()
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            time.sleep(0.2)
            return self.upload(run_id, text, path)
        finally:
            with self.lock:
                self.active -= 1
            self.spans[path] = (began, time.monotonic())


@pytest.mark.server
def test_a_runs_documents_and_tables_upload_side_by_side_at_close(
    server_store: Any, tmp_path: Any
) -> None:
    sink = server_store.sink()
    slow = _SlowUploads(sink._tables.log_text)
    sink._tables.log_text = slow  # type: ignore[method-assign]
    paths = [f"inspect/t{i}.json" for i in range(4)]
    sink.send([OpenRun(run="eval:u", kind="eval", name="u", parent=None, tags={})])
    before = server_store.server.log_size()
    sink.send(
        [
            LogArtifact("eval:u", "eval_logs/u.json", {"status": "success"}),
            *[AppendRows("eval:u", path, ({"i": i},)) for i, path in enumerate(paths)],
            CloseRun("eval:u", "FINISHED", 1),
        ]
    )
    # The document rides with the tables (5 files at once), and nothing asks the server
    # where the run's artifacts go: the sink knows it from creating the run.
    assert slow.most > 1 and sink.calls["log_text"] == 5
    doc_began, doc_ended = slow.spans.pop("eval_logs/u.json")
    assert any(began < doc_ended and doc_began < ended for began, ended in slow.spans.values())
    requests_made = server_store.server.requests_since(before)
    assert requests_made[("GET", "/api/2.0/mlflow/runs/get")] == 0
    run_id = sink.run_id("eval:u")
    client = server_store.client()
    for i, path in enumerate(paths):
        local = client.download_artifacts(run_id, path, str(tmp_path))
        assert json.loads(open(local).read()) == {"columns": ["i"], "data": [[i]]}
    local = client.download_artifacts(run_id, "eval_logs/u.json", str(tmp_path))
    assert json.loads(open(local).read()) == {"status": "success"}
    tagged = json.loads(client.get_run(run_id).data.tags[LOGGED_ARTIFACTS_TAG])
    assert tagged == [{"path": path, "type": "table"} for path in paths]
    logged = json.loads(client.get_run(run_id).data.tags["mlflow.loggedArtifacts"])
    assert sorted(e["path"] for e in logged) == paths
    assert client.get_run(run_id).info.status == "FINISHED"
