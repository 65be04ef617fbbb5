"""End-to-end: lifecycles where Inspect's hooks alone do not tell the whole story (issue 14).

Real ``eval()`` / ``eval_set()`` calls on the offline mock model, read back from a real
store and compared with Inspect's own final log (the truth):

- **Samples lost to a task abort** (cases 2 and 9): when a sample fails and aborts its
  task, Inspect cancels the samples still in flight. One that was already written to the
  log but not yet past its ``on_sample_end`` never reaches any hook; an eval set's retry
  then reuses it from the log without ending it again. In a real eval this window is a
  few milliseconds (the log write); here a test-only hook widens it by holding the other
  samples in ``on_sample_attempt_end`` (just before ``on_sample_end``) until the failing
  sample has raised. Every sample of the final log must be in MLflow exactly once.
- **A plain eval whose task failed** (case 3): its parent run ends FAILED, not FINISHED.
- **An eval rejected before it starts** (case 9f): its parent says why.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from e2e_support import download_json, env, new_experiment_name, run_logged
from inspect_ai import Task, eval_set
from inspect_ai import eval as inspect_eval
from inspect_ai.dataset import Sample
from inspect_ai.hooks import Hooks, SampleAttemptEnd, SampleEnd, hooks
from inspect_ai.log import EvalLog, read_eval_log
from inspect_ai.scorer import Metric, SampleScore, includes, match, metric
from inspect_ai.solver import Generate, TaskState, generate, solver, use_tools
from mlflow import MlflowClient

from inspect_mlflow._commands.demo import add_tool, demo_model, demo_task

pytestmark = pytest.mark.e2e

SAMPLES = 5
FAILING = 3
DELIVERY = ["process", "thread"]


# -- widening the window between a sample's log write and its on_sample_end ------------


@dataclass
class Gate:
    """Holds finished samples before their end until the failing sample has raised."""

    hold: int
    """How many samples to hold (all but the failing one)."""
    held: set[Any] = field(default_factory=set)
    raised: bool = False
    ended: list[tuple[Any, int]] = field(default_factory=list)
    """(id, epoch) of every ``on_sample_end`` Inspect delivered (to any hook)."""


_gate: Gate | None = None


@hooks(name="inspect_mlflow_test_sample_gate", description="test-only: delays sample ends")
class _SampleGate(Hooks):
    """Active only while a test sets ``_gate``: see the module docstring."""

    def enabled(self) -> bool:
        return _gate is not None

    async def on_sample_attempt_end(self, data: SampleAttemptEnd) -> None:
        gate = _gate
        if gate is None or gate.raised or data.error is not None or data.will_retry:
            return
        gate.held.add(data.summary.id)
        await anyio.sleep_forever()  # until the task's abort cancels this sample

    async def on_sample_end(self, data: SampleEnd) -> None:
        if _gate is not None:
            _gate.ended.append((data.sample.id, data.sample.epoch))


@solver
def fail_once_when_others_held() -> Any:
    """Sample ``FAILING`` raises once, after every other sample is held at its end."""

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        gate = _gate
        if gate is not None and state.sample_id == FAILING and not gate.raised:
            for _ in range(3000):
                if len(gate.held) >= gate.hold:
                    break
                await asyncio.sleep(0.01)
            gate.raised = True
            raise RuntimeError(f"planned failure of sample {FAILING}")
        return state

    return solve


def lossy_task(name: str = "lossy") -> Task:
    base = demo_task(SAMPLES, name=name)
    return Task(
        name=name,
        dataset=base.dataset,
        solver=[fail_once_when_others_held(), use_tools(add_tool()), generate()],
        scorer=base.scorer,
    )


# -- reading back ---------------------------------------------------------------------


@dataclass
class Landed:
    """One eval's final log(s) and what reached MLflow."""

    client: MlflowClient
    experiment_id: str
    runs: list[Any]
    logs: list[EvalLog]
    gate: Gate | None
    error: BaseException | None = None

    def task_run(self, name: str) -> Any:
        [run] = [r for r in self.runs if r.info.run_name == name]
        return run

    def parent(self) -> Any:
        [run] = [r for r in self.runs if "mlflow.parentRunId" not in r.data.tags]
        return run

    def history(self, run: Any, key: str) -> list[Any]:
        return self.client.get_metric_history(run.info.run_id, key)

    def traces(self, run: Any) -> list[Any]:
        return self.client.search_traces(
            locations=[self.experiment_id], run_id=run.info.run_id, max_results=500
        )


def _read_back(uri: str, experiment: str, logs: list[EvalLog], gate: Gate | None) -> Landed:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, "nothing reached MLflow"
    runs = client.search_runs([exp.experiment_id], max_results=100)
    return Landed(client, exp.experiment_id, runs, logs, gate)


def _settings(uri: str, experiment: str, delivery: str) -> dict[str, str | None]:
    return {
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_EXPERIMENT_NAME": experiment,
        "INSPECT_MLFLOW_AUTOLOG_ENABLED": "false",
        "INSPECT_MLFLOW_DELIVERY": delivery,
    }


def run_gated(root: Path, delivery: str, *, as_set: bool, retries: int = 2) -> Landed:
    """The lossy task, as an eval set (retried ``retries`` times), or a plain eval that fails."""
    global _gate
    uri = f"sqlite:///{root}/mlflow.db"
    experiment = new_experiment_name("lifecycle")
    _gate = gate = Gate(hold=SAMPLES - 1)
    cwd = os.getcwd()
    os.chdir(root)  # the sqlite store keeps artifacts under ./mlruns
    try:
        common: dict[str, Any] = {
            "model": demo_model(),
            "display": "none",
            "max_samples": SAMPLES,
            "log_dir": str(root / "logs"),
        }
        with env(**_settings(uri, experiment, delivery)):
            if as_set:
                ok, logs = eval_set([lossy_task()], retry_attempts=retries, retry_wait=0, **common)
                assert ok == (retries > 0)
            else:
                logs = inspect_eval(lossy_task(), **common)
    finally:
        _gate = None
        os.chdir(cwd)
    assert gate.raised and len(gate.held) == SAMPLES - 1, "the scenario did not hold the samples"
    return _read_back(uri, experiment, list(logs), gate)


def _full(log: EvalLog) -> EvalLog:
    return read_eval_log(log.location)


def assert_every_logged_sample_once(landed: Landed, name: str = "lossy") -> None:
    """Points, table rows and traces: each sample of the final log exactly once."""
    run = landed.task_run(name)
    [log] = [_full(log) for log in landed.logs]
    truth = Counter((s.id, s.epoch) for s in log.samples or [])
    scored = Counter((s.id, s.epoch) for s in log.samples or [] if s.scores)
    assert truth and max(truth.values()) == 1
    for scorer in ("match", "includes"):
        points = landed.history(run, f"per_sample/{scorer}")
        assert len(points) == sum(scored.values()), (scorer, len(points), scored)
        assert len({p.step for p in points}) == len(points)
    # Table rows: one per run of a sample; each logged run once (by its uuid).
    rows = download_json(landed.client, run.info.run_id, "inspect/samples.json")
    uuid_at = rows["columns"].index("uuid")
    uuids = Counter(row[uuid_at] for row in rows["data"])
    assert max(uuids.values()) == 1
    assert {s.uuid for s in log.samples or []} <= set(uuids)
    # Traces: one per run of a sample; the log's runs all there, each once.
    traces = landed.traces(run)
    by_uuid = Counter(t.info.trace_metadata.get("inspect.sample_uuid") for t in traces)
    assert max(by_uuid.values()) == 1
    for sample in log.samples or []:
        assert by_uuid[sample.uuid] == 1, (sample.id, sample.epoch)
    ok = Counter(
        (int(t.info.tags["inspect.sample_id"]), int(t.info.tags["inspect.epoch"]))
        for t in traces
        if t.info.state.value == "OK"
    )
    assert ok == Counter({k: 1 for k, _ in truth.items() if k in scored})
    # Beyond the log's samples only runs that failed (and were run again).
    logged = {s.uuid for s in log.samples or []}
    extra = [t for t in traces if t.info.trace_metadata.get("inspect.sample_uuid") not in logged]
    assert all(t.info.state.value == "ERROR" for t in extra)


# -- case 2: an eval set loses no sample --------------------------------------------


@pytest.fixture(scope="module", params=DELIVERY)
def retried_set(request: pytest.FixtureRequest, tmp_path_factory: Any) -> Landed:
    return run_gated(tmp_path_factory.mktemp(f"set-{request.param}"), request.param, as_set=True)


def test_a_retried_set_logs_every_sample_of_its_final_log_once(retried_set: Landed) -> None:
    gate = retried_set.gate
    assert gate is not None
    # Inspect never ended the held samples (for any hook), yet the retry reused them.
    ended = {sample_id for sample_id, _ in gate.ended}
    assert ended == {FAILING}
    [log] = [_full(log) for log in retried_set.logs]
    assert log.status == "success" and len(log.samples or []) == SAMPLES
    assert_every_logged_sample_once(retried_set)
    run = retried_set.task_run("lossy")
    assert run.info.status == "FINISHED" and retried_set.parent().info.status == "FINISHED"
    # The failed run of sample 3 stays visible, with its error.
    errors = [t for t in retried_set.traces(run) if t.info.state.value == "ERROR"]
    assert [t.info.tags["inspect.sample_id"] for t in errors] == [str(FAILING)]
    # The summary counts the reconciled samples too.
    assert len(retried_set.history(run, "per_sample/total_time")) == SAMPLES + 1


# -- case 2 (task failing for good) and case 3: a plain eval whose task fails ---------


@pytest.fixture(scope="module", params=DELIVERY)
def failed_eval(request: pytest.FixtureRequest, tmp_path_factory: Any) -> Landed:
    return run_gated(tmp_path_factory.mktemp(f"eval-{request.param}"), request.param, as_set=False)


def test_samples_finished_while_the_task_failed_are_logged(failed_eval: Landed) -> None:
    [log] = [_full(log) for log in failed_eval.logs]
    assert log.status == "error"
    # The held samples were written to the failed log although they never ended.
    assert {s.id for s in log.samples or [] if s.scores} == set(range(1, SAMPLES + 1)) - {FAILING}
    assert_every_logged_sample_once(failed_eval)


def test_a_set_whose_task_fails_for_good_keeps_its_finished_samples(tmp_path: Path) -> None:
    """No retry left: the task never ends; its samples are read from the log at run end."""
    landed = run_gated(tmp_path, "thread", as_set=True, retries=0)
    [log] = [_full(log) for log in landed.logs]
    assert log.status == "error" and len(log.samples or []) == SAMPLES
    assert_every_logged_sample_once(landed)
    assert landed.task_run("lossy").info.status == "FAILED"
    assert landed.parent().info.status == "FAILED"


def test_a_plain_eval_whose_task_failed_ends_failed(failed_eval: Landed) -> None:
    run = failed_eval.task_run("lossy")
    assert run.info.status == "FAILED" and failed_eval.parent().info.status == "FAILED"
    # The task run says why (the parent has no error of its own: eval() did not raise).
    assert f"planned failure of sample {FAILING}" in run.data.tags["inspect.error"]
    assert "planned failure" in run.data.tags["mlflow.note.content"]
    assert "inspect.error" not in failed_eval.parent().data.tags


@metric
def exploding() -> Metric:
    def compute(scores: list[SampleScore]) -> float:
        raise ValueError("planned metric failure")

    return compute


def _metric_failure_task() -> Task:
    base = demo_task(2, name="bad_metric")
    return Task(
        name="bad_metric",
        dataset=base.dataset,
        solver=base.solver,
        scorer=[match(), includes()],
        metrics=[exploding()],
    )


@pytest.mark.parametrize("kind", ["metric", "success"])
def test_the_parent_status_follows_its_tasks(kind: str, tmp_path: Path) -> None:
    """A metric that raises fails the task (no task_end) and so its parent; success not."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment = new_experiment_name("status")
    task = _metric_failure_task() if kind == "metric" else demo_task(2, name="fine")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        logs = run_logged(task, uri, experiment, log_dir=str(tmp_path / "logs"))
    finally:
        os.chdir(cwd)
    landed = _read_back(uri, experiment, list(logs), None)
    expected = {"metric": ("error", "FAILED"), "success": ("success", "FINISHED")}[kind]
    assert logs[0].status == expected[0]
    assert landed.task_run(logs[0].eval.task).info.status == expected[1]
    assert landed.parent().info.status == expected[1]


# -- case 9f: an eval rejected before its first sample -------------------------------


def test_an_eval_rejected_before_it_starts_says_why(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment = new_experiment_name("rejected")
    base = demo_task(2, name="duplicated")
    dataset = [Sample(id=1, input="1 + 1?", target="2"), Sample(id=1, input="2 + 2?", target="4")]
    task = Task(name="duplicated", dataset=dataset, solver=base.solver, scorer=base.scorer)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    error: BaseException | None = None
    try:
        run_logged(task, uri, experiment, log_dir=tempfile.mkdtemp(dir=tmp_path))
    except Exception as err:
        error = err
    finally:
        os.chdir(cwd)
    assert error is not None and "duplicate sample ids" in str(error)
    landed = _read_back(uri, experiment, [], None)
    parent = landed.parent()
    assert len(landed.runs) == 1 and parent.info.status == "FAILED"
    assert "duplicate sample ids" in parent.data.tags["inspect.error"]
    assert parent.data.tags["inspect.error"].startswith("PrerequisiteError")
    assert "duplicate sample ids" in parent.data.tags["mlflow.note.content"]
