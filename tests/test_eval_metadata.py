"""Per-eval settings from Inspect's metadata, and the link from the eval log to its run.

The parsing is checked on plain dicts; the rest through real offline evals (the mock
model) on a real MLflow: a sqlite file, and (marked ``server``) a real ``mlflow server``
in delivery-process mode. The link is read back from the log Inspect wrote and resolved
with ``MlflowClient``, as a user following it would.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from e2e_support import eval_run_name, run_logged
from inspect_ai import Task
from inspect_ai.log import read_eval_log
from mlflow import MlflowClient

from inspect_mlflow._commands.demo import demo_task
from inspect_mlflow._inspect.eval_metadata import LINK_KEY, eval_settings

# -- parsing --------------------------------------------------------------------------


def test_no_metadata_means_no_settings() -> None:
    assert not eval_settings(None)
    assert not eval_settings({"other": 1})


def test_the_object_and_the_dotted_keys_dotted_winning() -> None:
    parsed = eval_settings(
        {
            "inspect_mlflow": {"experiment": "a", "tags": {"team": "nlp", "tier": 1}},
            "inspect_mlflow.experiment": "b",
            "inspect_mlflow.tags.owner": "ana",
        }
    )
    assert parsed.experiment == "b"
    assert parsed.tags == {"team": "nlp", "tier": "1", "owner": "ana"}
    assert parsed.problems == ()


def test_the_object_given_as_json_text() -> None:
    parsed = eval_settings({"inspect_mlflow": '{"experiment": "x", "tags": {"k": true}}'})
    assert (parsed.experiment, parsed.tags) == ("x", {"k": "true"})


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ({"inspect_mlflow": "not json"}, "is not a JSON object"),
        ({"inspect_mlflow": 3}, "must be an object"),
        ({"inspect_mlflow.experimnet": "x"}, "experimnet is not a setting"),
        ({"inspect_mlflow.experiment": ["a", "b"]}, "is not a name"),
        ({"inspect_mlflow": {"tags": ["a"]}}, "tags must be an object"),
        ({"inspect_mlflow.tags.k": {"nested": 1}}, "tags.k="),
    ],
)
def test_a_bad_value_is_left_out_and_named(metadata: dict[str, Any], problem: str) -> None:
    parsed = eval_settings(metadata)
    assert not parsed.experiment and not parsed.tags
    assert any(problem in p for p in parsed.problems), parsed.problems


# -- real evals -----------------------------------------------------------------------


def _resolve(log: Any) -> Any:
    """The run the log's link names, found as a user would: experiment + filter."""
    link = log.eval.metadata[LINK_KEY]
    client = MlflowClient(tracking_uri=link["tracking_uri"])
    experiment = client.get_experiment_by_name(link["experiment"])
    assert experiment is not None, link
    runs = client.search_runs([experiment.experiment_id], filter_string=link["filter"])
    assert len(runs) == 1, (link, runs)
    return runs[0]


def test_the_log_links_to_its_task_run_and_the_run_to_its_log(sqlite_store: Any) -> None:
    logs = run_logged(demo_task(2), sqlite_store.tracking_uri, sqlite_store.experiment_name)
    log = read_eval_log(logs[0].location)  # what Inspect wrote, not the in-memory object
    link = log.eval.metadata[LINK_KEY]
    assert link["experiment"] == sqlite_store.experiment_name
    assert link["run_key"] == f"task:{log.eval.eval_id}"
    assert "mlflow ui --backend-store-uri" in link["open"]
    run = _resolve(log)
    assert run.data.tags["inspect.eval_id"] == log.eval.eval_id
    assert run.data.tags["inspect.log"] == log.location
    assert "tags" not in link  # no extra tags asked for


def _two_tasks(experiment: str) -> list[Task]:
    """One task choosing its own experiment by its metadata, one staying put."""
    base = demo_task(2, name="own_experiment")
    own = Task(
        name="own_experiment",
        dataset=base.dataset,
        solver=base.solver,
        scorer=base.scorer,
        metadata={"inspect_mlflow.experiment": experiment},
    )
    return [own, demo_task(2, name="stays")]


def _runs(client: MlflowClient, name: str) -> dict[str, Any]:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return {}
    return {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}


@pytest.mark.parametrize(
    "store", ["sqlite_store", pytest.param("server_store", marks=pytest.mark.server)]
)
def test_eval_metadata_chooses_the_experiment_and_adds_tags(
    store: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    target = request.getfixturevalue(store)
    chosen = f"chosen-{uuid.uuid4().hex[:8]}"
    extra = {"INSPECT_MLFLOW_SPOOL_DIR": str(tmp_path / "spool")}
    if store == "server_store":
        extra["INSPECT_MLFLOW_DELIVERY"] = "process"
    logs = run_logged(
        demo_task(2),
        target.tracking_uri,
        target.experiment_name,  # the environment's: the metadata wins over it
        extra_env=extra,
        # As `--metadata inspect_mlflow='{...}' --metadata inspect_mlflow.tags.owner=ana`.
        metadata={
            "inspect_mlflow": {"experiment": chosen, "tags": {"team": "nlp"}},
            "inspect_mlflow.tags.owner": "ana",
        },
    )
    client = MlflowClient(tracking_uri=target.tracking_uri)
    runs = _runs(client, chosen)
    assert set(runs) == {"demo_addition", eval_run_name(logs)}, runs
    task, parent = runs["demo_addition"], runs[eval_run_name(logs)]
    assert task.data.tags["team"] == "nlp" and task.data.tags["owner"] == "ana"
    assert task.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert task.info.status == parent.info.status == "FINISHED"
    assert float(task.data.metrics["match/accuracy"]) == 1.0
    assert _runs(client, target.experiment_name) == {}, "nothing in the environment's"
    log = read_eval_log(logs[0].location)
    assert log.eval.metadata[LINK_KEY]["tags"] == {"team": "nlp", "owner": "ana"}
    assert _resolve(log).info.run_id == task.info.run_id


@pytest.mark.parametrize("delivery", ["process", "thread"])
def test_a_task_with_its_own_experiment_gets_its_own_parent_there(
    sqlite_store: Any, delivery: str
) -> None:
    chosen = f"own-{uuid.uuid4().hex[:8]}"
    logs = run_logged(
        _two_tasks(chosen),
        sqlite_store.tracking_uri,
        sqlite_store.experiment_name,
        extra_env={"INSPECT_MLFLOW_DELIVERY": delivery},
    )
    client = MlflowClient(tracking_uri=sqlite_store.tracking_uri)
    there, home = _runs(client, chosen), _runs(client, sqlite_store.experiment_name)
    # Each experiment's parent is named from the tasks it holds.
    by_task = {log.eval.task: log for log in logs}
    for runs, task in ((there, "own_experiment"), (home, "stays")):
        parent_name = eval_run_name([by_task[task]])
        assert set(runs) == {task, parent_name}
        assert runs[task].data.tags["mlflow.parentRunId"] == runs[parent_name].info.run_id
        assert runs[parent_name].info.status == "FINISHED"
        # Each parent's summary names its own experiment's tasks only.
        note = runs[parent_name].data.tags.get("mlflow.note.content", "")
        assert task in note and ({"own_experiment", "stays"} - {task}).pop() not in note
    for log in logs:
        found = _resolve(read_eval_log(log.location))
        assert found.info.run_name == log.eval.task
