"""The delivery contract (docs/reliability.md), end to end: real `mlflow server`, real evals,
the default delivery process.

A server SIGKILLed at each stage of an eval (before its experiment exists, right after
the runs are created, mid-eval, during the run end's uploads, at the runs' closing) and
started again a few seconds later on the same port and store: when ``eval()`` returns,
everything is in MLflow exactly once, compared with Inspect's own log, and no spool file
is left. A server down for a whole eval: the eval ends within the flush timeout plus a
few seconds, the spool message reaches stderr with ``display="none"``, ``inspect-mlflow
replay`` delivers everything and a second replay adds nothing.

The module starts one server of its own (the session's shared one must not be killed);
each test kills it and leaves it running again, and logs to an experiment of its own.
A larger run of the same scenarios: ``benchmarks/restart_faults.py``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from contract_support import Chaos, assert_matches_log, slow_task
from e2e_support import new_experiment_name, run_logged
from mlflow_server import MlflowServer, start_mlflow_server

from inspect_mlflow._commands.cli import main
from inspect_mlflow._writer.spool import list_spool_files

pytestmark = [pytest.mark.e2e, pytest.mark.server]

SAMPLES = 32
DELAY = 0.6  # per sample, 4 at a time: an eval of about 5 s
DOWN = 2.0  # seconds between the kill and the restart (which takes about 10 s more)

MOMENTS = {
    "before-the-experiment": ("", 0),
    "runs-created": ("/runs/create", 2),
    "mid-eval": ("/api/3.0/mlflow/traces", 12),
    "run-end-uploads": ("samples.json", 1),
    "run-end-closing": ("/runs/update", 1),
}
"""Kill moments: the server is killed once its log shows this many such requests."""

CI_MOMENTS = [m for m in MOMENTS if m != "run-end-closing"]
"""What CI runs (about 40 s each): the kill at the closing follows the uploads' by a
moment and passes alike; ``INSPECT_MLFLOW_FULL_MATRIX=1`` runs it too."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    started = start_mlflow_server(
        tmp_path_factory.mktemp("contract-server"), extra_env={"PYTHONUNBUFFERED": "1"}
    )
    try:
        yield started
    finally:
        started.stop()


def _ensure_up(server: MlflowServer) -> None:
    if server.process.poll() is not None:
        server.restart()


@pytest.mark.parametrize(
    "moment", list(MOMENTS) if os.environ.get("INSPECT_MLFLOW_FULL_MATRIX") else CI_MOMENTS
)
def test_a_server_restart_loses_nothing_spools_nothing_duplicates_nothing(
    server: MlflowServer, tmp_path: Path, moment: str
) -> None:
    _ensure_up(server)
    experiment = new_experiment_name(moment)
    spool = tmp_path / "spool"
    with Chaos(server, MOMENTS[moment], DOWN) as chaos:
        [log] = run_logged(
            slow_task(SAMPLES, DELAY),
            server.url,
            experiment,
            log_dir=str(tmp_path / "logs"),
            max_samples=4,
            extra_env={
                "INSPECT_MLFLOW_FLUSH_TIMEOUT": "120",
                "INSPECT_MLFLOW_SPOOL_DIR": str(spool),
            },
        )
    assert chaos.error is None, chaos.error
    assert set(chaos.events) == {"killed", "healthy"}, f"no kill at {moment}: {chaos.events}"
    assert log.status == "success"
    assert list_spool_files(spool) == [], "delivered live: nothing spooled"
    assert_matches_log(server.url, experiment, log)


def test_a_server_down_for_the_whole_eval_costs_the_flush_timeout_then_replay_delivers(
    server: MlflowServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flush_timeout = 4.0
    experiment = new_experiment_name("down")
    spool = tmp_path / "spool"
    server.kill()
    try:
        began = time.monotonic()
        [log] = run_logged(
            slow_task(SAMPLES, DELAY),
            server.url,
            experiment,
            log_dir=str(tmp_path / "logs"),
            max_samples=4,
            extra_env={
                "INSPECT_MLFLOW_FLUSH_TIMEOUT": str(flush_timeout),
                "INSPECT_MLFLOW_SPOOL_DIR": str(spool),
            },
        )
        elapsed = time.monotonic() - began
        assert log.status == "success"
        eval_seconds = SAMPLES / 4 * DELAY
        assert elapsed < eval_seconds + flush_timeout + 6.0, elapsed
        [path] = list_spool_files(spool)
        err = capsys.readouterr().err  # display="none": the message is on stderr all the same
        assert str(path) in err and f"inspect-mlflow replay --spool-dir {spool}" in err, err
    finally:
        server.restart()
    assert main(["replay", "--spool-dir", str(spool)]) == 0
    assert list_spool_files(spool) == []
    assert_matches_log(server.url, experiment, log)
    assert main(["replay", "--spool-dir", str(spool)]) == 0
    assert "nothing to replay" in capsys.readouterr().out
    assert_matches_log(server.url, experiment, log)
