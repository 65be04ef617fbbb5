"""Shared helpers for end-to-end tests: run real offline evals with the hook on, read back.

The hook reads its settings from the environment at each run, so a test points it at a
store by setting ``MLFLOW_TRACKING_URI`` for the duration of one eval.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from inspect_ai import Task
from inspect_ai import eval as inspect_eval
from inspect_ai.log import read_eval_log
from inspect_ai.solver import Generate, TaskState, generate, solver, use_tools

from inspect_mlflow._commands.demo import demo_model, demo_task


@contextlib.contextmanager
def env(**values: str | None) -> Iterator[None]:
    """Set (or unset, with None) environment variables for the duration of the block."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def child_env(store: Any, **extra: str) -> dict[str, str]:
    """This process's environment for a child eval logging to ``store``, default delivery."""
    values = {
        **os.environ,
        "MLFLOW_TRACKING_URI": store.tracking_uri,
        "MLFLOW_EXPERIMENT_NAME": store.experiment_name,
        "INSPECT_MLFLOW_AUTOLOG_ENABLED": "false",
        **extra,
    }
    for name in ("INSPECT_MLFLOW_TRACKING_URI", "INSPECT_MLFLOW_DELIVERY"):
        values.pop(name, None)
    return values


def new_experiment_name(prefix: str = "e2e") -> str:
    """A unique experiment name so tests sharing one store never see each other's runs."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def run_logged(
    tasks: Any,
    tracking_uri: str,
    experiment: str,
    *,
    log_dir: str | None = None,
    extra_env: dict[str, str | None] | None = None,
    **eval_args: Any,
) -> list[Any]:
    """Run ``tasks`` with the hook logging to ``tracking_uri`` / ``experiment``."""
    log_dir = log_dir or tempfile.mkdtemp(prefix="inspect-e2e-")
    settings: dict[str, str | None] = {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_EXPERIMENT_NAME": experiment,
        "INSPECT_MLFLOW_AUTOLOG_ENABLED": "false",
    }
    settings.update(extra_env or {})
    eval_args.setdefault("model", demo_model())
    with env(**settings):
        return inspect_eval(tasks, log_dir=log_dir, display="none", **eval_args)


def failing_task(fail_ids: set[int], samples: int = 5, name: str = "flaky_addition") -> Task:
    """The demo task with a solver that raises for the given sample ids."""

    @solver
    def explode() -> Any:
        async def solve(state: TaskState, generate: Generate) -> TaskState:
            if state.sample_id in fail_ids:
                raise RuntimeError(f"planned failure for sample {state.sample_id}")
            return state

        return solve

    return demo_task_with(explode(), samples, name)


def demo_task_with(first: Any, samples: int, name: str) -> Task:
    """The demo task (one tool call, two scorers) with ``first`` as its first solver."""
    from inspect_mlflow._commands.demo import add_tool

    base = demo_task(samples, name=name)
    return Task(
        name=name,
        dataset=base.dataset,
        solver=[first, use_tools(add_tool()), generate()],
        scorer=base.scorer,
    )


def eval_events(log_location: str) -> dict[str, int]:
    """Count model and tool events per kind in an ``.eval`` log (the ground truth)."""
    log = read_eval_log(log_location)
    counts = {"model": 0, "tool": 0, "tool_error": 0}
    for sample in log.samples or []:
        for event in sample.events:
            if event.event == "model":
                counts["model"] += 1
            elif event.event == "tool":
                counts["tool"] += 1
                counts["tool_error"] += 1 if event.error else 0
    return counts


def download_json(client: Any, run_id: str, path: str) -> Any:
    """Download one JSON artifact of a run and parse it."""
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(run_id, path, tmp)
        return json.loads(Path(local).read_text())


def runs_by_name(client: Any, experiment: str) -> dict[str, Any]:
    """All runs of an experiment, by run name."""
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment} was not created"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return {r.info.run_name: r for r in runs}


def eval_run_name(logs: Any) -> str:
    """The default mapping's name of the eval run of ``logs``: tasks · models · start.

    The start is the first task's creation on this machine's clock (``%m-%d %H:%M``).
    """
    ordered = sorted(logs, key=lambda log: log.eval.created)
    tasks = ", ".join(dict.fromkeys(log.eval.task for log in ordered))
    models = ", ".join(dict.fromkeys(log.eval.model for log in ordered))
    start = datetime.fromisoformat(ordered[0].eval.created).astimezone()
    return f"{tasks} · {models} · {start.strftime('%m-%d %H:%M')}"
