"""End-to-end scenarios: real offline evals with the hook on, read back from a real sqlite store.

Each scenario runs one eval (module-scoped fixture) and its tests only read what reached
MLflow, comparing it with the ``.eval`` log the same eval wrote. Covered: two tasks at once
with concurrent samples and epochs (no cross-talk, exact counters), a failing tool, a
sample that raises (aborting the task, not aborting it, and escaping ``eval()``), an
interrupt (Ctrl-C), a model name MLflow rejects in keys, credentials in model and task
arguments, two evals in a row, and no tracking URI at all.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    env,
    eval_events,
    eval_run_name,
    failing_task,
    new_experiment_name,
    run_logged,
)
from inspect_ai import Task, task
from inspect_ai.dataset import Sample
from inspect_ai.hooks import Hooks, RunEnd, hooks
from inspect_ai.hooks._hooks import get_all_hooks
from inspect_ai.log import EvalLog, read_eval_log
from inspect_ai.model import ChatMessageTool, ModelOutput, get_model
from inspect_ai.solver import Generate, TaskState, generate, solver, use_tools
from inspect_ai.tool import ToolError, tool
from mlflow import MlflowClient
from scenario_support import (
    Scenario,
    assert_steps_unique_and_dense,
    mock_output,
    run_scenario,
    sample_uuids,
)

from inspect_mlflow._commands.demo import DEMO_MODEL, add_tool, answer, demo_model, demo_task
from inspect_mlflow._inspect.hook import MlflowTrackingHook

pytestmark = pytest.mark.e2e


# -- 1. two tasks at once, concurrent samples, epochs ----------------------------------

ALPHA_SAMPLES, BETA_SAMPLES, EPOCHS = 6, 4, 2


def _beta_task() -> Task:
    """The demo task under another name, with sample ids that cannot be alpha's."""
    base = demo_task(BETA_SAMPLES, name="beta")
    dataset = [Sample(id=f"b{s.id}", input=s.input, target=s.target) for s in base.dataset]
    return Task(name="beta", dataset=dataset, solver=base.solver, scorer=base.scorer)


STORES = ["sqlite", pytest.param("server", marks=pytest.mark.server)]


def _store(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Where a parametrised scenario logs: a fresh sqlite file, or the session's server."""
    if request.param != "server":
        return {}
    server = request.getfixturevalue("mlflow_server")
    return {"uri": server.url, "store_root": server.root}


@pytest.fixture(scope="module", params=STORES)
def two_tasks(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    root = tmp_path_factory.mktemp(f"two-tasks-{request.param}")
    scenario = run_scenario(
        root,
        [demo_task(ALPHA_SAMPLES, name="alpha"), _beta_task()],
        **_store(request),
        max_tasks=2,
        max_samples=3,
        epochs=EPOCHS,
    )
    assert [log.status for log in scenario.logs] == ["success", "success"]
    return scenario


def _log_of(scenario: Scenario, name: str) -> EvalLog:
    [log] = [log for log in scenario.logs if log.eval.task == name]
    return read_eval_log(log.location)


def test_two_tasks_get_two_task_runs_under_one_parent(two_tasks: Scenario) -> None:
    [parent] = two_tasks.parents()
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["inspect.task_count"] == "2"
    tasks = [r for r in two_tasks.runs() if r is not parent and r.info.run_id != parent.info.run_id]
    assert sorted(r.info.run_name for r in tasks) == ["alpha", "beta"]
    for run in tasks:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == "FINISHED"
        log = _log_of(two_tasks, run.info.run_name)
        assert run.data.tags["inspect.eval_id"] == log.eval.eval_id


@pytest.mark.parametrize(("name", "samples"), [("alpha", ALPHA_SAMPLES), ("beta", BETA_SAMPLES)])
def test_per_sample_metrics_stay_on_their_task_run(
    two_tasks: Scenario, name: str, samples: int
) -> None:
    run, log = two_tasks.run(name), _log_of(two_tasks, name)
    n = samples * EPOCHS
    for key in ("per_sample/match", "per_sample/includes", "per_sample/total_time"):
        assert_steps_unique_and_dense(two_tasks.history(run, key), n, key)
    correct = sum(1 for s in log.samples if s.scores["match"].value == "C")
    assert sum(p.value for p in two_tasks.history(run, "per_sample/match")) == correct
    times = sorted(p.value for p in two_tasks.history(run, "per_sample/total_time"))
    assert times == pytest.approx(sorted(s.total_time for s in log.samples))
    assert run.data.metrics["total_samples"] == n


@pytest.mark.parametrize("name", ["alpha", "beta"])
def test_event_counters_are_exact_per_task_run(two_tasks: Scenario, name: str) -> None:
    run, log = two_tasks.run(name), _log_of(two_tasks, name)
    truth = eval_events(log.location)
    calls = two_tasks.history(run, "per_call/model_call")
    assert_steps_unique_and_dense(calls, truth["model"], "per_call/model_call")
    assert sorted(p.value for p in calls) == [float(i + 1) for i in range(truth["model"])]
    tools = two_tasks.history(run, "per_call/tool_call")
    assert_steps_unique_and_dense(tools, truth["tool"], "per_call/tool_call")
    for key in ("per_call/input_tokens", "per_call/output_tokens", "per_call/model_time"):
        assert_steps_unique_and_dense(two_tasks.history(run, key), truth["model"], key)
    for key in ("per_call/tool_time", "per_call/tool_error"):
        assert_steps_unique_and_dense(two_tasks.history(run, key), truth["tool"], key)
    assert run.data.metrics["total_model_calls"] == truth["model"]
    assert run.data.metrics["total_tool_calls"] == truth["tool"]
    usage = log.stats.model_usage[DEMO_MODEL]
    assert run.data.metrics[f"usage/{DEMO_MODEL}/input_tokens"] == usage.input_tokens


@pytest.mark.parametrize("name", ["alpha", "beta"])
def test_table_rows_belong_to_their_task_only(two_tasks: Scenario, name: str) -> None:
    run, log = two_tasks.run(name), _log_of(two_tasks, name)
    samples = two_tasks.table(run, "inspect/samples.json")
    assert {r["uuid"] for r in samples} == sample_uuids(log)
    assert len(samples) == len(log.samples)
    ids = {(s.id, s.epoch) for s in log.samples}
    for path in ("inspect/messages.json", "inspect/sample_scores.json", "inspect/model_usage.json"):
        rows = two_tasks.table(run, path)
        assert {(r["sample_id"], r["epoch"]) for r in rows} == ids, path
    events = two_tasks.table(run, "inspect/events.json")
    assert {r["event_id"] for r in events} == {e.uuid for s in log.samples for e in s.events}
    [task_row] = two_tasks.table(run, "inspect/tasks.json")
    assert task_row["eval_id"] == log.eval.eval_id


@pytest.mark.parametrize("name", ["alpha", "beta"])
def test_traces_of_each_task_are_only_on_its_run(two_tasks: Scenario, name: str) -> None:
    run, log = two_tasks.run(name), _log_of(two_tasks, name)
    traces = two_tasks.traces(run)
    assert len(traces) == len(log.samples)
    assert {t.info.trace_metadata["inspect.sample_uuid"] for t in traces} == sample_uuids(log)
    assert {t.info.trace_metadata["inspect.eval_id"] for t in traces} == {log.eval.eval_id}
    feedback = [a for t in traces for a in t.info.assessments if a.feedback is not None]
    assert len(feedback) == len(log.samples) * 2
    assert {t.info.tags["inspect.epoch"] for t in traces} == {str(e + 1) for e in range(EPOCHS)}


def test_two_tasks_log_without_warnings(two_tasks: Scenario) -> None:
    assert two_tasks.warnings == []
    [parent] = two_tasks.parents()
    assert two_tasks.traces(parent) == []


# -- 2. tool calls, some failing --------------------------------------------------------


@tool
def picky_add() -> Any:
    async def execute(x: int, y: int) -> str:
        """Add two integers, refusing multiples of three.

        Args:
            x: First integer.
            y: Second integer.
        """
        if x % 3 == 0:
            raise ToolError(f"refusing {x}: multiples of three are not allowed")
        return str(x + y)

    return execute


def _picky_answer(input: list[Any], tools: Any, tool_choice: Any, config: Any) -> ModelOutput:
    last = input[-1]
    if isinstance(last, ChatMessageTool):
        return mock_output("error" if last.error else last.text.strip())
    x, y = (int(n) for n in re.findall(r"\d+", last.text)[:2])
    return mock_output(tool_name="picky_add", tool_arguments={"x": x, "y": y})


@pytest.fixture(scope="module")
def tool_errors(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    base = demo_task(7, name="picky")
    picky = Task(
        name="picky",
        dataset=base.dataset,
        solver=[use_tools(picky_add()), generate()],
        scorer=base.scorer,
    )
    model = get_model(DEMO_MODEL, custom_outputs=_picky_answer, memoize=False)
    scenario = run_scenario(
        tmp_path_factory.mktemp("tool-errors"), picky, model=model, max_samples=3
    )
    assert scenario.logs[0].status == "success"
    return scenario


def test_failed_tool_calls_are_counted_as_tool_errors(tool_errors: Scenario) -> None:
    run, log = tool_errors.run("picky"), tool_errors.logs[0]
    truth = eval_events(log.location)
    assert 0 < truth["tool_error"] < truth["tool"]  # the scenario really has both kinds
    errors = tool_errors.history(run, "per_call/tool_error")
    assert_steps_unique_and_dense(errors, truth["tool"], "per_call/tool_error")
    assert sum(p.value for p in errors) == truth["tool_error"]
    assert {p.value for p in errors} == {0.0, 1.0}
    events = [r for r in tool_errors.table(run, "inspect/events.json") if r["event"] == "tool"]
    assert sum(1 for r in events if r["error"]) == truth["tool_error"]
    assert all("multiples of three" in r["error"] for r in events if r["error"])


def test_a_failed_tool_call_is_an_error_span(tool_errors: Scenario) -> None:
    run, log = tool_errors.run("picky"), tool_errors.logs[0]
    truth = eval_events(log.location)
    spans = [s for t in tool_errors.traces(run) for s in t.data.spans if s.span_type == "TOOL"]
    assert len(spans) == truth["tool"]
    failed = [s for s in spans if s.status.status_code == "ERROR"]
    assert len(failed) == truth["tool_error"]
    for span in failed:
        assert "multiples of three" in span.status.description
        assert span.inputs["x"] % 3 == 0
    assert all(s.inputs["x"] % 3 != 0 for s in spans if s.status.status_code != "ERROR")


# -- 3. a sample that raises ------------------------------------------------------------

FAIL_ID = 3


@pytest.fixture(scope="module")
def aborted(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """Default ``fail_on_error``: the task errors and Inspect never calls ``on_task_end``."""
    scenario = run_scenario(
        tmp_path_factory.mktemp("aborted"), failing_task({FAIL_ID}, samples=6), max_samples=1
    )
    assert scenario.logs[0].status == "error"
    return scenario


def test_an_aborted_task_is_failed_and_so_is_its_parent(aborted: Scenario) -> None:
    run, [parent] = aborted.run("flaky_addition"), aborted.parents()
    assert run.info.status == "FAILED"
    assert run.info.end_time is not None
    assert parent.info.status == "FAILED"
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id


def test_an_aborted_task_keeps_what_was_collected(aborted: Scenario) -> None:
    run, log = aborted.run("flaky_addition"), read_eval_log(aborted.logs[0].location)
    rows = aborted.table(run, "inspect/samples.json")
    completed = {s.uuid for s in log.samples if s.error is None}
    assert completed, "the scenario needs samples that completed before the failure"
    assert completed <= {r["uuid"] for r in rows}
    [failed] = [r for r in rows if r["sample_id"] == FAIL_ID]
    assert "planned failure" in failed["error"]
    # derived from RunEnd.logs when task_end never fired
    [task_row] = aborted.table(run, "inspect/tasks.json")
    assert task_row["status"] == "error"
    usage = log.stats.model_usage[DEMO_MODEL]
    assert run.data.metrics[f"usage/{DEMO_MODEL}/total_tokens"] == usage.total_tokens
    assert "eval_logs/flaky_addition.json" in aborted.artifact_paths(run)
    assert len(aborted.traces(run)) == len(rows)


@pytest.fixture(scope="module")
def tolerated(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    scenario = run_scenario(
        tmp_path_factory.mktemp("tolerated"),
        failing_task({FAIL_ID}, samples=5),
        max_samples=2,
        fail_on_error=False,
    )
    assert scenario.logs[0].status == "success"
    return scenario


def test_with_fail_on_error_false_the_task_finishes_and_keeps_the_error(
    tolerated: Scenario,
) -> None:
    run = tolerated.run("flaky_addition")
    assert run.info.status == "FINISHED"
    rows = tolerated.table(run, "inspect/samples.json")
    assert len(rows) == 5
    [failed] = [r for r in rows if r["sample_id"] == FAIL_ID]
    assert "planned failure for sample 3" in failed["error"]
    assert all(r["error"] is None for r in rows if r["sample_id"] != FAIL_ID)
    assert run.data.metrics["completed_samples"] == 4
    [trace] = [t for t in tolerated.traces(run) if t.info.tags["inspect.sample_id"] == "3"]
    assert trace.info.state == "ERROR"
    assert "planned failure" in trace.info.tags["inspect.error"]


@pytest.fixture(scope="module")
def escaped(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """``debug_errors=True``: the sample's exception escapes ``eval()``."""
    scenario = run_scenario(
        tmp_path_factory.mktemp("escaped"),
        failing_task({FAIL_ID}, samples=5),
        max_samples=1,
        debug_errors=True,
        catch=(RuntimeError,),
    )
    assert "planned failure" in str(scenario.error)
    return scenario


def test_a_run_that_raises_fails_its_parent_and_closes_its_task(escaped: Scenario) -> None:
    [parent] = escaped.parents()
    assert parent.info.status == "FAILED"
    run = escaped.run("flaky_addition")
    assert run.info.status == "FAILED"
    assert run.info.end_time is not None
    rows = escaped.table(run, "inspect/samples.json")
    assert {1, 2} <= {r["sample_id"] for r in rows}


# -- 4. an interrupt (Ctrl-C) -----------------------------------------------------------


def _interrupt_task(at_id: int) -> Task:
    """The demo task with a solver that sends this process SIGINT at sample ``at_id``.

    The signal goes out only when the event loop's own SIGINT handler is installed (as
    ``asyncio.run`` does in the main thread), so it can never hit pytest directly.
    """

    @solver
    def ctrl_c() -> Any:
        async def solve(state: TaskState, generate: Generate) -> TaskState:
            if state.sample_id == at_id:
                if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                    _no_loop_handler.append(True)
                    raise RuntimeError("no event-loop SIGINT handler: not interrupting")
                os.kill(os.getpid(), signal.SIGINT)
                import anyio

                await anyio.sleep(10)
            return state

        return solve

    base = demo_task(5, name="interrupted")
    return Task(
        name="interrupted",
        dataset=base.dataset,
        solver=[ctrl_c(), use_tools(add_tool()), generate()],
        scorer=base.scorer,
    )


_run_ends: list[RunEnd] | None = None
_no_loop_handler: list[bool] = []


@hooks(name="inspect_mlflow_test_run_end_counter", description="test-only run_end recorder")
class _RunEndCounter(Hooks):
    """Records run_end payloads while a test sets ``_run_ends`` (off otherwise)."""

    def enabled(self) -> bool:
        return _run_ends is not None

    async def on_run_end(self, data: RunEnd) -> None:
        if _run_ends is not None:
            _run_ends.append(data)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    global _run_ends
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("SIGINT is handled by the event loop only in the main thread")
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("a SIGINT handler other than Python's default is installed")
    _run_ends = []
    try:
        scenario = run_scenario(
            tmp_path_factory.mktemp("interrupted"),
            _interrupt_task(3),
            max_samples=1,
            catch=(KeyboardInterrupt,),
        )
        scenario.run_ends = _run_ends
    finally:
        _run_ends = None
    if _no_loop_handler:
        pytest.skip("the event loop installed no SIGINT handler here (not asyncio.run?)")
    return scenario


def test_an_interrupted_eval_is_killed(interrupted: Scenario) -> None:
    [parent] = interrupted.parents()
    run = interrupted.run("interrupted")
    assert (parent.info.status, run.info.status) == ("KILLED", "KILLED")
    # The hook finishes its writes even though the run ends inside a cancelled scope; a
    # cancellation escaping it used to make Inspect emit run_end a second time.
    assert len(interrupted.run_ends) == 1
    assert run.info.end_time is not None
    rows = interrupted.table(run, "inspect/samples.json")
    assert {1, 2} <= {r["sample_id"] for r in rows}
    assert len(interrupted.history(run, "per_sample/match")) >= 2


# -- 5. a model name MLflow rejects in keys ---------------------------------------------

ODD_MODEL = "mockllm/model@v1"


@pytest.fixture(scope="module")
def odd_model(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    model = get_model(ODD_MODEL, custom_outputs=answer, memoize=False)
    scenario = run_scenario(
        tmp_path_factory.mktemp("odd-model"), demo_task(3, name="odd"), model=model
    )
    assert scenario.logs[0].status == "success"
    assert ODD_MODEL in scenario.logs[0].stats.model_usage
    return scenario


def test_a_model_name_with_a_rejected_character_gets_safe_keys(odd_model: Scenario) -> None:
    run, log = odd_model.run("odd"), odd_model.logs[0]
    usage = log.stats.model_usage[ODD_MODEL]
    metrics = run.data.metrics
    assert metrics["usage/mockllm/model_v1/input_tokens"] == usage.input_tokens
    assert metrics["usage/mockllm/model_v1/output_tokens"] == usage.output_tokens
    assert metrics["usage/mockllm/model_v1/total_tokens"] == usage.total_tokens
    assert run.data.tags["inspect.model"] == ODD_MODEL
    assert run.data.params["model"] == ODD_MODEL
    [row] = {r["model"] for r in odd_model.table(run, "inspect/model_usage.json")}
    assert row == ODD_MODEL  # cell values keep the real name
    assert odd_model.warnings == []  # nothing dropped or rejected


# -- 6. credentials in model and task arguments -----------------------------------------

API_KEY = "sk-SECRET-123"
ACCESS_TOKEN = "at-SECRET-456"
TASK_TOKEN = "tok-SECRET-789"
SECRETS = (API_KEY, ACCESS_TOKEN, TASK_TOKEN)


@task
def secret_task(token: str = "", rounds: int = 1) -> Task:
    """The demo task, taking a credential-like argument it does not use."""
    base = demo_task(3, name="secret_task")
    return Task(dataset=base.dataset, solver=base.solver, scorer=base.scorer)


@pytest.fixture(scope="module", params=STORES)
def credentials(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Scenario:
    model = get_model(
        DEMO_MODEL,
        custom_outputs=answer,
        api_key=API_KEY,
        access_token=ACCESS_TOKEN,
        memoize=False,
    )
    scenario = run_scenario(
        tmp_path_factory.mktemp(f"credentials-{request.param}"),
        secret_task(token=TASK_TOKEN, rounds=2),
        model=model,
        **_store(request),
    )
    assert scenario.logs[0].status == "success"
    return scenario


def _assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret} found in {where}"
    assert "SECRET" not in text, f"part of a secret found in {where}"


def test_credentials_are_not_in_params_tags_or_metric_keys(credentials: Scenario) -> None:
    run = credentials.run("secret_task")
    assert run.data.params["task_arg.token"] == "***"
    assert run.data.params["task_arg.rounds"] == "2"  # the other argument is logged
    for r in credentials.runs():
        _assert_no_secret(json.dumps(r.data.params), f"params of {r.info.run_name}")
        _assert_no_secret(json.dumps(r.data.tags), f"tags of {r.info.run_name}")
        _assert_no_secret(json.dumps(sorted(r.data.metrics)), f"metric keys of {r.info.run_name}")


def test_credentials_are_not_in_any_artifact(credentials: Scenario) -> None:
    run = credentials.run("secret_task")
    paths = credentials.artifact_paths(run)
    assert "eval_logs/secret_task.json" in paths
    with tempfile.TemporaryDirectory() as tmp:
        local = credentials.client.download_artifacts(run.info.run_id, "", tmp)
        files = [p for p in Path(local).rglob("*") if p.is_file()]
        assert len(files) == len(paths)
        for path in files:
            _assert_no_secret(path.read_text(errors="replace"), str(path))
    header = json.loads(
        Path(
            credentials.client.download_artifacts(
                run.info.run_id, "eval_logs/secret_task.json", str(credentials.root)
            )
        ).read_text()
    )
    assert header["eval"]["task_args"]["token"] == "***"
    assert header["eval"]["task_args"]["rounds"] == 2
    assert header["eval"]["model_args"]["access_token"] == "***"


def test_credentials_are_not_in_traces(credentials: Scenario) -> None:
    run = credentials.run("secret_task")
    traces = credentials.traces(run)
    assert len(traces) == 3
    for trace in traces:
        _assert_no_secret(trace.to_json(), f"trace {trace.info.trace_id}")
        for span in trace.data.spans:
            _assert_no_secret(json.dumps(span.attributes, default=str), f"span {span.name}")


def test_credentials_are_not_in_the_store_files(credentials: Scenario) -> None:
    stored = credentials.store_files()
    assert any(p.suffix == ".db" and p.stat().st_size > 0 for p in stored)
    assert any(p.name == "samples.json" for p in stored)  # artifacts are files too
    for path in stored:
        data = path.read_bytes()
        for secret in SECRETS:
            assert secret.encode() not in data, f"{secret} found in {path}"


# -- 7. a task from a file in another directory, a relative sqlite URI -----------------


@task
def elsewhere_task() -> Task:
    """A task whose file lies in this directory: Inspect sets it up from here."""
    base = demo_task(3, name="elsewhere_task")
    return Task(dataset=base.dataset, solver=base.solver, scorer=base.scorer)


def test_a_relative_sqlite_uri_and_its_artifacts_stay_where_the_eval_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inspect switches to the task file's directory while it sets a task up.

    Logging must not follow it there: the database named relative to the directory the
    eval started in, and MLflow's default artifact root (``./mlruns``) beside it. The
    set-up window is widened here (it is short, but a store built in it is wrong for
    good), so the test does not depend on timing.
    """
    from inspect_ai._eval.task.log import TaskLogger

    task_dir = Path(__file__).parent
    stores = ("mlruns", "mlflow.db")
    before = {name for name in stores if (task_dir / name).exists()}
    init = TaskLogger.init

    async def slow_init(self: Any) -> None:
        import anyio

        assert Path.cwd() == task_dir  # still the window this test is about
        await anyio.sleep(1.5)
        await init(self)

    monkeypatch.setattr(TaskLogger, "init", slow_init)
    experiment = new_experiment_name("relative")
    monkeypatch.chdir(tmp_path)
    try:
        logs = run_logged(elsewhere_task(), "sqlite:///mlflow.db", experiment, log_dir="logs")
    finally:
        monkeypatch.undo()
        leaked = {name for name in stores if (task_dir / name).exists()} - before
        for name in leaked:  # leave the source tree as it was, then fail
            path = task_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    assert logs[0].status == "success"
    assert not leaked, f"written into the task's directory: {leaked}"
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    [run] = client.search_runs([exp.experiment_id], "attributes.run_name = 'elsewhere_task'")
    assert run.info.artifact_uri.startswith(str(tmp_path / "mlruns"))
    assert (tmp_path / "mlruns").is_dir()
    assert [p.name for p in (tmp_path / "mlruns").rglob("samples.json")] == ["samples.json"]


# -- 8. two evals in a row, one process, one store --------------------------------------


def test_two_evals_in_a_row_each_get_their_own_runs(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment = new_experiment_name("twice")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        first = run_logged(demo_task(3, name="first"), uri, experiment, log_dir=str(tmp_path))
        second = run_logged(demo_task(4, name="second"), uri, experiment, log_dir=str(tmp_path))
    finally:
        os.chdir(cwd)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 4
    by_id = {r.info.run_id: r for r in runs}
    for logs, name, samples in ((first, "first", 3), (second, "second", 4)):
        run_id = logs[0].eval.run_id
        mine = [r for r in runs if r.data.tags.get("inspect.run_id") == run_id]
        assert sorted(r.info.run_name for r in mine) == sorted([name, eval_run_name(logs)])
        [task_run] = [r for r in mine if r.info.run_name == name]
        parent = by_id[task_run.data.tags["mlflow.parentRunId"]]
        assert parent.info.run_name == eval_run_name(logs)
        assert task_run.info.status == parent.info.status == "FINISHED"
        assert task_run.data.metrics["total_samples"] == samples
        history = client.get_metric_history(task_run.info.run_id, "per_sample/match")
        assert sorted(p.step for p in history) == list(range(samples))


# -- 9. no tracking URI -----------------------------------------------------------------


def _tracking_hook() -> MlflowTrackingHook:
    [hook] = [h for h in get_all_hooks() if isinstance(h, MlflowTrackingHook)]
    return hook


def test_without_a_tracking_uri_nothing_is_logged(tmp_path: Path) -> None:
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with env(MLFLOW_TRACKING_URI=None, INSPECT_MLFLOW_TRACKING_URI=None):
            from inspect_ai import eval as inspect_eval

            logs = inspect_eval(
                demo_task(2, name="unlogged"),
                model=demo_model(),
                log_dir=str(tmp_path / "logs"),
                display="none",
            )
            enabled = _tracking_hook().enabled()
    finally:
        os.chdir(cwd)
    assert logs[0].status == "success"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]  # no mlflow.db, no mlruns
    assert enabled is False
    assert _tracking_hook()._session is None
