"""Scoring later (issue 14, case 8): ``eval(score=False)``, then ``inspect score``.

Inspect calls no lifecycle hook while ``inspect score`` runs: ``platform_init`` loads
the hooks (``init_hooks``, which asks ``enabled()`` and prints "hooks enabled: 1"), but
``inspect_ai/_eval/score.py`` and ``_cli/score.py`` emit no run, task or sample point
(a model-graded scorer's calls would only reach ``on_model_usage``, without a run to
attach to), so the new scores cannot reach MLflow live. ``inspect-mlflow import`` of
the rescored log updates the runs the eval logged live instead: the summary and
per-sample score metrics, one assessment per scorer on each existing trace, the score
tables; nothing twice, and a second import changes nothing.

The module fixture runs a real eval with ``score=False`` logged live to a sqlite store,
beside a normally scored one, scores the first with Inspect's own CLI in a subprocess,
then imports the log directory twice.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from e2e_support import download_json, new_experiment_name, run_logged, runs_by_name
from inspect_ai.log import read_eval_log
from mlflow import MlflowClient
from mlflow.tracing.client import TracingClient
from test_import import in_dir, run_cli

from inspect_mlflow._commands.demo import demo_task
from inspect_mlflow._mapping.functions import MappingFunctions

pytestmark = pytest.mark.e2e

SAMPLES = 6
"""The demo model answers every fifth question wrongly: scores are not all the same."""


def to_number(value: Any) -> float:
    """A score as the mapping's ``score_value`` gives it (C 1, I 0)."""
    return float(MappingFunctions()._func_score_value(value))


def snapshot(client: MlflowClient, uri: str, experiment: str) -> dict[str, Any]:
    """Everything an import could add: runs, every metric history, traces and assessments."""
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    tracing = TracingClient(uri)
    out: dict[str, Any] = {}
    for run in runs:
        history = {
            key: sorted(
                (m.step, m.timestamp, m.value)
                for m in client.get_metric_history(run.info.run_id, key)
            )
            for key in run.data.metrics
        }
        traces = tracing.search_traces(locations=[exp.experiment_id], run_id=run.info.run_id)
        out[run.info.run_id] = {
            "metrics": history,
            "traces": sorted(
                (
                    t.info.trace_id,
                    len(t.data.spans),
                    tuple(sorted((a.name, a.assessment_id) for a in t.info.assessments)),
                )
                for t in traces
            ),
            "artifacts": sorted(a.path for a in client.list_artifacts(run.info.run_id, "inspect")),
        }
    return out


@pytest.fixture(scope="module")
def rescored(tmp_path_factory: pytest.TempPathFactory, _sqlite_template: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("rescore")
    shutil.copyfile(_sqlite_template, root / "mlflow.db")
    uri = f"sqlite:///{root}/mlflow.db"
    experiment = new_experiment_name("rescore")
    logs = root / "logs"
    with in_dir(root):
        # Samples run side by side: the live steps follow the order the hook saw them end.
        [unscored] = run_logged(
            demo_task(SAMPLES), uri, experiment, log_dir=str(logs), max_samples=3, score=False
        )
        [scored] = run_logged(
            demo_task(SAMPLES, name="scored_addition"),
            uri,
            experiment,
            log_dir=str(logs),
            max_samples=1,
        )
    assert unscored.status == scored.status == "success"
    client = MlflowClient(tracking_uri=uri)
    task = runs_by_name(client, experiment)["demo_addition"]
    logged_live = dict(task.data.metrics)

    # Inspect's own command, in its own process, as a user runs it.
    inspect = Path(sys.executable).with_name("inspect")
    score = subprocess.run(
        [str(inspect), "score", "--overwrite", "--display", "none", unscored.location],
        capture_output=True,
        text=True,
        timeout=300,
        # The hook's settings are there: were Inspect to call it, it would log.
        env={**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": experiment},
    )
    assert score.returncode == 0, score.stdout + score.stderr
    after_score = dict(client.get_run(task.info.run_id).data.metrics)

    before = snapshot(client, uri, experiment)
    first = run_cli(root, "import", str(logs), "--tracking-uri", uri, "--experiment", experiment)
    state = snapshot(client, uri, experiment)
    second = run_cli(root, "import", str(logs), "--tracking-uri", uri, "--experiment", experiment)
    return {
        "uri": uri,
        "client": client,
        "experiment": experiment,
        "log": read_eval_log(unscored.location),
        "score_output": score.stdout + score.stderr,
        "logged_live": logged_live,
        "after_score": after_score,
        "before": before,
        "first": first,
        "second": second,
        "state": state,
        "state_again": snapshot(client, uri, experiment),
        "runs": runs_by_name(client, experiment),
    }


def test_inspect_score_loads_the_hook_but_calls_no_lifecycle_point(
    rescored: dict[str, Any],
) -> None:
    """``platform_init`` loads the hooks (``enabled()`` is asked), but scoring emits no
    run, task or sample point, so nothing reaches MLflow while Inspect scores."""
    assert "hooks enabled: 1" in rescored["score_output"]
    assert "inspect_mlflow" in rescored["score_output"]
    assert rescored["after_score"] == rescored["logged_live"]
    assert not [k for k in rescored["after_score"] if k.startswith(("match/", "includes/"))]


def test_the_rescored_log_really_has_scores(rescored: dict[str, Any]) -> None:
    log = rescored["log"]
    assert {s.name for s in log.results.scores} == {"match", "includes"}
    assert all(set(s.scores) == {"match", "includes"} for s in log.samples)
    values = {s.scores["match"].value for s in log.samples}
    assert values == {"C", "I"}, "some right, some wrong"


def test_the_import_updates_the_live_runs(rescored: dict[str, Any]) -> None:
    code, out = rescored["first"]
    assert code == 0, out
    assert "0 imported, 1 updated, 1 skipped, 0 failed" in out, out
    assert "added what its runs lacked: " in out and "match/accuracy" in out
    assert len(rescored["runs"]) == 4, "two evals, a parent and a task run each: none added"


def test_summary_metrics_equal_the_rescored_log(rescored: dict[str, Any]) -> None:
    client, log = rescored["client"], rescored["log"]
    task = rescored["runs"]["demo_addition"]
    for score in log.results.scores:
        for name, metric in score.metrics.items():
            history = client.get_metric_history(task.info.run_id, f"{score.name}/{name}")
            assert [(m.step, m.value) for m in history] == [(0, pytest.approx(metric.value))]
    for key, value in rescored["logged_live"].items():
        assert task.data.metrics[key] == value, f"{key} changed"
    [(run_id, before)] = [(k, v) for k, v in rescored["before"].items() if k == task.info.run_id]
    after = rescored["state"][run_id]["metrics"]
    assert {k: after[k] for k in before["metrics"]} == before["metrics"], "no point added"


def test_per_sample_metrics_equal_the_rescored_log(rescored: dict[str, Any]) -> None:
    client, log = rescored["client"], rescored["log"]
    task = rescored["runs"]["demo_addition"]
    # The import's steps: the samples in the order the log says they completed.
    in_order = sorted(log.samples, key=lambda s: (s.completed_at, s.started_at, s.epoch, s.id))
    for scorer in ("match", "includes"):
        history = client.get_metric_history(task.info.run_id, f"per_sample/{scorer}")
        got = sorted((m.step, m.value) for m in history)
        want = [(i, to_number(s.scores[scorer].value)) for i, s in enumerate(in_order)]
        assert got == want, scorer


def test_each_trace_has_one_assessment_per_scorer(rescored: dict[str, Any]) -> None:
    client, log = rescored["client"], rescored["log"]
    task = rescored["runs"]["demo_addition"]
    exp = client.get_experiment_by_name(rescored["experiment"])
    traces = TracingClient(rescored["uri"]).search_traces(
        locations=[exp.experiment_id], run_id=task.info.run_id
    )
    by_id = {str(s.id): s for s in log.samples}
    assert len(traces) == SAMPLES, "the live traces, none added"
    for trace in traces:
        sample = by_id[trace.info.tags["inspect.sample_id"]]
        feedback = [a for a in trace.info.assessments if a.feedback is not None]
        names = sorted(a.name for a in feedback)
        assert names == ["includes", "match"], names
        for assessment in feedback:
            want = to_number(sample.scores[assessment.name].value)
            assert math.isclose(assessment.value, want)
        spans = [s.name for s in trace.data.spans]
        assert spans.count("scorers") == 1, "the unscored eval's empty scorers span is gone"
        assert {"match", "includes"} <= set(spans)


def test_the_score_tables_have_the_new_rows(rescored: dict[str, Any]) -> None:
    client = rescored["client"]
    task = rescored["runs"]["demo_addition"]
    table = download_json(client, task.info.run_id, "inspect/sample_scores.json")
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert sorted((r["sample_id"], r["scorer"]) for r in rows) == sorted(
        (i, scorer) for i in range(1, SAMPLES + 1) for scorer in ("match", "includes")
    )
    samples = download_json(client, task.info.run_id, "inspect/samples.json")
    assert len(samples["data"]) == SAMPLES, "rewritten whole, not appended to"


def test_a_second_import_changes_nothing(rescored: dict[str, Any]) -> None:
    code, out = rescored["second"]
    assert code == 0, out
    assert "0 imported, 2 skipped, 0 failed" in out, out
    assert rescored["state_again"] == rescored["state"]


def test_a_scorer_appended_later_joins_the_assessments_already_there(
    tmp_path: Path, _sqlite_template: Path
) -> None:
    """A scored eval, then ``inspect score --action append --scorer exact``: the traces
    keep their assessments (they are not replaced) and get one for ``exact``."""
    shutil.copyfile(_sqlite_template, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment = new_experiment_name("append")
    logs = tmp_path / "logs"
    with in_dir(tmp_path):
        [log] = run_logged(demo_task(SAMPLES), uri, experiment, log_dir=str(logs))
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    task = runs_by_name(client, experiment)["demo_addition"]
    tracing = TracingClient(uri)
    ids_before = {
        t.info.trace_id: {a.name: a.assessment_id for a in t.info.assessments}
        for t in tracing.search_traces(locations=[exp.experiment_id], run_id=task.info.run_id)
    }
    inspect = Path(sys.executable).with_name("inspect")
    command = [str(inspect), "score", "--overwrite", "--action", "append", "--scorer", "exact"]
    score = subprocess.run(
        [*command, "--display", "none", log.location], capture_output=True, text=True, timeout=300
    )
    assert score.returncode == 0, score.stdout + score.stderr

    code, out = run_cli(
        tmp_path, "import", str(logs), "--tracking-uri", uri, "--experiment", experiment
    )
    assert code == 0 and "1 updated" in out and "exact/mean" in out, out
    rescored = read_eval_log(log.location)
    by_id = {str(s.id): s for s in rescored.samples}
    traces = tracing.search_traces(locations=[exp.experiment_id], run_id=task.info.run_id)
    assert {t.info.trace_id for t in traces} == set(ids_before), "the same traces"
    for trace in traces:
        names = {a.name: a.assessment_id for a in trace.info.assessments}
        # The target's expectation keeps its id too (an id space of its own).
        assert sorted(names) == ["exact", "expected_response", "includes", "match"]
        assert {k: v for k, v in names.items() if k != "exact"} == ids_before[trace.info.trace_id]
        sample = by_id[trace.info.tags["inspect.sample_id"]]
        [exact] = [a for a in trace.info.assessments if a.name == "exact"]
        assert exact.value == to_number(sample.scores["exact"].value)
    history = client.get_metric_history(task.info.run_id, "per_sample/exact")
    assert len(history) == SAMPLES
    [mean] = client.get_metric_history(task.info.run_id, "exact/mean")
    assert mean.value == pytest.approx(
        next(s for s in rescored.results.scores if s.name == "exact").metrics["mean"].value
    )
    again = run_cli(
        tmp_path, "import", str(logs), "--tracking-uri", uri, "--experiment", experiment
    )
    assert again[0] == 0 and "1 skipped" in again[1], again[1]
