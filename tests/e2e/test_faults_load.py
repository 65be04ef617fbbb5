"""Load: two evals in two processes logging to one server at once, and ten evals in a row
in one process. Each must get exactly its own runs and data: no run shared or duplicated,
no point, row or trace of one eval in another's run.

Each eval records the operations its hook emitted; the store must hold exactly their
union (``assert_landed_exactly``), and each task run exactly its own samples.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from e2e_support import download_json, new_experiment_name, run_logged
from faults_support import assert_landed_exactly, recorded_emits, runs_by_key

from inspect_mlflow._commands.demo import demo_task
from inspect_mlflow._operations import AppendRows, OpenRun, Operation
from inspect_mlflow._writer.spool import decode_op, list_spool_files

pytestmark = [pytest.mark.e2e]

TESTS = Path(__file__).resolve().parents[1] / "support"

CHILD = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {tests!r})
    from e2e_support import run_logged
    from faults_support import recorded_emits
    from inspect_mlflow._commands.demo import demo_task
    from inspect_mlflow._writer.spool import encode_op

    with recorded_emits() as ops:
        [log] = run_logged(
            demo_task({samples}, name={name!r}),
            {uri!r},
            {experiment!r},
            log_dir={log_dir!r},
            max_samples=2,
            extra_env={{"INSPECT_MLFLOW_SPOOL_DIR": {spool!r}}},
        )
    with open({out!r}, "w") as f:
        json.dump({{"status": log.status, "ops": [encode_op(op) for op in ops]}}, f)
    """
)


def task_runs_by_name(ops: list[Operation]) -> dict[str, str]:
    return {op.name or "": op.run for op in ops if isinstance(op, OpenRun) and op.kind == "task"}


def rows_in(ops: list[Operation], run: str, path: str = "inspect/samples.json") -> int:
    return sum(
        len(op.rows)
        for op in ops
        if isinstance(op, AppendRows) and op.run == run and op.path == path
    )


@pytest.mark.server
def test_two_processes_at_once_each_get_exactly_their_own_runs(mlflow_server, tmp_path):
    experiment = new_experiment_name("two-procs")
    children: list[tuple[subprocess.Popen[bytes], Path, int, str]] = []
    for name, samples in (("left_eval", 5), ("right_eval", 7)):
        out = tmp_path / f"{name}.json"
        script = CHILD.format(
            tests=str(TESTS),
            samples=samples,
            name=name,
            uri=mlflow_server.url,
            experiment=experiment,
            log_dir=str(tmp_path / f"logs-{name}"),
            spool=str(tmp_path / "spool"),
            out=str(out),
        )
        process = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        children.append((process, out, samples, name))
    everything: list[Operation] = []
    for process, out, samples, name in children:
        output, _ = process.communicate(timeout=240)
        assert process.returncode == 0, output.decode(errors="replace")[-3000:]
        result = json.loads(out.read_text())
        assert result["status"] == "success"
        ops = [decode_op(record) for record in result["ops"]]
        [task_run] = [run for task, run in task_runs_by_name(ops).items() if task == name]
        assert rows_in(ops, task_run) == samples
        everything += ops
    assert list_spool_files(tmp_path / "spool") == []
    assert_landed_exactly(mlflow_server.url, experiment, everything)
    runs = runs_by_key(_client(mlflow_server.url), experiment)
    assert len(runs) == 4, "one eval run and one task run per process"
    for _, _, samples, name in children:
        [task] = [found[0] for found in runs.values() if found[0].info.run_name == name]
        table = download_json(_client(mlflow_server.url), task.info.run_id, "inspect/samples.json")
        assert len(table["data"]) == samples, f"{name} holds its own samples only"


def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_ten_evals_in_a_row_in_one_process_each_get_their_own_runs(sqlite_store, tmp_path):
    everything: list[Operation] = []
    expected: dict[str, int] = {}
    for i in range(10):
        samples = 2 + i % 3
        name = f"row_{i}"
        with recorded_emits() as ops:
            [log] = run_logged(
                demo_task(samples, name=name),
                sqlite_store.tracking_uri,
                sqlite_store.experiment_name,
                log_dir=str(tmp_path / f"logs-{i}"),
                max_samples=samples,
                extra_env={"INSPECT_MLFLOW_SPOOL_DIR": str(tmp_path / "spool")},
            )
        assert log.status == "success"
        runs = task_runs_by_name(ops)
        assert list(runs) == [name], "an eval's writes name its own task run only"
        assert rows_in(ops, runs[name]) == samples
        expected[name] = samples
        everything += ops
    assert list_spool_files(tmp_path / "spool") == []
    assert_landed_exactly(sqlite_store.tracking_uri, sqlite_store.experiment_name, everything)
    client = sqlite_store.client()
    runs = runs_by_key(client, sqlite_store.experiment_name)
    assert len(runs) == 20
    by_name = {found[0].info.run_name: found[0] for found in runs.values()}
    for name, samples in expected.items():
        table = download_json(client, by_name[name].info.run_id, "inspect/samples.json")
        assert len(table["data"]) == samples
