"""Per-eval settings from Inspect's metadata, and the link from the eval log to its run.

The parsing is checked on plain dicts; the rest through real offline evals (the mock
model) on a real MLflow: a sqlite file, and (marked ``server``) a real ``mlflow server``
in delivery-process mode. The link is read back from the log Inspect wrote and resolved
with ``MlflowClient``, as a user following it would.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from e2e_support import demo_task_with, eval_run_name, run_logged
from inspect_ai import Task
from inspect_ai.log import read_eval_log
from inspect_ai.solver import Generate, TaskState, solver
from mlflow import MlflowClient

from inspect_mlflow._commands.demo import demo_task
from inspect_mlflow._inspect.eval_metadata import (
    LINK_KEY,
    PendingLinks,
    eval_settings,
    run_link,
    run_page,
)
from inspect_mlflow._inspect.progress import TaskSamples, expected_samples

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


# -- the run's page --------------------------------------------------------------------


def test_a_servers_run_has_a_url_to_click() -> None:
    page = run_page("https://user:secret@mlflow.example.com/", "7", "abc")
    assert page["url"] == "https://mlflow.example.com/#/experiments/7/runs/abc"
    assert (page["experiment_id"], page["run_id"]) == ("7", "abc")
    assert "secret" not in json.dumps(page)


def test_a_local_stores_run_says_how_to_serve_it() -> None:
    page = run_page("sqlite:///tmp/mlflow.db", "1", "abc")
    assert "url" not in page
    assert page["open"] == (
        "run `mlflow ui --backend-store-uri sqlite:///tmp/mlflow.db`, then open "
        "http://127.0.0.1:5000/#/experiments/1/runs/abc"
    )


class _Spec:
    def __init__(self, metadata: dict[str, Any]) -> None:
        self.metadata = metadata


def test_a_pending_link_is_completed_once_the_run_exists() -> None:
    link = run_link("http://127.0.0.1:5000", "exp", "task:e1")
    spec = _Spec({"other": 1, LINK_KEY: {**link, "tags": {"team": "nlp"}}})
    known: dict[str, tuple[str, str]] = {}
    links = PendingLinks()
    links.add("e1", spec, "http://127.0.0.1:5000", "task:e1", known.get)
    assert not links.fill("e1") and "run_id" not in spec.metadata[LINK_KEY]
    known["task:e1"] = ("3", "r9")
    assert links.fill("e1")
    filled = spec.metadata[LINK_KEY]
    assert filled["url"] == "http://127.0.0.1:5000/#/experiments/3/runs/r9"
    assert filled["filter"] == link["filter"] and filled["tags"] == {"team": "nlp"}
    assert spec.metadata["other"] == 1
    assert links.fill("e1") and links.fill("never-added")


def test_a_lookup_that_fails_leaves_the_link_as_it_was() -> None:
    def broken(key: str) -> tuple[str, str] | None:
        raise RuntimeError("gone")

    spec = _Spec({LINK_KEY: {"filter": "f"}})
    links = PendingLinks()
    links.add("e1", spec, "sqlite:///x.db", "task:e1", broken)
    assert not links.fill("e1")
    assert spec.metadata[LINK_KEY] == {"filter": "f"}


def _spec(sample_ids: list[Any] | None, samples: int, epochs: int | None) -> Any:
    return SimpleNamespace(
        dataset=SimpleNamespace(sample_ids=sample_ids, samples=samples),
        config=SimpleNamespace(epochs=epochs),
    )


@pytest.mark.parametrize(
    ("sample_ids", "samples", "epochs", "expected"),
    [([1, 2, 3], 10, 2, 6), (None, 4, None, 4), ([], 5, 1, 5)],
)
def test_the_last_expected_sample_end_is_known(
    sample_ids: list[Any] | None, samples: int, epochs: int | None, expected: int
) -> None:
    # Only there may the link wait for its run (an earlier wait holds a sample's slot),
    # and only there is the delivery hurried.
    assert expected_samples(_spec(sample_ids, samples, epochs)) == expected
    left = TaskSamples()
    left.started("e1", _spec(sample_ids, samples, epochs))
    ends = [left.ended("e1") for _ in range(expected + 1)]
    assert ends == [False] * (expected - 1) + [True, False]
    assert not left.ended("never-started")
    left.started("e2", SimpleNamespace())  # a spec that does not say: never "last"
    assert not left.ended("e2")


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


@solver
def _wait_for_the_run(uri: str, experiment: str) -> Any:
    """Sample 1 takes until its task's run exists in MLflow, as a model's answer might."""

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        if state.sample_id != 1:
            return state
        client = MlflowClient(tracking_uri=uri)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = await asyncio.to_thread(client.get_experiment_by_name, experiment)
            runs = found and await asyncio.to_thread(
                client.search_runs, [found.experiment_id], "tags.`inspect.task` = 'linked'"
            )
            if runs:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # the delivery process says so within 0.05 s
        return state

    return solve


def _linked_eval(store: Any, delivery: str) -> tuple[dict[str, Any], Any]:
    """An eval whose first sample outlasts its run's creation: the log's link, the run."""
    task = demo_task_with(_wait_for_the_run(store.tracking_uri, store.experiment_name), 3, "linked")
    logs = run_logged(
        task,
        store.tracking_uri,
        store.experiment_name,
        extra_env={"INSPECT_MLFLOW_DELIVERY": delivery},
    )
    log = read_eval_log(logs[0].location)
    return log.eval.metadata[LINK_KEY], _resolve(log)


@pytest.mark.parametrize("delivery", ["process", "thread"])
def test_the_link_names_the_run_and_its_page(sqlite_store: Any, delivery: str) -> None:
    link, run = _linked_eval(sqlite_store, delivery)
    assert (link["experiment_id"], link["run_id"]) == (run.info.experiment_id, run.info.run_id)
    page = f"/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    assert link["open"] == (
        f"run `mlflow ui --backend-store-uri {sqlite_store.tracking_uri}`, "
        f"then open http://127.0.0.1:5000{page}"
    )
    assert "url" not in link  # a local store has no page until `mlflow ui` serves it


@pytest.mark.server
def test_the_logs_url_opens_its_run_on_a_server(server_store: Any) -> None:
    """Delivery process and a real server: the URL in the log names the task's run."""
    link, found = _linked_eval(server_store, "process")
    base = server_store.tracking_uri.rstrip("/")
    prefix = f"{base}/#/experiments/"
    assert link["url"].startswith(prefix), link
    experiment_id, _, run_id = link["url"][len(prefix) :].partition("/runs/")
    assert (experiment_id, run_id) == (link["experiment_id"], link["run_id"])
    with urllib.request.urlopen(link["url"], timeout=30) as page:  # MLflow's UI answers
        assert page.status == 200
    rest = f"{base}/api/2.0/mlflow/runs/get?run_id={run_id}"
    with urllib.request.urlopen(rest, timeout=30) as answer:
        run = json.load(answer)["run"]
    assert run["info"]["experiment_id"] == experiment_id
    assert run["info"]["run_id"] == found.info.run_id
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["inspect_mlflow.run_key"] == link["run_key"]
    assert tags["inspect.task"] == "linked"


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
