"""End-to-end shapes of issue 14: what Inspect's less common result shapes look like in MLflow.

Each scenario runs one real offline eval (mock model) with the hook on, against a real
store, and compares what landed with Inspect's own log (``read_eval_log``, the truth):

- several epoch reducers (``Epochs(3, ["mean", "max", "pass_at_2"])``): one summary metric
  per reducer, the primary one under the plain key, and no key written twice at a step;
  a mapping that still writes them under one key is reported by the live hook;
- one task run with two models: one task run per model, named apart, their artifacts apart;
- a sample cut off by ``message_limit``: its trace says so (tag ``inspect.limit``);
- a scorer returning a dict: one step metric per numeric member;
- a non-ASCII task name: artifact paths keep it, on a sqlite file and on a real server.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from e2e_support import download_json
from inspect_ai import Epochs, Task
from inspect_ai.dataset import Sample
from inspect_ai.log import EvalLog, read_eval_log
from inspect_ai.model import Model, ModelOutput, ModelUsage, get_model
from inspect_ai.scorer import Score, Target, match, mean, scorer
from inspect_ai.solver import TaskState, generate, use_tools
from scenario_support import Scenario, run_scenario

from inspect_mlflow._commands.demo import add_tool

pytestmark = pytest.mark.e2e

STORES = ["sqlite", pytest.param("server", marks=pytest.mark.server)]
TASK = "数学"
REDUCERS = ["mean", "max", "pass_at_2"]
EPOCHS = 3
MESSAGE_LIMIT = 5
TWICE = "written twice at step"


def _store(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Where a parametrised scenario logs: a fresh sqlite file, or the session's server."""
    if request.param != "server":
        return {}
    server = request.getfixturevalue("mlflow_server")
    return {"uri": server.url, "store_root": server.root}


def _output(model: str, content: str | None = None, **tool_call: Any) -> ModelOutput:
    if tool_call:
        out = ModelOutput.for_tool_call(model=model, **tool_call)
    else:
        out = ModelOutput.from_content(model=model, content=content or "")
    out.usage = ModelUsage(input_tokens=12, output_tokens=6, total_tokens=18)
    return out


def _shapes_model(name: str = "mockllm/model") -> Model:
    """Answers from the question: ``loop`` calls a tool forever (until the message limit),
    ``flip`` is right only the first time it is asked (so epochs disagree), the rest right.
    """
    asked: dict[str, int] = {}

    def outputs(input: list[Any], tools: Any, tool_choice: Any, config: Any) -> ModelOutput:
        question = next((m.text for m in input if m.role == "user"), "")
        if question.startswith("loop"):
            return _output(name, tool_name="add", tool_arguments={"x": 1, "y": 2})
        asked[question] = asked.get(question, 0) + 1
        if question.startswith("flip") and asked[question] > 1:
            return _output(name, "wrong")
        return _output(name, question.split()[-1])

    return get_model(name, custom_outputs=outputs)


@scorer(metrics={"*": [mean()]})
def parts() -> Any:
    """A dict score: two numbers that differ per sample and a text member (not a metric)."""

    async def score(state: TaskState, target: Target) -> Score:
        return Score(
            value={
                "id_len": len(str(state.sample_id)),
                "epoch_half": state.epoch * 0.5,
                "label": "x",
            }
        )

    return score


def _shapes_task(name: str = TASK, epochs: Any = None) -> Task:
    dataset = [
        Sample(id="样本1", input="flip answer 7", target="7"),
        Sample(id="s2", input="plain answer 8", target="8"),
        Sample(id="s33", input="loop answer 9", target="9"),
        Sample(id="s444", input="flip answer 10", target="10"),
    ]
    return Task(
        name=name,
        dataset=dataset,
        solver=[use_tools(add_tool()), generate()],
        scorer=[match(), parts()],
        epochs=epochs or Epochs(EPOCHS, REDUCERS),
        message_limit=MESSAGE_LIMIT,
    )


@pytest.fixture(scope="module", params=STORES)
def shapes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    root = tmp_path_factory.mktemp(f"shapes-{request.param}")
    scenario = run_scenario(root, _shapes_task(), model=_shapes_model(), **_store(request))
    assert [log.status for log in scenario.logs] == ["success"]
    return scenario


def _full_log(scenario: Scenario, index: int = 0) -> EvalLog:
    return read_eval_log(scenario.logs[index].location)


def _task_run(scenario: Scenario) -> Any:
    [run] = [r for r in scenario.runs() if "mlflow.parentRunId" in r.data.tags]
    return run


def _expected_scores(log: EvalLog) -> dict[str, float]:
    """The summary metrics the log says, under the documented keys (from the log's config)."""
    assert log.results is not None
    primary = (log.eval.config.epochs_reducer or ["mean"])[0]
    expected: dict[str, float] = {}
    for score in log.results.scores:
        for metric in score.metrics.values():
            if score.reducer in (None, primary):
                key = f"{score.name}/{metric.name}"
            else:
                key = f"{score.name}/{score.reducer}/{metric.name}"
            assert key not in expected, f"two results under {key}"
            expected[key] = metric.value
    return expected


# -- 1. several epoch reducers ----------------------------------------------------------


def test_each_reducer_has_its_own_summary_metric_equal_to_the_log(shapes: Scenario) -> None:
    log, run = _full_log(shapes), _task_run(shapes)
    assert log.results is not None
    reducers = {s.reducer for s in log.results.scores}
    assert reducers == set(REDUCERS)
    expected = _expected_scores(log)
    # The eval must make the reducers disagree, or the test could not tell them apart.
    assert expected["match/accuracy"] != expected["match/max/accuracy"]
    assert {"match/accuracy", "match/max/accuracy", "match/pass_at_2/accuracy"} <= set(expected)
    for key, value in expected.items():
        assert key in run.data.metrics, f"{key} missing; have {sorted(run.data.metrics)}"
        assert math.isclose(run.data.metrics[key], value, abs_tol=1e-9), key
        history = shapes.history(run, key)
        assert [(p.step, p.value) for p in history] == [(0, pytest.approx(value))], key


def test_no_metric_step_is_written_twice(shapes: Scenario) -> None:
    assert not [w for w in shapes.warnings if TWICE in w], shapes.warnings


def test_a_mapping_writing_reducers_under_one_key_is_reported_live(tmp_path: Path) -> None:
    """The old key ``{score.name}/{metric.key}``: both reducers at step 0 of one key."""
    mapping = tmp_path / "one-key.yaml"
    mapping.write_text(
        "version: 1\n"
        "extends: default\n"
        "rules:\n"
        "  task_end:\n"
        "    - id: task-scores\n"
        "      run: task\n"
        "      for_each:\n"
        "        score: log.results.scores\n"
        "        metric: items(score.metrics)\n"
        "      metrics:\n"
        '        "{score.name}/{metric.key}": metric.value.value\n'
    )
    scenario = run_scenario(
        tmp_path,
        _shapes_task("one_key", Epochs(2, ["mean", "max"])),
        model=_shapes_model(),
        extra_env={"INSPECT_MLFLOW_MAPPING": str(mapping)},
    )
    assert [log.status for log in scenario.logs] == ["success"]
    first = [w for w in scenario.warnings if TWICE in w and "further ones are counted" in w]
    assert first, scenario.warnings
    assert "'match/accuracy' written twice at step 0" in first[0]
    summary = [w for w in scenario.warnings if "metric steps written twice with different" in w]
    assert len(summary) == 1, scenario.warnings


# -- 9a. a sample cut off by a limit ------------------------------------------------------


def test_a_limited_sample_has_a_limit_tag_on_its_trace(shapes: Scenario) -> None:
    log, run = _full_log(shapes), _task_run(shapes)
    limits = {(str(s.id), s.epoch): (s.limit.type if s.limit else None) for s in log.samples or []}
    assert sorted(k for k, v in limits.items() if v) == [("s33", e) for e in (1, 2, 3)]
    traces = shapes.traces(run)
    assert len(traces) == len(limits)
    for trace in traces:
        tags = trace.info.tags
        limit = limits[(tags["inspect.sample_id"], int(tags["inspect.epoch"]))]
        assert tags.get("inspect.limit") == limit
        assert trace.info.state.value == "OK"  # scored: the limit is not a failure
    rows = shapes.table(run, "inspect/samples.json")
    assert {(str(r["sample_id"]), r["epoch"]): r["limit"] for r in rows} == limits


# -- 9b. dict-valued scores -----------------------------------------------------------------


def test_dict_scores_give_one_step_metric_per_numeric_member(shapes: Scenario) -> None:
    log, run = _full_log(shapes), _task_run(shapes)
    samples = log.samples or []
    for member in ("id_len", "epoch_half"):
        history = shapes.history(run, f"per_sample/parts/{member}")
        assert sorted(p.step for p in history) == list(range(len(samples)))
        truth = [s.scores["parts"].value[member] for s in samples if s.scores]
        assert sorted(p.value for p in history) == sorted(truth)
    assert "per_sample/parts/label" not in run.data.metrics  # text: an assessment, not a metric
    assert "per_sample/parts" not in run.data.metrics
    assert sorted(p.value for p in shapes.history(run, "per_sample/match")) == sorted(
        1.0 if s.scores and s.scores["match"].value == "C" else 0.0 for s in samples
    )


# -- 9c. non-ASCII task names ---------------------------------------------------------------


def test_a_non_ascii_task_name_keeps_its_artifact_paths(shapes: Scenario) -> None:
    log, run = _full_log(shapes), _task_run(shapes)
    assert run.info.run_name == TASK
    paths = shapes.artifact_paths(run)
    assert f"eval_logs/{TASK}.json" in paths and f"sample_results/{TASK}.json" in paths, paths
    assert not [p for p in paths if "__" in p], paths
    listed = [a.path for a in shapes.client.list_artifacts(run.info.run_id, "eval_logs")]
    assert listed == [f"eval_logs/{TASK}.json"]
    header = download_json(shapes.client, run.info.run_id, f"eval_logs/{TASK}.json")
    assert header["eval"]["task"] == TASK and header["eval"]["eval_id"] == log.eval.eval_id
    records = download_json(shapes.client, run.info.run_id, f"sample_results/{TASK}.json")
    assert sorted((str(r["id"]), r["epoch"]) for r in records) == sorted(
        (str(s.id), s.epoch) for s in log.samples or []
    )


# -- 7. one task, two models ----------------------------------------------------------------

MODELS = ["mockllm/m1", "mockllm/m2"]
PAIR = "qa_two_models"


def _pair_model(name: str, right: bool) -> Model:
    def outputs(input: list[Any], tools: Any, tool_choice: Any, config: Any) -> ModelOutput:
        question = next((m.text for m in input if m.role == "user"), "")
        return _output(name, question.split()[-1] if right else "no")

    return get_model(name, custom_outputs=outputs)


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    root = tmp_path_factory.mktemp("two-models")
    task = Task(
        name=PAIR,
        dataset=[Sample(id=i, input=f"say {i}", target=str(i)) for i in range(3)],
        solver=[generate()],
        scorer=match(),
    )
    models = [_pair_model(MODELS[0], True), _pair_model(MODELS[1], False)]
    scenario = run_scenario(root, task, model=models)
    assert sorted(log.eval.model for log in scenario.logs) == MODELS
    assert [log.status for log in scenario.logs] == ["success", "success"]
    return scenario


def test_two_models_give_two_task_runs_named_apart(two_models: Scenario) -> None:
    [parent] = two_models.parents()
    tasks = [r for r in two_models.runs() if r.info.run_id != parent.info.run_id]
    assert sorted(r.info.run_name for r in tasks) == [f"{PAIR} ({m})" for m in MODELS]
    for log in two_models.logs:
        run = two_models.run(f"{PAIR} ({log.eval.model})")
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["inspect.model"] == log.eval.model
        assert run.data.tags["inspect.eval_id"] == log.eval.eval_id
        for key, value in _expected_scores(read_eval_log(log.location)).items():
            assert math.isclose(run.data.metrics[key], value), (run.info.run_name, key)
    accuracies = {two_models.run(f"{PAIR} ({m})").data.metrics["match/accuracy"] for m in MODELS}
    assert accuracies == {0.0, 1.0}


def test_the_parent_lists_unique_tasks_and_the_models(two_models: Scenario) -> None:
    [parent] = two_models.parents()
    assert parent.data.tags["inspect.tasks"] == PAIR
    assert parent.data.tags["inspect.task_count"] == "2"
    assert sorted(parent.data.tags["inspect.models"].split(", ")) == MODELS


def test_each_model_has_its_own_artifacts(two_models: Scenario) -> None:
    for log in two_models.logs:
        model = log.eval.model
        run = two_models.run(f"{PAIR} ({model})")
        file = f"{PAIR} ({model.replace('/', '_')}).json"
        paths = two_models.artifact_paths(run)
        assert f"eval_logs/{file}" in paths and f"sample_results/{file}" in paths, paths
        header = download_json(two_models.client, run.info.run_id, f"eval_logs/{file}")
        assert header["eval"]["model"] == model and header["eval"]["eval_id"] == log.eval.eval_id
        records = download_json(two_models.client, run.info.run_id, f"sample_results/{file}")
        truth = {s.id: s.output.completion for s in read_eval_log(log.location).samples or []}
        assert {r["id"]: r["output"] for r in records} == truth
