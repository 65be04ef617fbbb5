"""The tracking server is SIGKILLed in the middle of an eval and restarted on the same port
and store: every write lands, none twice.

One dedicated `mlflow server` (the shared one must not be killed). A solver kills it at
the third sample, once the writer has delivered what came before (so the kill finds the
writer between batches, the usual case: the writer is idle most of the time), and starts
it again at the fifth. In between, the writer's health check fails fast and it backs
off; once the server answers again it delivers the rest, live, with no spool needed.
The case of a kill *during* a send is in test_faults_replay.py (an abandoned call).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from e2e_support import new_experiment_name, run_logged
from faults_support import assert_landed_exactly, captured_logs, recorded_emits
from inspect_ai import Task
from inspect_ai.solver import Generate, TaskState, generate, solver, use_tools
from mlflow_server import start_mlflow_server

from inspect_mlflow._commands.demo import add_tool, demo_task
from inspect_mlflow._inspect.hook import MlflowTrackingHook
from inspect_mlflow._writer.spool import list_spool_files

pytestmark = [pytest.mark.e2e, pytest.mark.server]

SAMPLES = 8


def _session() -> Any:
    from inspect_ai.hooks._hooks import get_all_hooks

    hook = next(h for h in get_all_hooks() if isinstance(h, MlflowTrackingHook))
    return hook._session


def _settle(session: Any, timeout: float = 30.0) -> None:
    """Wait until the writer delivered everything the hook was given so far."""
    worker = getattr(session, "_worker", None)
    if worker is not None:
        worker.drain(timeout)
    assert session.writer.flush(timeout), "the writer did not settle before the kill"


def server_chaos(server: Any, events: dict[str, float]) -> Any:
    @solver
    def chaos() -> Any:
        async def solve(state: TaskState, generate: Generate) -> TaskState:
            if state.sample_id == 3:
                await asyncio.to_thread(_settle, _session())
                server.kill()
                events["killed"] = time.monotonic()
            elif state.sample_id == 5:
                await asyncio.to_thread(server.restart)
                events["restarted"] = time.monotonic()
            return state

        return solve

    return chaos()


def test_kill_and_restart_mid_eval_loses_nothing_and_duplicates_nothing(tmp_path):
    server = start_mlflow_server(tmp_path / "server")
    try:
        experiment = new_experiment_name("kill")
        events: dict[str, float] = {}
        base = demo_task(SAMPLES, name="survivor")
        task = Task(
            name="survivor",
            dataset=base.dataset,
            solver=[server_chaos(server, events), use_tools(add_tool()), generate()],
            scorer=base.scorer,
        )
        with recorded_emits() as emitted, captured_logs() as logs:
            [log] = run_logged(
                task,
                server.url,
                experiment,
                log_dir=str(tmp_path / "logs"),
                max_samples=1,
                extra_env={
                    "INSPECT_MLFLOW_FLUSH_TIMEOUT": "60",
                    "INSPECT_MLFLOW_SPOOL_DIR": str(tmp_path / "spool"),
                },
            )
        assert log.status == "success"
        assert set(events) == {"killed", "restarted"}, "the server went down and came back"
        assert server.process.poll() is None
        assert list_spool_files(tmp_path / "spool") == [], "delivered live, nothing spooled"
        assert not [m for m in logs.messages() if "replay" in m]
        assert_landed_exactly(server.url, experiment, emitted)
        # The samples logged while the server was down are there too.
        assert sum(1 for op in emitted if type(op).__name__ == "LogTrace") == SAMPLES
    finally:
        server.stop()
