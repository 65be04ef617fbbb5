"""The run end finds little left to send: the last samples' writes go out as they end.

Inspect writes the task's log and ends the run right after the task's last sample ends;
the delivery then sends what it holds at once instead of at its next interval (the
hook knows which sample end is the last from the task's spec: its samples times its
epochs). Checked with the interval made a minute long, so that only the hurry can have
sent the traces before the task's end.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from e2e_support import run_logged
from mlflow import MlflowClient

import inspect_mlflow._delivery.session as session_module
from inspect_mlflow._commands.demo import demo_task
from inspect_mlflow._inspect.hook import MlflowTrackingHook


@pytest.mark.parametrize("epochs", [1, 2])
def test_the_last_samples_traces_are_sent_before_the_task_ends(
    sqlite_store: Any, monkeypatch: pytest.MonkeyPatch, epochs: int
) -> None:
    monkeypatch.setattr(session_module, "SCHEDULE_DELAY", 60.0)
    experiment = f"run-end-{epochs}"
    samples = 4
    client = MlflowClient(tracking_uri=sqlite_store.tracking_uri)

    def traces() -> int:
        exp = client.get_experiment_by_name(experiment)
        found = client.search_traces(locations=[exp.experiment_id], max_results=100)
        return len(found)

    at_task_end: list[int] = []
    original = MlflowTrackingHook.on_task_end

    async def on_task_end(self: MlflowTrackingHook, data: Any) -> None:
        # Traces stored by now came with the hurry: the interval is a minute.
        deadline = time.monotonic() + 10
        while traces() < samples * epochs and time.monotonic() < deadline:
            time.sleep(0.05)
        at_task_end.append(traces())
        await original(self, data)

    monkeypatch.setattr(MlflowTrackingHook, "on_task_end", on_task_end)
    logs = run_logged(
        demo_task(samples),
        sqlite_store.tracking_uri,
        experiment,
        epochs=epochs,
        extra_env={"INSPECT_MLFLOW_DELIVERY": "thread"},
    )
    assert logs[0].status == "success"
    assert at_task_end == [samples * epochs] == [len(logs[0].samples)]
    assert traces() == samples * epochs
