"""A tracking server that is down for a whole eval: the eval pays at most the bounded wait,
everything is spooled, and `inspect-mlflow replay` lands all of it exactly once.

One eval against a port where nothing listens (module fixture); then a real `mlflow
server` is started on that very port and the spool is replayed, twice.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from e2e_support import new_experiment_name, run_logged
from faults_support import assert_landed_exactly, captured_logs, recorded_emits
from mlflow_server import free_port, start_mlflow_server

from inspect_mlflow._commands.cli import main
from inspect_mlflow._commands.demo import demo_task
from inspect_mlflow._writer.spool import list_spool_files, read_spool

pytestmark = [pytest.mark.e2e, pytest.mark.server]

FLUSH_TIMEOUT = 3.0
SAMPLES = 6


@pytest.fixture(scope="module")
def down(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("down")
    spool_dir = root / "spool"
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    experiment = new_experiment_name("down")

    started = time.monotonic()
    run_logged(demo_task(SAMPLES), "", experiment, log_dir=str(root / "logs-off"))
    baseline = time.monotonic() - started

    with captured_logs() as logs, recorded_emits() as emitted:
        started = time.monotonic()
        result = run_logged(
            demo_task(SAMPLES),
            uri,
            experiment,
            log_dir=str(root / "logs"),
            extra_env={
                "INSPECT_MLFLOW_FLUSH_TIMEOUT": str(FLUSH_TIMEOUT),
                "INSPECT_MLFLOW_SPOOL_DIR": str(spool_dir),
            },
        )
        elapsed = time.monotonic() - started
    return {
        "root": root,
        "port": port,
        "uri": uri,
        "experiment": experiment,
        "spool_dir": spool_dir,
        "baseline": baseline,
        "elapsed": elapsed,
        "status": result[0].status,
        "warnings": logs.messages(logging.WARNING),
        "emitted": list(emitted),
    }


def test_a_down_server_costs_the_eval_at_most_the_bounded_wait(down):
    assert down["status"] == "success"
    # The flush waits FLUSH_TIMEOUT; spooling and a short grace come on top. Without the
    # bound, MLflow's own retries hold one call for about four minutes.
    assert down["elapsed"] < down["baseline"] + FLUSH_TIMEOUT + 3.0, down


def test_everything_is_spooled_and_one_message_says_how_much_and_how_to_deliver(down):
    [path] = list_spool_files(down["spool_dir"])
    spool = read_spool(path)
    assert len(spool.ops) == len(down["emitted"])
    spool_messages = [m for m in down["warnings"] if "inspect-mlflow replay" in m]
    assert len(spool_messages) == 1, down["warnings"]
    [message] = spool_messages
    assert f"{len(spool.ops)} write operation(s)" in message
    assert str(path) in message and f"--spool-dir {down['spool_dir']}" in message
    assert f"{FLUSH_TIMEOUT:g}s (INSPECT_MLFLOW_FLUSH_TIMEOUT)" in message


def test_the_spool_is_readable_only_by_its_owner(down):
    [path] = list_spool_files(down["spool_dir"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(down["spool_dir"].stat().st_mode) == 0o700
    assert path.stat().st_uid == os.getuid()


def test_replay_lands_everything_exactly_once_and_twice_changes_nothing(down, capsys):
    server = start_mlflow_server(down["root"] / "server", port=down["port"])
    try:
        [path] = list_spool_files(down["spool_dir"])
        ops = read_spool(path).ops
        assert main(["replay", "--spool-dir", str(down["spool_dir"])]) == 0
        out = capsys.readouterr().out
        assert f"delivered {len(ops)} operation(s); file removed" in out
        assert list_spool_files(down["spool_dir"]) == []
        assert_landed_exactly(down["uri"], down["experiment"], down["emitted"])

        assert main(["replay", "--spool-dir", str(down["spool_dir"])]) == 0
        assert "nothing to replay" in capsys.readouterr().out
        assert_landed_exactly(down["uri"], down["experiment"], down["emitted"])
    finally:
        server.stop()


def test_replay_with_the_server_still_down_keeps_the_file(tmp_path: Path, capsys):
    from inspect_mlflow._operations import OpenRun
    from inspect_mlflow._writer.spool import SpoolWriter

    uri = f"http://127.0.0.1:{free_port()}"
    writer = SpoolWriter(tmp_path, tracking_uri=uri, experiment_name="x")
    writer.append([OpenRun(run="eval:a", kind="eval", name="a", parent=None)])
    writer.close()
    started = time.monotonic()
    assert main(["replay", "--spool-dir", str(tmp_path)]) == 1
    assert time.monotonic() - started < 10, "no MLflow retry storm against a dead server"
    assert "unreachable" in capsys.readouterr().out
    assert len(read_spool(writer.path).ops) == 1
