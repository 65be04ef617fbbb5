"""`inspect-mlflow import`: an eval imported from its log equals the same eval logged live.

The module fixture runs the offline demo eval once with the hook logging to experiment
"live" (one sample at a time, so the completion order is the dataset order), then imports
its ``.eval`` file into experiment "imported" of the same sqlite store with the command
line. Every test reads both back from MLflow; only ids and wall-clock times may differ.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import download_json, new_experiment_name, run_logged, runs_by_name
from inspect_ai.log import read_eval_log
from mlflow import MlflowClient
from mlflow.tracing.client import TracingClient
from rich.console import Console

from inspect_mlflow._commands.cli import build_parser, main
from inspect_mlflow._commands.demo import demo_task
from inspect_mlflow._commands.import_command import run_import_command
from inspect_mlflow._writer.mlflow_sink import MlflowSink

pytestmark = pytest.mark.e2e

SAMPLES, EPOCHS = 3, 2


@contextlib.contextmanager
def in_dir(path: Path) -> Iterator[None]:
    """The sqlite store puts a new experiment's artifacts under ./mlruns."""
    cwd = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(cwd)


def run_cli(root: Path, *args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with in_dir(root), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue() + err.getvalue()


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory, _sqlite_template: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("import")
    shutil.copyfile(_sqlite_template, root / "mlflow.db")  # already migrated: saves seconds
    uri = f"sqlite:///{root}/mlflow.db"
    live, imported = new_experiment_name("live"), new_experiment_name("imported")
    with in_dir(root):
        [log] = run_logged(
            demo_task(SAMPLES),
            uri,
            live,
            log_dir=str(root / "logs"),
            max_samples=1,
            epochs=EPOCHS,
        )
    assert log.status == "success"
    before = time.time() * 1000
    code, out = run_cli(
        root, "import", str(root / "logs"), "--tracking-uri", uri, "--experiment", imported
    )
    client = MlflowClient(tracking_uri=uri)
    return {
        "root": root,
        "uri": uri,
        "client": client,
        "log": read_eval_log(log.location),
        "code": code,
        "out": out,
        "before_import_ms": before,
        "live": runs_by_name(client, live),
        "imported": runs_by_name(client, imported),
        "experiment": imported,
    }


def pairs(both: dict[str, Any]) -> list[tuple[Any, Any]]:
    assert set(both["live"]) == set(both["imported"])
    return [(both["live"][name], both["imported"][name]) for name in sorted(both["live"])]


def test_the_command_imports_the_log(both: dict[str, Any]) -> None:
    assert both["code"] == 0, both["out"]
    assert "1 imported, 0 skipped, 0 failed" in both["out"]
    assert len(both["imported"]) == 2  # the eval's parent run and its task run


def test_same_runs_tags_params_and_status(both: dict[str, Any]) -> None:
    by_id = {run.info.run_id: name for name, run in both["imported"].items()}
    live_by_id = {run.info.run_id: name for name, run in both["live"].items()}
    for live, imported in pairs(both):
        assert imported.info.status == live.info.status == "FINISHED"
        live_tags, tags = dict(live.data.tags), dict(imported.data.tags)
        parent = tags.pop("mlflow.parentRunId", None)
        live_parent = live_tags.pop("mlflow.parentRunId", None)
        assert (parent and by_id[parent]) == (live_parent and live_by_id[live_parent])
        assert tags == live_tags
        assert imported.data.params == live.data.params
    task = both["imported"]["demo_addition"]
    assert task.data.tags["inspect.eval_id"] == both["log"].eval.eval_id
    assert task.data.params["dataset.samples"] == str(SAMPLES)


def test_same_metrics_values_and_steps(both: dict[str, Any]) -> None:
    client = both["client"]
    for live, imported in pairs(both):
        assert set(imported.data.metrics) == set(live.data.metrics)
        for key in live.data.metrics:
            want = [(m.step, m.value) for m in client.get_metric_history(live.info.run_id, key)]
            got = [(m.step, m.value) for m in client.get_metric_history(imported.info.run_id, key)]
            assert sorted(got) == sorted(want), key
    task = both["imported"]["demo_addition"]
    steps = [m.step for m in client.get_metric_history(task.info.run_id, "per_sample/match")]
    assert sorted(steps) == list(range(SAMPLES * EPOCHS))


def test_times_come_from_the_log(both: dict[str, Any]) -> None:
    log, client = both["log"], both["client"]
    task = both["imported"]["demo_addition"]
    # Inspect's creation of the task (whole seconds, like the log's start, a second
    # before it at most): the run is created then, before the log has its start.
    created = int(_ms(log.eval.created))
    assert task.info.start_time == created
    assert 0 <= int(_ms(log.stats.started_at)) - created <= 1000
    # The log's end (whole seconds) or its last sample's end, whichever is later.
    last = max(int(_ms(s.completed_at)) for s in log.samples)
    assert task.info.end_time == max(int(_ms(log.stats.completed_at)), last)
    assert task.info.end_time < both["before_import_ms"]
    history = client.get_metric_history(task.info.run_id, "per_sample/total_time")
    ends = sorted(int(_ms(s.completed_at)) for s in log.samples)
    assert sorted(m.timestamp for m in history) == ends


def _ms(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp() * 1000


def _files(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    out: list[str] = []
    for item in client.list_artifacts(run_id, path):
        out.extend(_files(client, run_id, item.path) if item.is_dir else [item.path])
    return sorted(out)


def test_same_tables_and_artifacts(both: dict[str, Any]) -> None:
    client = both["client"]
    live, imported = both["live"]["demo_addition"], both["imported"]["demo_addition"]
    files = _files(client, live.info.run_id)
    assert files == _files(client, imported.info.run_id)
    assert {"inspect/samples.json", "eval_logs/demo_addition.json"} <= set(files)
    for path in files:
        want = download_json(client, live.info.run_id, path)
        assert download_json(client, imported.info.run_id, path) == want, path
    samples = download_json(client, imported.info.run_id, "inspect/samples.json")
    assert len(samples["data"]) == SAMPLES * EPOCHS


def test_same_traces_and_feedback(both: dict[str, Any]) -> None:
    tracing = TracingClient(both["uri"])

    def summary(run: Any) -> list[tuple[Any, ...]]:
        traces = tracing.search_traces(locations=[run.info.experiment_id], run_id=run.info.run_id)
        return sorted(
            (
                t.info.request_time,
                len(t.data.spans),
                tuple(sorted((a.name, a.value) for a in t.info.assessments)),
            )
            for t in traces
        )

    live = summary(both["live"]["demo_addition"])
    assert len(live) == SAMPLES * EPOCHS
    # Two scores and the target (an expectation) per trace.
    assert all(len(assessments) == 3 for _, _, assessments in live)
    assert summary(both["imported"]["demo_addition"]) == live


def test_the_sink_finds_runs_by_logical_key(both: dict[str, Any]) -> None:
    key = f"task:{both['log'].eval.eval_id}"
    sink = MlflowSink(both["uri"], both["experiment"])
    found = sink.find_runs([key, "task:no-such-eval"])
    assert list(found) == [key]
    assert found[key].info.run_id == both["imported"]["demo_addition"].info.run_id
    assert MlflowSink(both["uri"], "no-such-experiment").find_runs([key]) == {}


def test_importing_again_creates_nothing_and_force_does(both: dict[str, Any]) -> None:
    root, uri = both["root"], both["uri"]
    code, out = run_cli(
        root,
        "import",
        str(root / "logs"),
        "--tracking-uri",
        uri,
        "--experiment",
        both["experiment"],
    )
    assert code == 0 and "0 imported, 1 skipped, 0 failed" in out
    assert "already in experiment" in out
    assert len(runs_by_name(both["client"], both["experiment"])) == 2

    other = new_experiment_name("forced")
    args = ("import", str(root / "logs"), "--tracking-uri", uri, "--experiment", other)
    assert run_cli(root, *args)[0] == 0
    code, out = run_cli(root, *args, "--force")
    assert code == 0 and "1 imported, 0 skipped" in out
    runs = both["client"].search_runs([both["client"].get_experiment_by_name(other).experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(2 * list(both["imported"]))


def test_a_directory_with_a_corrupt_log_imports_the_others(
    both: dict[str, Any], tmp_path: Path
) -> None:
    [good] = (both["root"] / "logs").glob("*.eval")
    logs = tmp_path / "logs"
    (logs / "nested").mkdir(parents=True)
    shutil.copy(good, logs / "nested" / good.name)
    truncated = logs / "2024-01-01T00-00-00-00-00_truncated_abc.eval"
    truncated.write_bytes(good.read_bytes()[:2000])
    garbage = logs / "2024-01-02T00-00-00-00-00_garbage_def.json"
    garbage.write_text('{"not": "a log"}')
    (logs / "logs.json").write_text("{}")  # a listing, not a log: ignored
    (logs / "notes.txt").write_text("not a log")

    experiment = new_experiment_name("corrupt")
    args = build_parser().parse_args(
        ["import", str(logs), "--tracking-uri", both["uri"], "--experiment", experiment]
    )
    shown = io.StringIO()
    console = Console(file=shown, force_terminal=True, width=200)
    out = io.StringIO()
    with in_dir(both["root"]), contextlib.redirect_stdout(out):
        code = run_import_command(args, console=console)
    summary = out.getvalue()
    assert code == 1
    assert "1 imported, 0 skipped, 2 failed" in summary
    assert f"failed: {truncated}: cannot read the log" in summary
    assert f"failed: {garbage}: cannot read the log" in summary
    assert "logs.json" not in summary and "notes.txt" not in summary
    # The progress bar counts logs and outcomes.
    progress = shown.getvalue()
    assert "3/3" in progress and "1 imported, 0 skipped, 2 failed" in progress
    runs = runs_by_name(both["client"], experiment)
    assert sorted(runs) == sorted(both["imported"])
    assert runs["demo_addition"].info.status == "FINISHED"
