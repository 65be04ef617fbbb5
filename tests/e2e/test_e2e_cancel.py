"""Ctrl-C (once, twice) and SIGTERM of a real eval in a subprocess: runs KILLED, summary kept.

Why a subprocess: the signal must reach a real eval's process group (what a terminal, a
``timeout`` or a job scheduler does) with the default delivery process beside it, and
what the user sees afterwards is that process's stderr. The mock model sleeps, so
samples are in flight when the signal lands; the test signals once a few have been
answered and compares what landed in MLflow with Inspect's cancelled log on disk.

A background job (how CI may run pytest) inherits SIGINT ignored, and Python then sets
no Ctrl-C handler (nor does asyncio): the child puts Python's default back first, as an
interactive shell gives it, so the SIGINT cases run everywhere. The SIGTERM case with
SIGINT left ignored covers ``nohup inspect eval ... &`` followed by ``kill``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from e2e_support import child_env, download_json, runs_by_name
from inspect_ai.log import list_eval_logs, read_eval_log

from inspect_mlflow._inspect.signals import TerminationGuard

pytestmark = pytest.mark.e2e

ANSWERED_BEFORE_SIGNAL = 3
"""Final answers the mock model gives before the test signals (samples then complete)."""

_CHILD = r"""
import os, signal, sys
if os.environ.get("CHILD_SIGINT") == "ignore":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
else:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import anyio
from inspect_ai import eval
from inspect_ai.model import ChatMessageTool, get_model
from inspect_mlflow._commands.demo import DEMO_MODEL, answer, demo_task


async def slow(input, tools, tool_choice, config):
    await anyio.sleep(0.2)
    output = answer(input, tools, tool_choice, config)
    if isinstance(input[-1], ChatMessageTool):
        print("answered", flush=True)
    return output


model = get_model(DEMO_MODEL, custom_outputs=slow, memoize=False)
logs = eval(demo_task(100, name="cancelled"), model=model, log_dir=sys.argv[1],
            display="none", max_samples=2)
print("eval returned", [log.status for log in logs], flush=True)
"""

_TASK_FILE = r"""
import anyio
from inspect_ai import Task, task
from inspect_ai.model import ChatMessageTool, get_model
from inspect_mlflow._commands.demo import DEMO_MODEL, answer, demo_task


async def slow(input, tools, tool_choice, config):
    await anyio.sleep(0.2)
    output = answer(input, tools, tool_choice, config)
    if isinstance(input[-1], ChatMessageTool):
        print("answered", flush=True)
    return output


@task
def cancelled():
    demo = demo_task(100)
    model = get_model(DEMO_MODEL, custom_outputs=slow, memoize=False)
    return Task(dataset=demo.dataset, solver=demo.solver, scorer=demo.scorer, model=model)
"""

_INSPECT_CLI = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from inspect_ai._cli.main import main; sys.exit(main())"
)
"""``inspect ...`` with Python's Ctrl-C handler, as an interactive terminal gives it."""


class Child:
    """The eval's process, its output read on a thread so the test can wait for lines."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, as a terminal job has
        )
        self.answered = 0
        self._cond = threading.Condition()
        self.stdout: list[str] = []
        self.stderr = ""
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._cond:
                self.stdout.append(line)
                self.answered += line.startswith("answered")
                self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self.stderr = self.process.stderr.read()

    def wait_answered(self, count: int, timeout: float = 120.0) -> None:
        with self._cond:
            done = self._cond.wait_for(
                lambda: self.answered >= count or self.process.poll() is not None, timeout
            )
        assert done and self.answered >= count, f"no {count} answers: {self.output()}"

    def signal(self, signum: int) -> None:
        os.killpg(self.process.pid, signum)

    def wait(self, timeout: float = 120.0) -> int:
        """Wait for the exit and for the pipes to close (the delivery process shares stderr)."""
        code = self.process.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return code

    def output(self) -> str:
        return "".join(self.stdout)[-2000:] + "\n--- stderr ---\n" + self.stderr[-4000:]


def _the_log(log_dir: Path) -> Any:
    [info] = list_eval_logs(str(log_dir))
    return read_eval_log(info, header_only=True)


def _wait_log_finished(log_dir: Path, child: Child, timeout: float = 60.0) -> None:
    """Until Inspect has written the cancelled log (then a second Ctrl-C hits our run end)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and child.process.poll() is None:
        try:
            if _the_log(log_dir).status != "started":
                return
        except Exception:
            pass
        time.sleep(0.05)


def _assert_killed_with_summary(store: Any, log_dir: Path, child: Child) -> None:
    """Task and parent KILLED; the summary equal to Inspect's cancelled log; a clean stderr."""
    for bad in ("Traceback", "Logging error", "BrokenPipeError"):
        assert bad not in child.stderr, child.output()
    log = _the_log(log_dir)
    assert log.status == "cancelled"
    assert 0 < log.results.completed_samples < 100
    client = store.client()
    runs = runs_by_name(client, store.experiment_name)
    task_run = runs["cancelled"]
    [parent] = [r for r in runs.values() if r.info.run_id != task_run.info.run_id]
    assert task_run.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    assert (task_run.info.status, parent.info.status) == ("KILLED", "KILLED"), child.output()
    metrics = task_run.data.metrics
    assert metrics.get("completed_samples") == log.results.completed_samples, metrics
    assert metrics["total_samples"] == log.results.total_samples == 100
    usage = log.stats.model_usage["mockllm/model"]
    assert metrics["usage/mockllm/model/input_tokens"] == usage.input_tokens
    assert metrics["usage/mockllm/model/output_tokens"] == usage.output_tokens
    assert metrics["usage/mockllm/model/total_tokens"] == usage.total_tokens
    assert metrics["total_model_calls"] >= 2 * log.results.completed_samples
    assert "latency/per_sample_mean_seconds" in metrics
    assert "match/accuracy" in metrics
    table = download_json(client, task_run.info.run_id, "inspect/tasks.json")
    [row] = [dict(zip(table["columns"], cells, strict=True)) for cells in table["data"]]
    assert row["status"] == "cancelled"
    assert row["completed_samples"] == log.results.completed_samples
    logs = [a.path for a in client.list_artifacts(task_run.info.run_id, "eval_logs")]
    assert logs == ["eval_logs/cancelled.json"]
    header = download_json(client, task_run.info.run_id, "eval_logs/cancelled.json")
    assert header["status"] == "cancelled"
    assert header["eval"]["eval_id"] == log.eval.eval_id


def _run_and_signal(
    store: Any,
    tmp_path: Path,
    signum: int,
    times: int = 1,
    command: list[str] | None = None,
    **env: str,
) -> tuple[Child, int]:
    log_dir = tmp_path / "logs"
    command = command or [sys.executable, "-c", _CHILD, str(log_dir)]
    child = Child(command, child_env(store, **env), cwd=tmp_path)
    try:
        child.wait_answered(ANSWERED_BEFORE_SIGNAL)
        child.signal(signum)
        if times == 2:
            _wait_log_finished(log_dir, child)
            child.signal(signum)
        code = child.wait()
    finally:
        if child.process.poll() is None:
            child.process.kill()
    _assert_killed_with_summary(store, log_dir, child)
    return child, code


def test_ctrl_c_once_ends_the_runs_killed_with_their_summary(
    sqlite_store: Any, tmp_path: Path
) -> None:
    child, code = _run_and_signal(sqlite_store, tmp_path, signal.SIGINT)
    assert code == 0, child.output()  # eval() returns (no logs) and the script goes on
    assert "eval returned []" in "".join(child.stdout)


def test_ctrl_c_twice_still_delivers_the_summary(sqlite_store: Any, tmp_path: Path) -> None:
    """The second Ctrl-C comes once Inspect wrote its log: while the hook ends the runs."""
    _run_and_signal(sqlite_store, tmp_path, signal.SIGINT, times=2)


def test_sigterm_cancels_like_ctrl_c_then_ends_the_process_by_sigterm(
    sqlite_store: Any, tmp_path: Path
) -> None:
    child, code = _run_and_signal(sqlite_store, tmp_path, signal.SIGTERM)
    assert code == -signal.SIGTERM, child.output()
    assert "eval returned" not in "".join(child.stdout)  # the script does not carry on


def test_sigterm_of_a_background_job_that_ignores_sigint(sqlite_store: Any, tmp_path: Path) -> None:
    """``nohup ... &`` then ``kill``: no Ctrl-C handler exists, SIGTERM still cancels."""
    child, code = _run_and_signal(sqlite_store, tmp_path, signal.SIGTERM, CHILD_SIGINT="ignore")
    assert code == -signal.SIGTERM, child.output()


@pytest.mark.server
def test_sigterm_over_http(server_store: Any, tmp_path: Path) -> None:
    child, code = _run_and_signal(server_store, tmp_path, signal.SIGTERM)
    assert code == -signal.SIGTERM, child.output()


def test_a_killed_eval_leaves_no_logging_error_on_the_terminal(
    sqlite_store: Any, tmp_path: Path
) -> None:
    """SIGKILL: nothing can cancel; the delivery process closes the runs FAILED and says so
    in one plain line (its pipe to the dead eval's process is broken), no traceback."""
    log_dir = tmp_path / "logs"
    command = [sys.executable, "-c", _CHILD, str(log_dir)]
    child = Child(command, child_env(sqlite_store), cwd=tmp_path)
    try:
        child.wait_answered(ANSWERED_BEFORE_SIGNAL)
        child.signal(signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL
    finally:
        if child.process.poll() is None:
            child.process.kill()
    for bad in ("Traceback", "Logging error", "BrokenPipeError"):
        assert bad not in child.stderr, child.output()
    assert "2 run(s) closed as FAILED" in child.stderr, child.output()
    runs = runs_by_name(sqlite_store.client(), sqlite_store.experiment_name)
    assert {run.info.status for run in runs.values()} == {"FAILED"}


def test_ctrl_c_of_inspect_eval_on_the_command_line(sqlite_store: Any, tmp_path: Path) -> None:
    (tmp_path / "cancel_task.py").write_text(_TASK_FILE)
    command = [sys.executable, "-c", _INSPECT_CLI, "eval", "cancel_task.py"]
    command += ["--log-dir", str(tmp_path / "logs"), "--max-samples", "2", "--display", "plain"]
    _run_and_signal(sqlite_store, tmp_path, signal.SIGINT, command=command)


def test_ctrl_c_twice_at_once_still_ends_killed_and_quiet(
    sqlite_store: Any, tmp_path: Path
) -> None:
    """Both Ctrl-Cs within milliseconds: Inspect may not finish its log (then the task keeps
    what its samples logged), but the runs still end KILLED and nothing is printed."""
    log_dir = tmp_path / "logs"
    command = [sys.executable, "-c", _CHILD, str(log_dir)]
    child = Child(command, child_env(sqlite_store), cwd=tmp_path)
    try:
        child.wait_answered(ANSWERED_BEFORE_SIGNAL)
        child.signal(signal.SIGINT)
        time.sleep(0.01)
        child.signal(signal.SIGINT)
        child.wait()
    finally:
        if child.process.poll() is None:
            child.process.kill()
    for bad in ("Traceback", "Logging error", "BrokenPipeError"):
        assert bad not in child.stderr, child.output()
    runs = runs_by_name(sqlite_store.client(), sqlite_store.experiment_name)
    assert {run.info.status for run in runs.values()} == {"KILLED"}, child.output()
    if _the_log(log_dir).status == "cancelled":
        assert "completed_samples" in runs["cancelled"].data.metrics


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="handlers: main thread"
)
def test_the_sigterm_guard_holds_sigterm_for_the_run_only_and_never_a_users_handler() -> None:
    """Only SIGTERM's default action is replaced, and given back at the run's end."""
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        guard = TerminationGuard()
        guard.install()
        assert signal.getsignal(signal.SIGTERM) == guard._on_sigterm
        guard.release()  # no SIGTERM came: the process goes on
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

        def own(signum: int, frame: Any) -> None:
            pass

        signal.signal(signal.SIGTERM, own)
        guard.install()
        assert signal.getsignal(signal.SIGTERM) is own
        guard.release()
        assert signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, previous)
