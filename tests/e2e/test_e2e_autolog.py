"""Provider autolog end to end: the real OpenAI SDK against a local OpenAI-compatible server.

Inspect's ``openai/...`` model calls the SDK for every sample; a solver also calls the SDK
itself (user code outside Inspect's model API, as a tool or scorer might). What must hold,
read back from the store and compared with Inspect's own log:

- no trace lands in any experiment other than the hook's (MLflow's ``Default`` included);
- every model call is counted once: the token usage summed over all traces of the
  experiment equals Inspect's ``stats.model_usage`` (plus, with autolog on, the user
  code's own calls, which only autolog records);
- with the defaults autolog is off: one trace per sample, nothing else;
- asked for explicitly, autolog traces the user code's calls only (Inspect's are already
  LLM spans of the sample traces), into the hook's experiment, each linked to its task
  run and naming its sample, and MLflow's process-wide state is as it was afterwards.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from e2e_support import new_experiment_name, run_logged
from inspect_ai import Task
from inspect_ai.dataset import Sample
from inspect_ai.log import EvalLog
from inspect_ai.scorer import match
from inspect_ai.solver import Generate, TaskState, generate, solver

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        importlib.util.find_spec("openai") is None, reason="needs the openai SDK (test extra)"
    ),
]

SAMPLES = 4
MODEL = "gpt-4o-mini"
USER_CALL_TOKENS = (2, 1)
"""(prompt, completion) tokens the server answers the solver's own SDK calls with."""


class _Server:
    """An OpenAI-compatible ``/v1/chat/completions`` on 127.0.0.1 that reports usage."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                if not self.path.endswith("/chat/completions"):
                    self.send_error(404)
                    return
                with server.lock:
                    server.calls.append(body)
                    n = len(server.calls)
                text = json.dumps(body.get("messages", []))
                if "user code" in text:
                    prompt, completion = USER_CALL_TOKENS
                else:  # differs per call, so a call counted twice or missed shows
                    prompt, completion = 10 + n, 3
                answer = {
                    "id": f"chatcmpl-{n}",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model", MODEL),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "4"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": prompt,
                        "completion_tokens": completion,
                        "total_tokens": prompt + completion,
                    },
                }
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def _shared_openai_server() -> Iterator[_Server]:
    # One for the module: Inspect keeps the model (and its client's base URL) across
    # evals of one process, so a later test's eval would call a closed port and retry.
    server = _Server()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def openai_server(_shared_openai_server: _Server) -> _Server:
    """The module's server, with the calls of earlier tests forgotten."""
    with _shared_openai_server.lock:
        _shared_openai_server.calls.clear()
    return _shared_openai_server


@solver
def user_sdk_call() -> Any:
    """User code calling the OpenAI SDK itself, outside Inspect's model API."""

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        from openai import AsyncOpenAI

        client = AsyncOpenAI()
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "user code: hello"}]
        )
        return state

    return solve


def _task() -> Task:
    return Task(
        name="autolog_openai",
        dataset=[Sample(input=f"What is {i} + 2?", target=str(i + 2)) for i in range(SAMPLES)],
        solver=[user_sdk_call(), generate()],
        scorer=match(),
    )


def _run(
    tmp_path: Path, server: _Server, tracking_uri: str, experiment: str | None, **env: str | None
) -> EvalLog:
    cwd = os.getcwd()
    os.chdir(tmp_path)
    records: list[logging.LogRecord] = []
    capture = logging.Handler(logging.WARNING)
    capture.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("inspect_mlflow").addHandler(capture)
    try:
        logs = run_logged(
            _task(),
            tracking_uri,
            experiment or "unused",
            log_dir=str(tmp_path / "logs"),
            model=f"openai/{MODEL}",
            extra_env={
                "OPENAI_BASE_URL": server.url,
                "OPENAI_API_KEY": "dummy",
                "MLFLOW_EXPERIMENT_NAME": experiment,
                "INSPECT_MLFLOW_AUTOLOG_ENABLED": None,  # the default unless a test sets it
                **env,
            },
        )
    finally:
        logging.getLogger("inspect_mlflow").removeHandler(capture)
        os.chdir(cwd)
    assert logs[0].status == "success", logs[0].error
    # none of autolog's warnings (its switching on, routing, linking or ending failed)
    messages = [r.getMessage() for r in records]
    assert [m for m in messages if "autolog:" in m or "provider autolog" in m] == []
    return logs[0]


def _inspect_tokens(log: EvalLog) -> int:
    return sum(usage.total_tokens for usage in log.stats.model_usage.values())


def _traces_by_experiment(
    tracking_uri: str, names: tuple[str, ...] | None = None
) -> dict[str, list[Any]]:
    """Every trace of every experiment of the store (or of those named), by name."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(tracking_uri=tracking_uri)
    found: dict[str, list[Any]] = {}
    for experiment in client.search_experiments(view_type=ViewType.ALL):
        if names is not None and experiment.name not in names:
            continue
        traces = client.search_traces(locations=[experiment.experiment_id], max_results=500)
        if traces:
            found[experiment.name] = list(traces)
    return found


def _span_tokens(traces: list[Any]) -> int:
    """Total tokens of the LLM spans (Inspect's ``LLM``, MLflow's ``CHAT_MODEL``)."""
    total = 0
    for trace in traces:
        for span in trace.data.spans:
            usage = span.attributes.get("mlflow.chat.tokenUsage")
            if span.span_type in ("LLM", "CHAT_MODEL") and usage:
                total += int(usage["total_tokens"])
    return total


def _trace_tokens(traces: list[Any]) -> int:
    """Total tokens as MLflow's UI sums them: each trace's aggregated token usage."""
    return sum(int((t.info.token_usage or {}).get("total_tokens", 0)) for t in traces)


def _is_autolog(trace: Any) -> bool:
    return trace.info.trace_metadata.get("inspect_mlflow.autolog") == "true"


@pytest.mark.parametrize("experiment", [None, "named"], ids=["no-experiment-name", "named"])
def test_default_settings_count_every_call_once_in_the_hooks_experiment(
    tmp_path: Path, openai_server: _Server, experiment: str | None
) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    name = new_experiment_name("autolog-default") if experiment else None
    log = _run(tmp_path, openai_server, uri, name)
    # the SDK really went to the server: one model call and one user call per sample
    assert len(openai_server.calls) == 2 * SAMPLES

    found = _traces_by_experiment(uri)
    assert list(found) == [name or "inspect_ai"]  # nothing in Default, nothing elsewhere
    traces = found[name or "inspect_ai"]
    assert len(traces) == SAMPLES and not any(_is_autolog(t) for t in traces)
    assert _span_tokens(traces) == _trace_tokens(traces) == _inspect_tokens(log) > 0


def _check_explicit(
    uri: str, name: str, log: EvalLog, server: _Server, *, shared_store: bool = False
) -> None:
    """Autolog traces only the user code's calls, into the hook's experiment, linked.

    A shared store (the session's server) holds other tests' experiments: there only
    ``Default`` is checked besides the hook's.
    """
    from mlflow import MlflowClient

    assert len(server.calls) == 2 * SAMPLES
    found = _traces_by_experiment(uri, (name, "Default") if shared_store else None)
    assert list(found) == [name]
    traces = found[name]
    autolog = [t for t in traces if _is_autolog(t)]
    samples = [t for t in traces if not _is_autolog(t)]
    assert len(samples) == SAMPLES
    # one per user call; none for Inspect's own calls (already LLM spans of `samples`)
    assert len(autolog) == SAMPLES
    user_tokens = SAMPLES * sum(USER_CALL_TOKENS)
    assert _span_tokens(autolog) == _trace_tokens(autolog) == user_tokens
    assert _span_tokens(samples) == _trace_tokens(samples) == _inspect_tokens(log)

    # each names its sample, and is linked to the task run that holds the sample traces
    client = MlflowClient(tracking_uri=uri)
    experiment_id = traces[0].info.experiment_id
    task_runs = client.search_runs([experiment_id], filter_string="tags.`inspect.eval_id` != ''")
    task_runs = [r for r in task_runs if r.data.tags.get("inspect.task") == "autolog_openai"]
    assert len(task_runs) == 1
    linked = client.search_traces(locations=[experiment_id], run_id=task_runs[0].info.run_id)
    assert {t.info.trace_id for t in linked} == {t.info.trace_id for t in traces}
    # the filter MLflow's UI lists a run's Traces tab with
    run_id = task_runs[0].info.run_id
    shown = client.search_traces(
        locations=[experiment_id], filter_string=f"metadata.`mlflow.sourceRun` = '{run_id}'"
    )
    assert {t.info.trace_id for t in shown} == {t.info.trace_id for t in traces}
    sample_ids = sorted(t.info.trace_metadata["inspect.sample_id"] for t in autolog)
    assert sample_ids == sorted(str(s.id) for s in log.samples or [])
    assert {t.info.trace_metadata["inspect.eval_id"] for t in autolog} == {log.eval.eval_id}


def _check_restored(tracking_uri_before: str | None) -> None:
    """Autolog off again, and MLflow's tracing destination and URI as they were."""
    import mlflow
    from mlflow.tracing.config import get_config
    from mlflow.tracing.provider import _MLFLOW_TRACE_USER_DESTINATION
    from mlflow.utils.autologging_utils import autologging_is_disabled

    assert autologging_is_disabled("openai")
    assert _MLFLOW_TRACE_USER_DESTINATION.get() is None
    assert get_config().span_processors == []
    assert mlflow.get_tracking_uri() == tracking_uri_before
    from openai.resources.chat.completions import AsyncCompletions

    assert not hasattr(AsyncCompletions.create, "_inspect_mlflow_bypass")


@pytest.fixture
def openai_autolog_off() -> Iterator[None]:
    """Start and end with openai autolog off: it is process-wide state."""
    import mlflow.openai

    mlflow.openai.autolog(disable=True, silent=True)
    try:
        yield
    finally:
        mlflow.openai.autolog(disable=True, silent=True)


@pytest.mark.usefixtures("openai_autolog_off")
@pytest.mark.parametrize("delivery", ["process", "thread"])
def test_explicit_autolog_traces_user_calls_only_into_the_hooks_experiment(
    tmp_path: Path, openai_server: _Server, delivery: str
) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    name = new_experiment_name("autolog-explicit")
    before = mlflow.get_tracking_uri()
    log = _run(
        tmp_path,
        openai_server,
        uri,
        name,
        INSPECT_MLFLOW_AUTOLOG_ENABLED="true",
        INSPECT_MLFLOW_AUTOLOG_MODELS="openai",
        INSPECT_MLFLOW_DELIVERY=delivery,
    )
    _check_explicit(uri, name, log, openai_server)
    _check_restored(before)


@pytest.mark.usefixtures("openai_autolog_off")
def test_explicit_autolog_follows_the_packages_own_tracking_uri(
    tmp_path: Path, openai_server: _Server
) -> None:
    """INSPECT_MLFLOW_TRACKING_URI elsewhere than MLflow's: the traces follow the hook."""
    import mlflow

    before = mlflow.get_tracking_uri()
    hook_uri = f"sqlite:///{tmp_path}/hook.db"
    user_uri = f"sqlite:///{tmp_path}/user.db"
    name = new_experiment_name("autolog-uri")
    log = _run(
        tmp_path,
        openai_server,
        user_uri,  # MLFLOW_TRACKING_URI
        name,
        INSPECT_MLFLOW_TRACKING_URI=hook_uri,
        INSPECT_MLFLOW_AUTOLOG_ENABLED="true",
        INSPECT_MLFLOW_AUTOLOG_MODELS="openai",
    )
    _check_explicit(hook_uri, name, log, openai_server)
    assert _traces_by_experiment(user_uri) == {}
    _check_restored(before)


@pytest.mark.server
@pytest.mark.usefixtures("openai_autolog_off")
def test_explicit_autolog_on_a_server(
    tmp_path: Path, openai_server: _Server, server_store: Any
) -> None:
    log = _run(
        tmp_path,
        openai_server,
        server_store.tracking_uri,
        server_store.experiment_name,
        INSPECT_MLFLOW_AUTOLOG_ENABLED="true",
        INSPECT_MLFLOW_AUTOLOG_MODELS="openai",
    )
    _check_explicit(
        server_store.tracking_uri,
        server_store.experiment_name,
        log,
        openai_server,
        shared_store=True,
    )


@pytest.mark.usefixtures("openai_autolog_off")
def test_explicit_autolog_restores_the_users_own_tracing_settings(
    tmp_path: Path, openai_server: _Server
) -> None:
    """A destination and span processor the user set before the run are theirs again after."""
    import mlflow
    from mlflow.entities.trace_location import MlflowExperimentLocation
    from mlflow.tracing.config import get_config
    from mlflow.tracing.provider import _MLFLOW_TRACE_USER_DESTINATION

    seen: list[str] = []

    def users_processor(span: Any) -> None:
        seen.append(span.name)

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    name = new_experiment_name("autolog-restore")
    users = MlflowExperimentLocation("12345")
    mlflow.tracing.set_destination(users)
    mlflow.tracing.configure(span_processors=[users_processor])
    try:
        log = _run(
            tmp_path,
            openai_server,
            uri,
            name,
            INSPECT_MLFLOW_AUTOLOG_ENABLED="true",
            INSPECT_MLFLOW_AUTOLOG_MODELS="openai",
        )
        _check_explicit(uri, name, log, openai_server)
        assert len(seen) == SAMPLES  # the user's processor kept running on autolog's spans
        assert _MLFLOW_TRACE_USER_DESTINATION.get() == users
        assert get_config().span_processors == [users_processor]
    finally:
        mlflow.tracing.reset()
