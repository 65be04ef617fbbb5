"""Delivery in a separate process (the default): what the eval's process keeps, and failures.

Real evals (mock model) and real sqlite stores; the delivery process is the real one,
except where a test makes it fail to start on purpose.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from e2e_support import child_env, download_json, new_experiment_name, run_logged, runs_by_name
from inspect_ai import Task
from inspect_ai.scorer import includes, match
from inspect_ai.solver import Generate, TaskState, generate, solver, use_tools

from inspect_mlflow._commands.demo import add_tool, demo_task
from inspect_mlflow._delivery import remote as _remote

pytestmark = pytest.mark.e2e

_EVAL_IN_A_FRESH_PROCESS = r"""
import sys
from inspect_ai import eval
from inspect_mlflow._commands.demo import demo_model, demo_task

logs = eval(demo_task(6, name="fresh"), model=demo_model(), log_dir=sys.argv[1], display="none")
print("status:", logs[0].status)
print("mlflow imported:", "mlflow" in sys.modules)
"""


def _eval_script(script: str, store: Any, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (an eval) in a fresh process logging to ``store``."""
    return subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "logs")],
        env=child_env(store),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_eval_process_never_imports_mlflow_and_everything_lands(
    sqlite_store: Any, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    done = _eval_script(_EVAL_IN_A_FRESH_PROCESS, sqlite_store, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "status: success" in done.stdout
    assert "mlflow imported: False" in done.stdout
    client = MlflowClient(sqlite_store.tracking_uri)
    runs = runs_by_name(client, sqlite_store.experiment_name)
    task_run = runs["fresh"]
    assert task_run.info.status == "FINISHED"
    assert task_run.data.metrics["total_samples"] == 6
    traces = client.search_traces(
        locations=[task_run.info.experiment_id], run_id=task_run.info.run_id
    )
    assert len(traces) == 6
    scores = [a for t in traces for a in t.info.assessments if a.name in {"match", "includes"}]
    assert len(scores) == 12  # two scores per sample (the target rides along too)


@pytest.fixture
def fresh_delivery(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start each test with no delivery process (a test may break the next one's start)."""
    monkeypatch.setattr(_remote, "_process", None)


def test_a_delivery_process_that_cannot_start_falls_back_to_this_process(
    sqlite_store: Any,
    fresh_delivery: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from mlflow import MlflowClient

    monkeypatch.setattr(_remote, "COMMAND", [sys.executable, "-c", "import sys; sys.exit(3)"])
    experiment = new_experiment_name("fallback")
    with caplog.at_level(logging.WARNING, logger="inspect_mlflow"):
        logs = run_logged(
            demo_task(4, name="fallback"),
            sqlite_store.tracking_uri,
            experiment,
            extra_env={"INSPECT_MLFLOW_DELIVERY": None},
        )
    assert logs[0].status == "success"
    assert "the delivery process did not start" in caplog.text
    assert "exited with code 3" in caplog.text
    task_run = runs_by_name(MlflowClient(sqlite_store.tracking_uri), experiment)["fallback"]
    assert task_run.info.status == "FINISHED"
    assert task_run.data.metrics["total_samples"] == 4


def _hook_session() -> Any:
    from inspect_ai.hooks._hooks import get_all_hooks

    from inspect_mlflow._inspect.hook import MlflowTrackingHook

    hook = next(h for h in get_all_hooks() if isinstance(h, MlflowTrackingHook))
    return hook._session


def _killer(at_sample: int) -> Any:
    @solver
    def kill_delivery() -> Any:
        async def solve(state: TaskState, generate: Generate) -> TaskState:
            if state.sample_id == at_sample:
                session = _hook_session()
                for _ in range(600):  # the session is open there once it has a process
                    if session._process is not None:
                        break
                    await asyncio.sleep(0.05)
                process = session._process
                assert process is not None, "the delivery process never opened the session"
                os.kill(process.pid, signal.SIGKILL)
                await asyncio.sleep(0.5)
            return state

        return solve

    return kill_delivery()


def test_a_delivery_process_killed_mid_eval_is_said_and_never_breaks_the_eval(
    sqlite_store: Any, fresh_delivery: None, caplog: pytest.LogCaptureFixture
) -> None:
    demo = demo_task(6, name="killed")
    task = Task(
        name="killed",
        dataset=demo.dataset,
        solver=[_killer(3), use_tools(add_tool()), generate()],
        scorer=[match(), includes()],
    )
    with caplog.at_level(logging.WARNING, logger="inspect_mlflow"):
        logs = run_logged(
            task,
            sqlite_store.tracking_uri,
            new_experiment_name("killed"),
            extra_env={"INSPECT_MLFLOW_DELIVERY": None, "INSPECT_MLFLOW_FLUSH_TIMEOUT": "5"},
        )
    assert logs[0].status == "success"
    assert "the delivery process exited with code -9" in caplog.text
    # The eval's process takes over (test_faults_delivery_kill.py checks what landed).
    assert "delivers the rest of this run" in caplog.text
    assert "is lost" not in caplog.text
    # the next run starts a new delivery process
    assert _remote._process is not None and _remote._process.gone


@pytest.mark.server
def test_a_down_server_is_spooled_by_the_delivery_process_and_said_here(
    tmp_path: Path, fresh_delivery: None
) -> None:
    from faults_support import captured_logs
    from mlflow_server import free_port

    from inspect_mlflow._writer.spool import list_spool_files, read_spool

    spool_dir = tmp_path / "spool"
    with captured_logs() as logs:
        [log] = run_logged(
            demo_task(4, name="down"),
            f"http://127.0.0.1:{free_port()}",
            new_experiment_name("down"),
            extra_env={
                "INSPECT_MLFLOW_DELIVERY": None,
                "INSPECT_MLFLOW_FLUSH_TIMEOUT": "3",
                "INSPECT_MLFLOW_SPOOL_DIR": str(spool_dir),
            },
        )
    assert log.status == "success"
    [path] = list_spool_files(spool_dir)
    spool = read_spool(path)
    opened = [op for op in spool.ops if type(op).__name__ == "OpenRun"]
    assert len(opened) == 2, "the eval run and the task run, kept for replay"
    said = [m for m in logs.messages(logging.WARNING) if "inspect-mlflow replay" in m]
    assert len(said) == 1 and f"{len(spool.ops)} write operation(s)" in said[0]


def test_the_delivery_process_starts_when_the_hook_is_enabled_before_any_point(
    sqlite_store: Any, fresh_delivery: None
) -> None:
    import time

    from e2e_support import env

    from inspect_mlflow._inspect.hook import MlflowTrackingHook

    hook = MlflowTrackingHook()
    with env(MLFLOW_TRACKING_URI=sqlite_store.tracking_uri, INSPECT_MLFLOW_DELIVERY=None):
        assert hook.enabled()
    deadline = time.monotonic() + 30
    while _remote._process is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process = _remote._process
    assert process is not None and not process.gone
    assert hook._session is None, "no session before the first lifecycle point"
    assert process._popen.poll() is None, "running, waiting for its first session"
    assert "inspect_mlflow._delivery.process" in process._popen.args


def test_a_ctrl_c_at_the_terminal_does_not_reach_the_delivery_process(
    sqlite_store: Any, fresh_delivery: None
) -> None:
    import time

    logs = run_logged(
        demo_task(2, name="alive"),
        sqlite_store.tracking_uri,
        new_experiment_name("alive"),
        extra_env={"INSPECT_MLFLOW_DELIVERY": None},
    )
    assert logs[0].status == "success"
    process = _remote._process
    assert process is not None and not process.gone
    # A terminal sends SIGINT to its foreground process group: not the delivery's.
    assert os.getpgid(process.pid) != os.getpgid(0)
    os.kill(process.pid, signal.SIGINT)  # and sent to it directly, it is ignored
    time.sleep(1.0)
    assert process._popen.poll() is None and not process.gone


_EVAL_KILLED_AT_SAMPLE_4 = r"""
import asyncio, os, signal, sys
from inspect_ai import Task, eval
from inspect_ai.scorer import includes, match
from inspect_ai.solver import generate, solver, use_tools
from inspect_mlflow._commands.demo import add_tool, demo_model, demo_task

@solver
def die_at_4():
    async def solve(state, generate):
        if state.sample_id == 4:
            await asyncio.sleep(0.5)  # the hook's feeder sends what samples 1-3 left
            os.kill(os.getpid(), signal.SIGKILL)
        return state
    return solve

demo = demo_task(6, name="vanished")
task = Task(name="vanished", dataset=demo.dataset,
            solver=[die_at_4(), use_tools(add_tool()), generate()], scorer=[match(), includes()])
eval(task, model=demo_model(), log_dir=sys.argv[1], display="none", max_samples=1)
"""


def test_an_eval_process_killed_mid_run_gets_its_runs_closed_as_failed(
    sqlite_store: Any, tmp_path: Path
) -> None:
    import time

    from mlflow import MlflowClient

    done = _eval_script(_EVAL_KILLED_AT_SAMPLE_4, sqlite_store, tmp_path)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    client = MlflowClient(sqlite_store.tracking_uri)
    deadline = time.monotonic() + 90
    runs: dict[str, Any] = {}
    while time.monotonic() < deadline:
        runs = runs_by_name(client, sqlite_store.experiment_name)
        if runs and all(run.info.status != "RUNNING" for run in runs.values()):
            break
        time.sleep(0.5)
    task_run = runs["vanished"]
    assert {run.info.status for run in runs.values()} == {"FAILED"}, "no run left RUNNING"
    # the samples that ended before the kill were delivered, with their table rows
    assert task_run.data.metrics["per_sample/total_time"] >= 0
    samples = download_json(client, task_run.info.run_id, "inspect/samples.json")
    assert len(samples["data"]) == 3


class _SlowOrFailingSession:
    """Stands in for a Session whose run-state read hangs or fails (a unit test's fake)."""

    def __init__(self, behaviour: str) -> None:
        from types import SimpleNamespace

        self.settings = SimpleNamespace(flush_timeout=0.5)
        self.behaviour = behaviour

    def points_confirmed(self) -> int:
        return 0

    def prepare_document(self, point: str, document: Any) -> None:
        import time

        if self.behaviour == "hang":
            time.sleep(5)
        else:
            raise ConnectionError("server down")


@pytest.mark.parametrize("behaviour", ["hang", "fail"])
def test_a_run_state_read_that_hangs_or_fails_is_bounded_and_said_once(
    behaviour: str, caplog: pytest.LogCaptureFixture
) -> None:
    import io
    import time

    from inspect_mlflow._delivery.process import DeliveryProcess
    from inspect_mlflow._delivery.wire import Channel

    delivery = DeliveryProcess(Channel(io.BytesIO()), Channel(io.BytesIO()))
    try:
        delivery._sessions[1] = _SlowOrFailingSession(behaviour)
        with caplog.at_level(logging.WARNING, logger="inspect_mlflow"):
            began = time.monotonic()
            delivery._on_prepare(1, "task_start", {})
            delivery._on_prepare(1, "task_start", {})
            elapsed = time.monotonic() - began
    finally:
        logging.getLogger().removeHandler(delivery._handler)
    assert elapsed < 3.0, "each read waits at most the flush timeout"
    said = [r for r in caplog.records if "could not read the state" in r.getMessage()]
    assert len(said) == 1
    expected = "no answer in time" if behaviour == "hang" else "server down"
    assert expected in said[0].getMessage()


_TASK_FILE = """
from inspect_ai import Task, task

from inspect_mlflow._commands.demo import demo_model, demo_task


@task
def cli_demo():
    demo = demo_task(5)
    return Task(dataset=demo.dataset, solver=demo.solver, scorer=demo.scorer, model=demo_model())
"""


def test_inspect_eval_on_the_command_line_logs_everything_and_exits(
    sqlite_store: Any, tmp_path: Path
) -> None:
    """The way most users run it: `inspect eval`, a process that exits when it is done."""
    from mlflow import MlflowClient

    (tmp_path / "cli_task.py").write_text(_TASK_FILE)
    command = [sys.executable, "-m", "inspect_ai", "eval", "cli_task.py"]
    command += ["--log-dir", str(tmp_path / "logs"), "--display", "plain"]
    done = subprocess.run(
        command,
        env=child_env(sqlite_store),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(sqlite_store.tracking_uri)
    runs = runs_by_name(client, sqlite_store.experiment_name)
    task_run = runs["cli_demo"]
    assert {run.info.status for run in runs.values()} == {"FINISHED"}
    assert task_run.data.metrics["total_samples"] == 5
    traces = client.search_traces(
        locations=[task_run.info.experiment_id], run_id=task_run.info.run_id
    )
    assert len(traces) == 5


class _RecordingSession:
    """Stands in for a Session: records what the delivery process asks of it, in order."""

    def __init__(self) -> None:
        from types import SimpleNamespace

        self.settings = SimpleNamespace(flush_timeout=0.5)
        self.calls: list[str] = []

    def points_confirmed(self) -> int:
        return 0

    def run_ids(self) -> dict[str, Any]:
        return {}

    def handle_document(self, point: str, document: Any, stamp: float | None = None) -> None:
        self.calls.append(point)

    def hurry(self) -> None:
        self.calls.append("hurry")

    def close_open_runs(self, status: str) -> None:
        self.calls.append(f"close_open_runs:{status}")

    def finish(self, timeout: float) -> bool:
        return True

    def close(self, timeout: float) -> None:
        self.calls.append("close")


def test_a_hurry_reaches_the_session_after_the_points_sent_before_it() -> None:
    # The eval's process sends ("hurry", sid) after a task's last sample end; the delivery
    # process must hand it to that session in order, after the point (not log it unknown).
    import io

    from inspect_mlflow._delivery.process import DeliveryProcess
    from inspect_mlflow._delivery.wire import Channel

    incoming = io.BytesIO()
    writer = Channel(incoming)
    writer.send(("point", 1, "sample_end", {"sample": {}}, None))
    writer.send(("hurry", 1))
    writer.send(("hurry", 2))  # a session that is gone: ignored
    incoming.seek(0)
    delivery = DeliveryProcess(Channel(incoming), Channel(io.BytesIO()))
    session = _RecordingSession()
    try:
        delivery._sessions[1] = session  # type: ignore[assignment]
        assert delivery.run() == 0  # the pipe closes: the eval's process is gone
    finally:
        logging.getLogger().removeHandler(delivery._handler)
    assert session.calls == ["sample_end", "hurry", "close_open_runs:FAILED", "close"]
