"""Names that say what a run and a metric are (issue 17), from real evals into a sqlite store.

The step series are `per_sample/...` and `per_call/...`, never a bare name that passes
for a headline score; `mappings/examples/legacy-names.yaml` brings the old `sample/...`
and `event/...` names back. The eval run is named from its tasks, models and start
(`math · openai/gpt-4o · 12-03 16:33`); the summary metrics are the log's, unrounded.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from inspect_ai.model import get_model
from scenario_support import Scenario, run_scenario

from inspect_mlflow._commands.demo import answer, demo_task
from inspect_mlflow._paths import data_root, default_mapping_path

LEGACY = data_root() / "mappings" / "examples" / "legacy-names.yaml"
LEGACY_RULES = (
    "model-call",
    "tool-call",
    "sample-metrics",
    "sample-scores",
    "sample-score-members",
)
SERIES = ("per_sample/", "per_call/")


def _task_runs(scenario: Scenario) -> dict[str, Any]:
    return {r.info.run_name: r for r in scenario.runs() if "mlflow.parentRunId" in r.data.tags}


def _local(iso: str) -> str:
    """Inspect's UTC time as the eval machine's clock shows it (what the name holds)."""
    return datetime.fromisoformat(iso).astimezone().strftime("%m-%d %H:%M")


@pytest.fixture(scope="module")
def two_tasks(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    # The demo model gets sample 5 wrong: accuracy 5/6, a score with many decimals.
    return run_scenario(
        tmp_path_factory.mktemp("names"), [demo_task(6, name="steady"), demo_task(2, name="second")]
    )


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    models = [get_model(name, custom_outputs=answer) for name in ("mockllm/a", "mockllm/b")]
    return run_scenario(
        tmp_path_factory.mktemp("names-models"), demo_task(2, name="math"), model=models
    )


def test_step_series_are_named_as_series(two_tasks: Scenario) -> None:
    for run in _task_runs(two_tasks).values():
        keys = set(run.data.metrics)
        assert not [k for k in keys if k.startswith(("sample/", "event/"))], keys
        for key in ("per_sample/match", "per_sample/includes", "per_sample/total_time"):
            assert key in keys
        for key in ("per_call/model_call", "per_call/input_tokens", "per_call/tool_call"):
            assert key in keys
        samples = int(run.data.metrics["total_samples"])
        assert len(two_tasks.history(run, "per_sample/match")) == samples
        # Every metric with a step per sample or call is under a series prefix.
        for key in keys - {k for k in keys if k.startswith(SERIES)}:
            assert len(two_tasks.history(run, key)) == 1, key


def test_metric_order_is_the_stores_first_logged(two_tasks: Scenario) -> None:
    """MLflow (its REST API, and the UI that lists what it returns) gives a run's metrics
    in the order the store first recorded each key; the series, logged while the task
    runs, come first. Their prefix says they are series (see docs/what-you-see.md)."""
    run = _task_runs(two_tasks)["steady"]
    keys = list(two_tasks.client.get_run(run.info.run_id).data.metrics)
    first_summary = keys.index("total_samples")
    assert all(k.startswith(SERIES) for k in keys[:first_summary])
    assert not any(k.startswith(SERIES) for k in keys[first_summary:])


def test_summary_metrics_are_the_logs_unrounded(two_tasks: Scenario) -> None:
    for log in two_tasks.logs:
        run = _task_runs(two_tasks)[log.eval.task]
        assert log.results is not None
        for score in log.results.scores:
            for name, metric in score.metrics.items():
                assert run.data.metrics[f"{score.name}/{name}"] == metric.value
    accuracy = _task_runs(two_tasks)["steady"].data.metrics["match/accuracy"]
    assert accuracy == pytest.approx(5 / 6) and round(accuracy, 3) != accuracy
    note = _task_runs(two_tasks)["steady"].data.tags["mlflow.note.content"]
    assert "accuracy **0.833**" in note, "only the description rounds"


def test_eval_run_is_named_from_tasks_model_and_start(two_tasks: Scenario) -> None:
    [parent] = two_tasks.parents()
    first = min(two_tasks.logs, key=lambda lg: lg.eval.created)
    started = [lg.eval.task for lg in sorted(two_tasks.logs, key=lambda lg: lg.eval.created)]
    expected = f"{', '.join(started)} · mockllm/model · {_local(first.eval.created)}"
    assert parent.info.run_name == expected
    assert set(_task_runs(two_tasks)) == {"steady", "second"}, "one model: a task's name only"


def test_several_models_name_the_eval_and_each_task_run(two_models: Scenario) -> None:
    [parent] = two_models.parents()
    created = min(lg.eval.created for lg in two_models.logs)
    assert re.fullmatch(
        r"math · mockllm/[ab], mockllm/[ab] · \d\d-\d\d \d\d:\d\d", parent.info.run_name
    )
    assert parent.info.run_name.endswith(_local(created))
    assert set(_task_runs(two_models)) == {"math (mockllm/a)", "math (mockllm/b)"}


def test_legacy_mapping_repeats_the_default_rules_but_the_names() -> None:
    """The legacy file replaces five default rules whole: they must stay the default's."""
    default = yaml.safe_load(default_mapping_path().read_text())["rules"]
    legacy = yaml.safe_load(LEGACY.read_text())["rules"]
    by_id = {r["id"]: r for point in default.values() for r in point if "id" in r}
    old = {r["id"]: r for point in legacy.values() for r in point}
    assert sorted(old) == sorted(LEGACY_RULES)
    for rule_id in LEGACY_RULES:
        renamed = {
            re.sub(r"^per_sample/", "sample/", re.sub(r"^per_call/", "event/", key)): value
            for key, value in by_id[rule_id]["metrics"].items()
        }
        assert old[rule_id] == {**by_id[rule_id], "metrics": renamed}, rule_id


def test_legacy_mapping_logs_the_old_names(tmp_path: Path) -> None:
    scenario = run_scenario(
        tmp_path, demo_task(2, name="legacy"), extra_env={"INSPECT_MLFLOW_MAPPING": str(LEGACY)}
    )
    [run] = _task_runs(scenario).values()
    keys = set(run.data.metrics)
    assert not [k for k in keys if k.startswith(SERIES)]
    assert len(scenario.history(run, "sample/match")) == 2
    assert {"sample/total_time", "event/model_call", "event/tool_call"} <= keys
    assert {"match/accuracy", "total_samples"} <= keys  # the rest is the default's
