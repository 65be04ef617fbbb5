"""Running one end-to-end scenario and reading back what reached MLflow.

Shared by the scenario tests: a :class:`Scenario` holds one eval's logs and a client for
its store (a sqlite file in the scenario's directory, or the session's `mlflow server`),
with small readers for runs, metric histories, tables, artifacts and traces.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e_support import new_experiment_name, run_logged
from inspect_ai.log import EvalLog
from inspect_ai.model import ModelOutput, ModelUsage
from mlflow import MlflowClient

from inspect_mlflow._commands.demo import DEMO_MODEL
from inspect_mlflow._inspect.where import WHERE_LOGGER


@dataclass
class Scenario:
    """One eval's result and what reached its store."""

    root: Path
    uri: str
    experiment: str
    logs: list[EvalLog]
    error: BaseException | None
    warnings: list[str]
    store_root: Path | None = None
    """Directory holding the store's database and artifacts (default: ``root``)."""
    client: MlflowClient = field(init=False)
    run_ends: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client = MlflowClient(tracking_uri=self.uri)

    def runs(self) -> list[Any]:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is None:
            return []
        return self.client.search_runs([exp.experiment_id], max_results=1000)

    def run(self, name: str) -> Any:
        [run] = [r for r in self.runs() if r.info.run_name == name]
        return run

    def parents(self) -> list[Any]:
        return [r for r in self.runs() if "mlflow.parentRunId" not in r.data.tags]

    def history(self, run: Any, key: str) -> list[Any]:
        return self.client.get_metric_history(run.info.run_id, key)

    def table(self, run: Any, path: str) -> list[dict[str, Any]]:
        with tempfile.TemporaryDirectory() as tmp:
            local = self.client.download_artifacts(run.info.run_id, path, tmp)
            content = json.loads(Path(local).read_text())
        return [dict(zip(content["columns"], row, strict=True)) for row in content["data"]]

    def artifact_paths(self, run: Any, path: str | None = None) -> list[str]:
        out: list[str] = []
        for info in self.client.list_artifacts(run.info.run_id, path):
            out.extend(self.artifact_paths(run, info.path) if info.is_dir else [info.path])
        return out

    def store_files(self) -> list[Path]:
        """Every file the store wrote: its database and its artifacts."""
        root = self.store_root or self.root
        return [p for p in root.rglob("*") if p.is_file() and p.suffix != ".eval"]

    def traces(self, run: Any) -> list[Any]:
        from mlflow.tracing.client import TracingClient

        return TracingClient(self.uri).search_traces(
            locations=[run.info.experiment_id], run_id=run.info.run_id, max_results=500
        )


@contextlib.contextmanager
def captured_warnings() -> Iterator[list[str]]:
    """Warnings of the package's loggers (values dropped, writes refused, hook errors)."""
    records: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.name == WHERE_LOGGER:
                return  # the eval's "logged to ..." line: information, not a warning
            records.append(record.getMessage())

    package = logging.getLogger("inspect_mlflow")
    handler = _Keep(logging.WARNING)
    level = package.level
    package.addHandler(handler)
    package.setLevel(logging.WARNING)
    try:
        yield records
    finally:
        package.removeHandler(handler)
        package.setLevel(level)


def run_scenario(
    root: Path,
    tasks: Any,
    *,
    uri: str | None = None,
    store_root: Path | None = None,
    catch: tuple[type[BaseException], ...] = (),
    **eval_args: Any,
) -> Scenario:
    """Run one eval with ``root`` as working directory, logging to ``uri``.

    Without ``uri``: a fresh sqlite store under ``root``. ``store_root`` says where a
    server keeps its files (for tests that inspect the bytes it stored).
    """
    uri = uri or f"sqlite:///{root}/mlflow.db"
    experiment = new_experiment_name("scenario")
    cwd = os.getcwd()
    os.chdir(root)  # the sqlite store keeps artifacts under ./mlruns
    logs: list[EvalLog] = []
    error: BaseException | None = None
    try:
        with captured_warnings() as warnings:
            try:
                logs = run_logged(tasks, uri, experiment, log_dir=str(root / "logs"), **eval_args)
            except catch as err:
                error = err
    finally:
        os.chdir(cwd)
    return Scenario(root, uri, experiment, list(logs), error, warnings, store_root)


def mock_output(content: str | None = None, **tool_call: Any) -> ModelOutput:
    """A mock model output (with usage set, so no tokenizer download is needed)."""
    if tool_call:
        out = ModelOutput.for_tool_call(model=DEMO_MODEL, **tool_call)
    else:
        out = ModelOutput.from_content(model=DEMO_MODEL, content=content or "")
    out.usage = ModelUsage(input_tokens=12, output_tokens=6, total_tokens=18)
    return out


def sample_uuids(log: EvalLog) -> set[str]:
    return {s.uuid for s in log.samples or [] if s.uuid}


def assert_steps_unique_and_dense(points: list[Any], n: int, key: str) -> None:
    steps = [p.step for p in points]
    assert sorted(steps) == list(range(n)), f"{key}: steps {sorted(steps)} != 0..{n - 1}"
