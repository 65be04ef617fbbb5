"""End to end: a real offline eval's payloads, the default mapping's ``sample-trace`` rule,
the trace sender, and a real MLflow store (sqlite file and `mlflow server`).

What is checked against the ``.eval`` log written by the same eval: one trace per sample
and epoch, on the task run; N x S assessments with the scorer names and values (numbers
where the score converts, the raw string or object otherwise); one LLM span per model
event and one TOOL span per tool event, plus the solver/scorer spans; each span's start
and duration equal to the event's (within 10 ms).
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from inspect_ai import Epochs, Task, eval
from inspect_ai.dataset import Sample
from inspect_ai.hooks import Hooks, RunStart, SampleEnd, TaskStart, hooks
from inspect_ai.log import read_eval_log
from inspect_ai.model import ChatMessageTool, ModelOutput, ModelUsage, get_model
from inspect_ai.scorer import Score, Target, match, scorer
from inspect_ai.solver import TaskState, generate, use_tools
from inspect_ai.tool import tool

from inspect_mlflow._engine.contexts import context
from inspect_mlflow._engine.engine import Engine
from inspect_mlflow._mapping import load_mapping
from inspect_mlflow._operations import LogTrace
from inspect_mlflow._writer.mlflow_sink.trace_send import TraceSender
from inspect_mlflow._writer.mlflow_sink.trace_values import trace_id_for

pytestmark = pytest.mark.e2e

SAMPLES = 3
EPOCHS = 2
SCORERS = ("match", "closeness", "verdict", "parts")
TOLERANCE_NS = 10_000_000

# -- a real eval, recorded -------------------------------------------------------------

_recording: dict[str, list[Any]] | None = None


@hooks(name="inspect_mlflow_test_trace_recorder", description="test-only payload recorder")
class _Recorder(Hooks):
    """Keeps the payloads the trace rule needs; enabled only while a test records."""

    def enabled(self) -> bool:
        return _recording is not None

    async def on_run_start(self, data: RunStart) -> None:
        assert _recording is not None
        _recording["run_start"].append(data)

    async def on_task_start(self, data: TaskStart) -> None:
        assert _recording is not None
        _recording["task_start"].append(data)

    async def on_sample_end(self, data: SampleEnd) -> None:
        assert _recording is not None
        _recording["sample_end"].append(data)


@tool
def add() -> Any:
    async def execute(x: int, y: int) -> int:
        """Add two numbers.

        Args:
            x: First number.
            y: Second number.
        """
        return x + y

    return execute


def _usage(output: ModelOutput) -> ModelOutput:
    output.usage = ModelUsage(input_tokens=10, output_tokens=5, total_tokens=15)
    return output


def _answer(input: list[Any], tools: Any, tool_choice: Any, config: Any) -> ModelOutput:
    if isinstance(input[-1], ChatMessageTool):
        return _usage(ModelOutput.from_content(model="mockllm/model", content=input[-1].text))
    x = int(input[0].text.split()[2])
    return _usage(
        ModelOutput.for_tool_call(
            model="mockllm/model", tool_name="add", tool_arguments={"x": x, "y": 1}
        )
    )


@scorer(metrics=[])
def closeness() -> Any:
    async def score(state: TaskState, target: Target) -> Score:
        return Score(value=0.25, explanation="a float score")

    return score


@scorer(metrics=[])
def verdict() -> Any:
    async def score(state: TaskState, target: Target) -> Score:
        return Score(value="great", explanation="a string score")

    return score


@scorer(metrics=[])
def parts() -> Any:
    async def score(state: TaskState, target: Target) -> Score:
        return Score(value={"correct": 1, "style": "ok"}, explanation="an object score")

    return score


def _task() -> Task:
    return Task(
        dataset=[
            Sample(id=i, input=f"What is {i} plus one?", target=str(i + 1)) for i in range(SAMPLES)
        ],
        solver=[use_tools(add()), generate()],
        scorer=[match(), closeness(), verdict(), parts()],
        name="trace_e2e",
    )


@pytest.fixture(scope="module")
def recorded() -> Iterator[dict[str, Any]]:
    global _recording
    _recording = {"run_start": [], "task_start": [], "sample_end": []}
    log_dir = tempfile.mkdtemp(prefix="trace-e2e-")
    try:
        [log] = eval(
            _task(),
            model=get_model("mockllm/model", custom_outputs=_answer),
            epochs=Epochs(EPOCHS),
            max_samples=3,
            display="none",
            log_dir=log_dir,
        )
        recording: dict[str, Any] = dict(_recording)
    finally:
        _recording = None
    assert log.status == "success"
    recording["log"] = read_eval_log(log.location)
    yield recording


def _traces_from_engine(recorded: dict[str, Any]) -> list[LogTrace]:
    """The default mapping's trace rule applied to the recorded payloads."""
    engine = Engine(load_mapping())
    out: list[LogTrace] = []
    for point in ("run_start", "task_start", "sample_end"):
        for payload in recorded[point]:
            out.extend(
                op
                for op in engine.handle(point, context(point, payload))
                if isinstance(op, LogTrace)
            )
    assert engine.problem_summary() == []
    return out


def _ns(iso: Any) -> int:
    moment = iso if isinstance(iso, datetime) else datetime.fromisoformat(str(iso))
    return int(round(moment.timestamp() * 1e9))


# -- the proof ------------------------------------------------------------------------


def test_default_trace_rule_lands_every_sample_span_and_score(
    recorded: dict[str, Any], mlflow_store: Any
) -> None:
    from mlflow.tracing.client import TracingClient

    ops = _traces_from_engine(recorded)
    log = recorded["log"]
    assert len(ops) == len(log.samples) == SAMPLES * EPOCHS

    client = mlflow_store.client()
    experiment_id = mlflow_store.create_experiment()
    run_id = client.create_run(experiment_id).info.run_id
    other_run = client.create_run(experiment_id).info.run_id
    TraceSender(mlflow_store.tracking_uri, experiment_id).send([(op, run_id) for op in ops])

    traces = TracingClient(mlflow_store.tracking_uri).search_traces(
        locations=[experiment_id], run_id=run_id, max_results=100
    )
    assert len(traces) == SAMPLES * EPOCHS
    assert (
        len(
            TracingClient(mlflow_store.tracking_uri).search_traces(
                locations=[experiment_id], run_id=other_run
            )
        )
        == 0
    )
    by_id = {t.info.trace_id: t for t in traces}

    # Feedback: N x S assessments, named by scorer, values as documented.
    assessments = [a for t in traces for a in t.info.assessments if a.feedback is not None]
    assert len(assessments) == SAMPLES * EPOCHS * len(SCORERS)
    assert Counter(a.name for a in assessments) == {s: SAMPLES * EPOCHS for s in SCORERS}
    for a in assessments:
        assert a.source.source_type == "CODE" and a.source.source_id == "inspect_ai"
        assert a.metadata["mlflow.assessment.sourceRunId"] == run_id
        assert {"sample_id", "epoch"} <= set(a.metadata)
    values = {(a.name, str(a.value)) for a in assessments}
    assert ("match", "1") in values or ("match", "1.0") in values  # "C" -> 1
    assert ("closeness", "0.25") in values
    assert ("verdict", "great") in values  # a string score stays a string
    parts_values = [a.value for a in assessments if a.name == "parts"]
    assert all(v == {"correct": 1, "style": "ok"} for v in parts_values)

    for sample in log.samples:
        trace = by_id[trace_id_for(sample.uuid, run_id)]
        info = trace.info
        assert info.tags["inspect.sample_id"] == str(sample.id)
        assert info.tags["inspect.epoch"] == str(sample.epoch)
        assert info.state.value == "OK"
        # Root: the sample's real start and end.
        root = next(s for s in trace.data.spans if s.parent_id is None)
        assert abs(root.start_time_ns - _ns(sample.started_at)) <= TOLERANCE_NS
        assert abs(root.end_time_ns - _ns(sample.completed_at)) <= TOLERANCE_NS
        assert info.response_preview == sample.output.completion

        # Children: one LLM span per model event, one TOOL span per tool event, one span
        # per span_begin (a tool's own span excepted), with the events' real times.
        events = sample.events
        models = [e for e in events if e.event == "model"]
        tools = [e for e in events if e.event == "tool"]
        begins = [e for e in events if e.event == "span_begin" and e.type != "tool"]
        spans = [s for s in trace.data.spans if s.parent_id is not None]
        kinds = Counter(s.span_type for s in spans)
        assert kinds["LLM"] == len(models) == 2
        assert kinds["TOOL"] == len(tools) == 1
        assert len(spans) == len(models) + len(tools) + len(begins)
        for event, kind in [(e, "LLM") for e in models] + [(e, "TOOL") for e in tools]:
            start = _ns(event.timestamp)
            span = min(
                (s for s in spans if s.span_type == kind),
                key=lambda s: abs(s.start_time_ns - start),
            )
            assert abs(span.start_time_ns - start) <= TOLERANCE_NS
            want = _ns(event.completed) - start
            assert abs((span.end_time_ns - span.start_time_ns) - want) <= TOLERANCE_NS
        ends = {e.id: e for e in events if e.event == "span_end"}
        names = Counter(s.name for s in spans if s.span_type in ("CHAIN", "EVALUATOR"))
        assert names == Counter(b.name for b in begins)
        for begin in begins:
            start = _ns(begin.timestamp)
            span = min(
                (s for s in spans if s.name == begin.name),
                key=lambda s: abs(s.start_time_ns - start),
            )
            assert abs(span.start_time_ns - start) <= TOLERANCE_NS
            want = _ns(ends[begin.id].timestamp) - start
            assert abs((span.end_time_ns - span.start_time_ns) - want) <= TOLERANCE_NS
        # Model spans carry token usage where MLflow's UI reads it; the trace sums it.
        llm = [s for s in spans if s.span_type == "LLM"]
        assert all(s.attributes["mlflow.chat.tokenUsage"]["total_tokens"] == 15 for s in llm)
        assert all(s.attributes["mlflow.llm.model"] == "mockllm/model" for s in llm)
        assert info.token_usage == {"input_tokens": 20, "output_tokens": 10, "total_tokens": 30}
        [tool_span] = [s for s in spans if s.span_type == "TOOL"]
        assert tool_span.name == "add" and tool_span.inputs == {"x": sample.id, "y": 1}
        assert str(tool_span.outputs) == str(sample.id + 1)
        # Scorer spans hang under the scorers span; model calls under the generate solver.
        parent_names = {s.span_id: s.name for s in spans}
        assert {parent_names.get(s.parent_id) for s in llm} == {"generate"}


HERE = Path(__file__).resolve().parent

_HOOK_SCRIPT = """
import sys
sys.path[:0] = sys.argv[2:4]
from inspect_ai import eval
from test_traces_e2e import _answer, _task
[log] = eval(_task(), model="mockllm/model", model_args={"custom_outputs": _answer},
             log_dir=sys.argv[1], max_samples=3, display="none")
print("LOG", log.status, log.location)
"""


def test_the_hook_logs_traces_on_the_task_run(tmp_path: Any) -> None:
    """The whole path: Inspect -> hook -> engine -> writer -> sink -> trace sender.

    Run in a fresh interpreter with the environment set from the start, as a user runs
    it: in this process an earlier ``get_model()`` may already have asked the hook
    whether it is enabled while ``MLFLOW_TRACKING_URI`` was unset.
    """
    import os
    import subprocess
    import sys

    from mlflow import MlflowClient
    from mlflow.tracing.client import TracingClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "INSPECT_MLFLOW_"))}
    env.update(
        MLFLOW_TRACKING_URI=uri,
        MLFLOW_EXPERIMENT_NAME="traces-hook",
        INSPECT_MLFLOW_AUTOLOG_ENABLED="false",
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _HOOK_SCRIPT,
            str(tmp_path / "logs"),
            str(HERE),
            str(HERE.parent / "support"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [line] = [x for x in done.stdout.splitlines() if x.startswith("LOG ")]
    _, status, location = line.split(" ", 2)
    assert status == "success"
    log = read_eval_log(location)

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("traces-hook")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    task_run = runs["trace_e2e"]
    tracing = TracingClient(uri)
    traces = tracing.search_traces(
        locations=[experiment.experiment_id], run_id=task_run.info.run_id, max_results=100
    )
    assert {t.info.trace_id for t in traces} == {
        trace_id_for(s.uuid, task_run.info.run_id) for s in log.samples
    }
    feedback = [a for t in traces for a in t.info.assessments if a.feedback is not None]
    assert len(feedback) == SAMPLES * len(SCORERS)
    spans = Counter(s.span_type for t in traces for s in t.data.spans)
    events = Counter(e.event for s in log.samples for e in s.events)
    assert spans["LLM"] == events["model"] and spans["TOOL"] == events["tool"]
    parent = next(r for name, r in runs.items() if name != "trace_e2e")
    assert (
        tracing.search_traces(locations=[experiment.experiment_id], run_id=parent.info.run_id) == []
    )
