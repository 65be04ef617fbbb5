"""Helpers for the delivery-contract tests: a slow-ish real eval, server chaos, and a check
of what landed against Inspect's own log (the truth).

``assert_matches_log(uri, experiment, log)`` reads the store with a plain ``MlflowClient``
and checks, for an eval of the demo task under the default mapping: each run exactly once
(by its logical key) and ``FINISHED``; every per-sample and per-event metric point exactly
once (steps ``0..n-1``, none twice); one trace per sample with one assessment per scorer
(and none twice);
every table row (samples, scores, messages) once. Only the runs of that eval (tag
``inspect.run_id``) are looked at, so evals may share an experiment. It works whatever
delivered the writes (the delivery process, the eval's process, a replay), so it needs
no record of them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from e2e_support import demo_task_with, download_json, eval_events
from inspect_ai import Task
from inspect_ai.log import read_eval_log
from inspect_ai.solver import Generate, TaskState, solver
from mlflow_server import MlflowServer

from inspect_mlflow._writer.mlflow_sink import RUN_KEY_TAG


def slow_task(samples: int, delay: float, name: str = "contract") -> Task:
    """The demo task (one tool call, two scorers) with a pause per sample, so that with
    ``max_samples=4`` an eval lasts about ``samples / 4 * delay`` seconds."""

    @solver
    def pause() -> Any:
        async def solve(state: TaskState, generate: Generate) -> TaskState:
            await asyncio.sleep(delay)
            return state

        return solve

    return demo_task_with(pause(), samples, name)


class Chaos:
    """SIGKILLs a server when its access log shows a request, restarts it ``down`` s later.

    ``trigger`` is ``(path suffix, count)``: kill once that many requests whose path ends
    with the suffix were served (``("", 0)``: at once). Runs on a thread of its own; the
    server's log must be unbuffered (``PYTHONUNBUFFERED=1``) to be seen in time.
    """

    def __init__(self, server: MlflowServer, trigger: tuple[str, int], down: float) -> None:
        self.server = server
        self.trigger = trigger
        self.down = down
        self.offset = server.log_size()
        self.events: dict[str, float] = {}
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)

    def __enter__(self) -> Chaos:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(120)

    def _seen(self) -> int:
        suffix, _ = self.trigger
        requests = self.server.requests_since(self.offset)
        return sum(n for (_, path), n in requests.items() if path.endswith(suffix))

    def _run(self) -> None:
        try:
            suffix, count = self.trigger
            while count and self._seen() < count:
                if self._stop.wait(0.02):
                    return
            self.server.kill()
            self.events["killed"] = time.monotonic() - self.started
            time.sleep(self.down)
            self.server.restart()
            self.events["healthy"] = time.monotonic() - self.started
        except BaseException as error:  # reported by the test
            self.error = error


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def assert_matches_log(tracking_uri: str, experiment: str, log: Any) -> None:
    """Everything the eval of ``log`` logs is in the store exactly once (module docstring)."""
    from mlflow import MlflowClient
    from mlflow.tracing.client import TracingClient

    log = read_eval_log(log.location)  # with its samples
    samples = log.samples or []
    n = len(samples)
    assert n > 0
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment} does not exist"
    runs = [
        r
        for r in client.search_runs([exp.experiment_id], max_results=100)
        if r.data.tags.get("inspect.run_id") == log.eval.run_id
    ]
    keys = Counter(r.data.tags.get(RUN_KEY_TAG) for r in runs)
    assert len(runs) == 2 and set(keys.values()) == {1}, f"runs by key: {keys}"
    for run in runs:
        assert run.info.status == "FINISHED", (run.info.run_name, run.info.status)
    [task] = [r for r in runs if r.data.tags.get("inspect.eval_id") == log.eval.eval_id]
    run_id = task.info.run_id

    def steps(key: str) -> list[int]:
        return sorted(m.step for m in client.get_metric_history(run_id, key))

    for key in ("per_sample/match", "per_sample/includes", "per_sample/total_time"):
        assert steps(key) == list(range(n)), f"{key}: {steps(key)}"
    truth = eval_events(log.location)
    assert steps("per_call/model_call") == list(range(truth["model"])), "per_call/model_call"
    assert steps("per_call/tool_call") == list(range(truth["tool"])), "per_call/tool_call"
    assert task.data.metrics["total_samples"] == n

    traces = TracingClient(tracking_uri).search_traces(
        locations=[exp.experiment_id], run_id=run_id, max_results=500
    )
    trace_samples = Counter(t.info.tags.get("inspect.sample_id") for t in traces)
    assert len(traces) == n and set(trace_samples.values()) == {1}, f"{len(traces)} traces"
    scorers = {name for sample in samples for name in (sample.scores or {})}
    for trace in traces:
        names = Counter(a.name for a in trace.info.assessments)
        assert set(names.values()) == {1}, f"an assessment twice: {names}"
        assert scorers <= set(names), f"assessments {names} lack a scorer of {scorers}"

    rows = download_json(client, run_id, "inspect/samples.json")["data"]
    assert len(rows) == n, f"samples.json: {len(rows)} rows"
    scores = download_json(client, run_id, "inspect/sample_scores.json")["data"]
    assert len(scores) == sum(len(s.scores or {}) for s in samples), "sample_scores.json"
    messages = download_json(client, run_id, "inspect/messages.json")["data"]
    assert len(messages) == sum(len(s.messages) for s in samples), "messages.json"
