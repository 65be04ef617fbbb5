"""The delivery process SIGKILLed mid-eval (killed, out of memory): the eval's process takes
delivery over for the rest of the run, nothing is lost, and one notice says how many
writes were in flight.

A real eval with the default delivery process, logging to a sqlite file; a solver kills
the delivery process (by its pid) at a sample in the middle. Everything the eval logs,
before and after the kill, must be in MLflow exactly once, compared with Inspect's log.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from contract_support import assert_matches_log
from e2e_support import new_experiment_name, run_logged
from faults_support import captured_logs
from inspect_ai import Task
from inspect_ai.solver import Generate, TaskState, solver

from inspect_mlflow._delivery import remote as _remote
from inspect_mlflow._writer.spool import list_spool_files

pytestmark = [pytest.mark.e2e]

SAMPLES = 32
KILL_AT = 14
DELAY = 0.5


def _hook_session() -> Any:
    from inspect_ai.hooks._hooks import get_all_hooks

    from inspect_mlflow._inspect.hook import MlflowTrackingHook

    hook = next(h for h in get_all_hooks() if isinstance(h, MlflowTrackingHook))
    return hook._session


def killing_task(killed: dict[str, int]) -> Task:
    """The slow demo task whose sample ``KILL_AT`` SIGKILLs the delivery process."""
    import asyncio

    from contract_support import slow_task

    @solver
    def kill_delivery() -> Any:
        async def solve(state: TaskState, generate: Generate) -> TaskState:
            if state.sample_id == KILL_AT:
                process = _remote._process
                assert process is not None and not process.gone
                sid = _hook_session()._sid  # the process may have served earlier evals
                for _ in range(600):  # mid-run: once it has confirmed some of this run's points
                    if process.acked.get(sid):
                        break
                    await asyncio.sleep(0.05)
                os.kill(process.pid, signal.SIGKILL)
                killed["pid"] = process.pid
                await asyncio.sleep(0.2)
            return state

        return solve

    base = slow_task(SAMPLES, DELAY, name="takeover")
    return Task(
        name="takeover",
        dataset=base.dataset,
        solver=[kill_delivery(), *base.solver],
        scorer=base.scorer,
    )


def test_a_killed_delivery_process_is_taken_over_and_nothing_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a sqlite store's artifacts go under ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = new_experiment_name("takeover")
    killed: dict[str, int] = {}
    with captured_logs() as logs:
        [log] = run_logged(
            killing_task(killed),
            uri,
            experiment,
            log_dir=str(tmp_path / "logs"),
            max_samples=4,
            extra_env={
                "INSPECT_MLFLOW_DELIVERY": "process",
                "INSPECT_MLFLOW_SPOOL_DIR": str(tmp_path / "spool"),
                "INSPECT_MLFLOW_FLUSH_TIMEOUT": "60",
            },
        )
    assert log.status == "success"
    assert "pid" in killed, "the delivery process was not killed"
    said = [m for m in logs.messages() if "delivers the rest of this run" in m]
    assert len(said) == 1, logs.messages()
    found = re.search(
        r"(\d+) write\(s\) of (\d+) point\(s\) it had not confirmed \(of (\d+) sent\)", said[0]
    )
    assert found, said[0]
    writes, unconfirmed, sent = (int(g) for g in found.groups())
    assert 0 < unconfirmed < sent, said[0]  # the points delivered before were confirmed
    assert "none lost" in said[0]
    assert "exited with code -9" in said[0], said[0]
    assert not [m for m in logs.messages() if "is lost" in m], logs.messages()
    assert list_spool_files(tmp_path / "spool") == []
    assert_matches_log(uri, experiment, log)
