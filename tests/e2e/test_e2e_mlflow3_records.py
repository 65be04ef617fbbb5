"""Evaluations as MLflow 3 records them: a LoggedModel per evaluated model, dataset inputs.

Two models on one task, evaluated twice into one experiment (a sqlite file and a real
server), then imported from the first eval's logs into another experiment. MLflow must
then hold one LoggedModel per model (never two), carrying the task's summary metrics with
the dataset they were measured on; each task run must name its model and its dataset as
inputs; every trace must carry its model's id. A dry run shows the new writes too.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
from e2e_support import new_experiment_name, run_logged
from inspect_ai import Task
from inspect_ai.dataset import Sample
from inspect_ai.log import read_eval_log
from inspect_ai.model import Model, ModelOutput, ModelUsage, get_model
from inspect_ai.scorer import match, model_graded_qa
from inspect_ai.solver import generate
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus

from inspect_mlflow._commands.cli import main
from inspect_mlflow._engine.engine import Engine
from inspect_mlflow._mapping import load_mapping
from inspect_mlflow._operations import (
    DatasetData,
    LogInputs,
    LogMetrics,
    LogTrace,
    Metric,
    ModelData,
)
from inspect_mlflow._writer.logged_models import MODEL_KEY_TAG, LoggedModels, model_key_digest
from inspect_mlflow._writer.spool import decode_op, encode_op

TASK = "qa_records"
MODELS = ["mockllm/r1", "mockllm/r2"]
GRADER = "mockllm/grader"
NAMES = {"mockllm/r1": "mockllm_r1", "mockllm/r2": "mockllm_r2"}
SAMPLES = 3


def _model(name: str, right: bool) -> Model:
    def outputs(input: list[Any], tools: Any, tool_choice: Any, config: Any) -> ModelOutput:
        question = next((m.text for m in input if m.role == "user"), "")
        out = ModelOutput.from_content(model=name, content=question.split()[-1] if right else "no")
        out.usage = ModelUsage(input_tokens=10, output_tokens=5, total_tokens=15)
        return out

    return get_model(name, custom_outputs=outputs)


def _grader() -> Model:
    def outputs(input: list[Any], tools: Any, tool_choice: Any, config: Any) -> ModelOutput:
        out = ModelOutput.from_content(model=GRADER, content="GRADE: C")
        out.usage = ModelUsage(input_tokens=20, output_tokens=3, total_tokens=23)
        return out

    return get_model(GRADER, custom_outputs=outputs)


def _task() -> Task:
    # A model-graded scorer: its grader calls a model too, but is not an evaluated model.
    return Task(
        name=TASK,
        dataset=[Sample(id=i, input=f"say {i}", target=str(i)) for i in range(SAMPLES)],
        solver=[generate()],
        scorer=[match(), model_graded_qa(model=_grader())],
    )


@contextlib.contextmanager
def _in_dir(path: Path) -> Any:
    import os

    cwd = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("server", marks=pytest.mark.server)])
def records(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    _sqlite_template: Path,
) -> dict[str, Any]:
    root = tmp_path_factory.mktemp(f"records-{request.param}")
    if request.param == "sqlite":
        shutil.copyfile(_sqlite_template, root / "mlflow.db")
        uri = f"sqlite:///{root}/mlflow.db"
    else:
        uri = request.getfixturevalue("mlflow_server").url
    live, imported = new_experiment_name("records"), new_experiment_name("records-import")
    evals = []
    with _in_dir(root):
        for attempt in range(2):  # the second eval must find the models the first created
            logs = run_logged(
                _task(),
                uri,
                live,
                log_dir=str(root / f"logs{attempt}"),
                model=[_model(MODELS[0], True), _model(MODELS[1], False)],
            )
            assert sorted(log.eval.model for log in logs) == MODELS
            assert all(log.status == "success" for log in logs)
            evals.append(logs)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(
                ["import", str(root / "logs0"), "--tracking-uri", uri, "--experiment", imported]
            )
    assert code == 0, out.getvalue() + err.getvalue()
    return {"uri": uri, "live": live, "imported": imported, "evals": evals, "root": root}


def _experiment_id(client: MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None, name
    return str(experiment.experiment_id)


def _models(client: MlflowClient, experiment_id: str) -> dict[str, Any]:
    found = client.search_logged_models([experiment_id])
    names = [m.name for m in found]
    assert sorted(names) == sorted(NAMES.values()), names  # one per model, never two
    return {m.tags["inspect.model"]: m for m in found}


def _task_runs(client: MlflowClient, experiment_id: str) -> list[Any]:
    runs = client.search_runs([experiment_id], max_results=100)
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def _check_experiment(uri: str, name: str, evals: int) -> None:
    """What one experiment must hold after ``evals`` evals of the two models."""
    client = MlflowClient(tracking_uri=uri)
    experiment_id = _experiment_id(client, name)
    models = _models(client, experiment_id)
    for identity, model in models.items():
        assert model.name == NAMES[identity]
        assert model.status == LoggedModelStatus.READY
        assert model.tags[MODEL_KEY_TAG] == model_key_digest(identity)
        assert model.tags["mlflow.model.isExternal"] == "true"
    runs = _task_runs(client, experiment_id)
    assert len(runs) == 2 * evals
    for run in runs:
        identity = run.data.tags["inspect.model"]
        model = models[identity]
        inputs = client.get_run(run.info.run_id).inputs
        assert [m.model_id for m in inputs.model_inputs] == [model.model_id]
        [dataset_input] = inputs.dataset_inputs
        dataset = dataset_input.dataset
        assert dataset.name == TASK  # an in-memory dataset is named after its task
        assert dataset.source_type == "inspect"
        assert json.loads(dataset.profile)["num_rows"] == SAMPLES
        assert {t.key: t.value for t in dataset_input.tags} == {"mlflow.data.context": "eval"}
        # The model's page shows the run's summary metrics, measured on that dataset.
        points = [m for m in model.metrics if m.run_id == run.info.run_id]
        by_key = {m.key: m for m in points}
        for key in ("match/accuracy", "total_samples", "completed_samples"):
            assert key in by_key, (identity, key, sorted(by_key))
            assert math.isclose(by_key[key].value, run.data.metrics[key]), key
        assert all(m.dataset_name == TASK for m in points)
        assert all(m.dataset_digest == dataset.digest for m in points)
        # Every trace of the run is linked to the model.
        from mlflow.tracing.client import TracingClient

        traces = TracingClient(uri).search_traces(
            locations=[experiment_id], run_id=run.info.run_id, max_results=100
        )
        assert len(traces) == SAMPLES
        for trace in traces:
            assert trace.info.trace_metadata.get("mlflow.modelId") == model.model_id
    # The same data gives the same digest in every eval and for both models.
    digests = {client.get_run(r.info.run_id).inputs.dataset_inputs[0].dataset.digest for r in runs}
    assert len(digests) == 1, digests
    # A model's accuracy differs between the models: its points are its own.
    accuracy = {
        identity: {m.value for m in model.metrics if m.key == "match/accuracy"}
        for identity, model in models.items()
    }
    assert accuracy == {MODELS[0]: {1.0}, MODELS[1]: {0.0}}, accuracy
    assert all(
        len([m for m in model.metrics if m.key == "match/accuracy"]) == evals
        for model in models.values()
    )


def test_live_evals_record_models_datasets_and_links(records: dict[str, Any]) -> None:
    _check_experiment(records["uri"], records["live"], evals=2)


def test_importing_a_log_records_them_the_same(records: dict[str, Any]) -> None:
    _check_experiment(records["uri"], records["imported"], evals=1)


def test_traces_are_found_by_model_id(records: dict[str, Any]) -> None:
    from mlflow.tracing.client import TracingClient

    client = MlflowClient(tracking_uri=records["uri"])
    experiment_id = _experiment_id(client, records["live"])
    for model in _models(client, experiment_id).values():
        traces = TracingClient(records["uri"]).search_traces(
            locations=[experiment_id], model_id=model.model_id, max_results=100
        )
        assert len(traces) == 2 * SAMPLES  # two evals of three samples


def test_the_dry_run_shows_the_model_and_dataset_inputs(records: dict[str, Any]) -> None:
    [log] = [log for log in records["evals"][0] if log.eval.model == MODELS[0]]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        main(["check", "--log", log.location])
    text = out.getvalue()
    assert "model input: LoggedModel 'mockllm_r1' (model mockllm/r1)" in text, text
    assert f"dataset input: '{TASK}' digest " in text and "context eval" in text, text
    assert "metrics for model mockllm/r1, dataset qa_records (" in text, text
    assert "for model mockllm/r1 (trace metadata mlflow.modelId): 3" in text, text


# -- the race: two evals that create the same model at once ----------------------------------


def _create_at_once(
    models: LoggedModels, identity: str, start: threading.Barrier, chosen: list[str]
) -> None:
    start.wait()
    # Straight to creation, as after a search that found nothing in both.
    chosen.append(models._create(identity, None))


@pytest.mark.parametrize(
    "store", ["sqlite_store", pytest.param("server_store", marks=pytest.mark.server)]
)
def test_two_creators_at_once_end_with_one_model(
    store: str, request: pytest.FixtureRequest
) -> None:
    """Both miss the model and create one; both must end up using the same, and one stays."""
    mlflow_store = request.getfixturevalue(store)
    experiment_id = mlflow_store.create_experiment()
    client = mlflow_store.client()

    def call(name: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(client, name)(*args, **kwargs)

    for round_ in range(6):
        identity = f"openai/gpt-4.{round_}"
        creators = [LoggedModels(call, lambda: experiment_id) for _ in range(2)]
        start = threading.Barrier(2)
        chosen: list[str] = []

        threads = [
            threading.Thread(target=_create_at_once, args=(m, identity, start, chosen))
            for m in creators
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        active = client.search_logged_models(
            [experiment_id],
            filter_string=f"tags.`{MODEL_KEY_TAG}` = '{model_key_digest(identity)}'",
        )
        assert len(active) == 1, [m.model_id for m in active]
        assert chosen == [active[0].model_id] * 2
        assert active[0].name == f"openai_gpt-4_{round_}"
        # A later eval finds it instead of creating another.
        assert LoggedModels(call, lambda: experiment_id).resolve(identity) == chosen[0]


# -- plain data: the engine and the spool ---------------------------------------------------


def test_the_default_mapping_emits_inputs_and_links() -> None:
    engine = Engine(load_mapping(None), clock=lambda: 1_700_000_000.0)
    spec = {
        "task": "qa",
        "task_id": "t1",
        "model": "openai/gpt-4o",
        "dataset": {"name": "qa", "location": "qa.jsonl", "samples": 2, "sample_ids": [2, 1]},
    }
    start = {"run_id": "r1", "eval_id": "e1", "task_id": "t1", "spec": spec, "plan": {}}
    engine.handle("run_start", {"run_id": "r1", "task_names": ["qa"]})
    ops = engine.handle("task_start", start)
    [inputs] = [op for op in ops if isinstance(op, LogInputs)]
    [model] = inputs.models
    assert (model.key, model.name, model.tags) == (
        "openai/gpt-4o",
        "openai_gpt-4o",
        {"inspect.model": "openai/gpt-4o"},
    )
    [dataset] = inputs.datasets
    assert (dataset.name, dataset.context) == ("qa", "eval")
    assert json.loads(dataset.source) == {"uri": "qa.jsonl"}
    assert json.loads(dataset.profile or "{}")["num_rows"] == 2
    # The order of the sample ids does not change the digest; other samples do.
    other = Engine(load_mapping(None))
    other.handle("run_start", {"run_id": "r1", "task_names": ["qa"]})
    shuffled = {**start, "spec": {**spec, "dataset": {**spec["dataset"], "sample_ids": [1, 2]}}}
    fewer = {**start, "spec": {**spec, "dataset": {**spec["dataset"], "sample_ids": [1]}}}
    digests = []
    for ctx in (shuffled, fewer):
        fresh = Engine(load_mapping(None))
        fresh.handle("run_start", {"run_id": "r1", "task_names": ["qa"]})
        [op] = [o for o in fresh.handle("task_start", ctx) if isinstance(o, LogInputs)]
        digests.append(op.datasets[0].digest)
    assert digests[0] == dataset.digest != digests[1]

    end = {
        "run_id": "r1",
        "eval_id": "e1",
        "task_id": "t1",
        "log": {
            "status": "success",
            "eval": {"task": "qa", "model": "openai/gpt-4o"},
            "results": {
                "total_samples": 2,
                "completed_samples": 2,
                "scores": [{"name": "match", "metrics": {"accuracy": {"value": 0.5}}}],
            },
            "stats": {},
        },
    }
    ops = engine.handle("task_end", end)
    points = [m for op in ops if isinstance(op, LogMetrics) for m in op.metrics]
    accuracy = next(m for m in points if m.key == "match/accuracy")
    assert (accuracy.model, accuracy.dataset_name, accuracy.dataset_digest) == (
        "openai/gpt-4o",
        "qa",
        dataset.digest,
    )
    assert engine.problems.count("rejected_value") == 0, engine.problem_summary()


def test_a_trace_names_the_runs_model() -> None:
    engine = Engine(load_mapping(None))
    spec = {"task": "qa", "model": "mockllm/m", "dataset": {"name": "qa", "sample_ids": [1]}}
    engine.handle("run_start", {"run_id": "r1", "task_names": ["qa"]})
    engine.handle("task_start", {"run_id": "r1", "eval_id": "e1", "spec": spec, "plan": {}})
    sample = {
        "id": 1,
        "epoch": 1,
        "uuid": "u1",
        "started_at": "2024-01-01T00:00:00Z",
        "completed_at": "2024-01-01T00:00:01Z",
        "scores": {},
        "events": [],
        "messages": [],
    }
    ops = engine.handle("sample_end", {"run_id": "r1", "eval_id": "e1", "sample": sample})
    [trace] = [op for op in ops if isinstance(op, LogTrace)]
    assert trace.model == "mockllm/m"


def test_the_spool_keeps_inputs_and_metric_links() -> None:
    inputs = LogInputs(
        "task:e1",
        (ModelData("openai/gpt-4o", "openai_gpt-4o", {"inspect.model": "openai/gpt-4o"}),),
        (DatasetData("qa", "abc", source='{"uri": "qa.jsonl"}', profile="{}", context="eval"),),
    )
    metrics = LogMetrics("task:e1", (Metric("m", 1.0, 0, 5, "openai/gpt-4o", "qa", "abc"),))
    for op in (inputs, metrics):
        assert decode_op(json.loads(json.dumps(encode_op(op)))) == op
    # A spool written before these fields existed still reads.
    old = {"key": "m", "value": 1.0, "step": 0, "timestamp_ms": 5}
    assert decode_op({"op": "LogMetrics", "run": "r", "metrics": [old]}) == LogMetrics(
        "r", (Metric("m", 1.0, 0, 5),)
    )


def test_a_link_to_a_dataset_the_run_never_logged_is_reported(tmp_path: Path) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        """
version: 1
runs:
  task: {open: task_start, close: task_end, key: eval_id, status: "'FINISHED'"}
rules:
  task_end:
    - run: task
      link: {model: "'m/x'", dataset: "'nope'"}
      metrics: {score: "`1`"}
"""
    )
    engine = Engine(load_mapping(str(mapping)))
    engine.handle("task_start", {"eval_id": "e1"})
    ops = engine.handle("task_end", {"eval_id": "e1"})
    [point] = [m for op in ops if isinstance(op, LogMetrics) for m in op.metrics]
    assert (point.model, point.dataset_name, point.dataset_digest) == ("m/x", None, None)
    assert engine.problems.count("rejected_value") == 1
    assert "is not an input of task:e1" in engine.problem_summary()[0]


def test_the_grader_is_not_an_evaluated_model(records: dict[str, Any]) -> None:
    """The evaluated model is spec.model: the grader's calls never make a LoggedModel."""
    client = MlflowClient(tracking_uri=records["uri"])
    models = _models(client, _experiment_id(client, records["live"]))  # r1 and r2 only
    for logs in records["evals"]:
        for log in logs:
            header = read_eval_log(log.location, header_only=True)
            assert GRADER in (header.stats.model_usage or {})  # the grader did run
            assert header.eval.model in models and GRADER not in models


# -- the sink: one lookup or creation per model per writer -----------------------------------


def test_the_sink_creates_a_model_once_and_a_later_sink_finds_it(sqlite_store: Any) -> None:
    from inspect_mlflow._operations import CloseRun, OpenRun

    model = ModelData("openai/gpt-4o", "openai_gpt-4o", {"inspect.model": "openai/gpt-4o"})
    dataset = DatasetData("qa", "d1", source='{"uri": "qa.jsonl"}', context="eval")

    def batch(eval_id: str) -> list[Any]:
        run = f"task:{eval_id}"
        return [
            OpenRun(run, "task", eval_id, None),
            # A run's metrics may be delivered before its inputs (its data ops are merged
            # into its first data step): the model still gets the inputs' tags.
            LogMetrics(run, (Metric("acc", 0.5, 0, 1_700_000_000_000, model.key, "qa", "d1"),)),
            LogInputs(run, (model,), (dataset,)),
            CloseRun(run, "FINISHED", 1_700_000_001_000),
        ]

    first = sqlite_store.sink()
    first.send(batch("a") + batch("b"))
    assert first.calls["create_logged_model"] == 1
    assert first.calls["log_inputs"] == 2
    second = sqlite_store.sink()
    second.send(batch("c"))
    assert second.calls["create_logged_model"] == 0  # found by its tag
    assert second.calls["search_logged_models"] == 1
    client = sqlite_store.client()
    experiment_id = _experiment_id(client, sqlite_store.experiment_name)
    [logged] = client.search_logged_models([experiment_id])
    assert logged.tags["inspect.model"] == "openai/gpt-4o"
    assert sorted(m.run_id for m in logged.metrics) == sorted(
        first.run_id(k) or second.run_id(k) for k in ("task:a", "task:b", "task:c")
    )
    for key, sink in (("task:a", first), ("task:c", second)):
        inputs = client.get_run(sink.run_id(key)).inputs
        assert [m.model_id for m in inputs.model_inputs] == [logged.model_id]
        assert [d.dataset.digest for d in inputs.dataset_inputs] == ["d1"]
    first.close()
    second.close()
