"""Real Inspect hook payloads, recorded from offline evals, for tests of the mapping runtime.

Why: the engine and the context views must be tested against what Inspect really hands
a hook (frozen dataclasses holding pydantic models, lazy lists, events delivered twice),
not against hand-written dicts that drift from Inspect. This module runs small real
evals with the mock model (no network) while a test-only recording hook is enabled, and
returns every payload object, unchanged, grouped by lifecycle point.

Usage::

    from payloads import record_scenario  # tests/ is on sys.path under pytest

    rec = record_scenario("ok")           # cached for the whole test session
    [start] = rec["task_start"]           # inspect_ai.hooks.TaskStart
    events = rec["sample_event"]          # every SampleEvent, in delivery order
    rec.sequence                          # [(point, payload), ...] in hook order

Scenarios (see ``SCENARIOS``):

- ``"ok"``: one task ``arith`` (3 samples, ``epochs=2``, ``max_samples=3``) with a tool
  ``add``, scorers ``match()`` and ``digits``, a task arg ``api_key`` and a model arg
  ``token`` (credentials that must be redacted), model ``mockllm/model@v1`` (a name
  MLflow rejects as a key) and ``temperature=0.2``.
- ``"failing"``: the same task (one epoch, one sample at a time) where the model raises
  on sample id 2, with the default ``fail_on_error``: that model event is delivered once,
  with an error and no ``completed``; sample 3 is cancelled; the task ends in error and
  ``task_end`` never fires.

The recording hook is registered globally (Inspect hooks are global, keyed by name) under
a name no other code uses, and is enabled only while ``record_scenario`` runs an eval, so
it is inert for every other test in the session.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from inspect_ai import Epochs, Task, eval, task
from inspect_ai.dataset import Sample
from inspect_ai.hooks import Hooks, hooks
from inspect_ai.model import (
    ChatMessageTool,
    ChatMessageUser,
    ModelOutput,
    ModelUsage,
    get_model,
)
from inspect_ai.scorer import Score, Target, accuracy, match, mean, scorer
from inspect_ai.solver import TaskState, generate, use_tools
from inspect_ai.tool import tool

from inspect_mlflow._mapping.model import LIFECYCLE_POINTS

MODEL_NAME = "mockllm/model@v1"
"""Model name with a character MLflow rejects in keys (``@``)."""

POINTS: tuple[str, ...] = LIFECYCLE_POINTS
"""Lifecycle points the recorder listens to (Inspect's hook methods without ``on_``)."""

SAMPLES: tuple[tuple[int, int, int], ...] = ((1, 1, 1), (2, 2, 3), (3, 10, 20))
"""(id, x, y) of each sample: the question is ``x + y``, the target its sum."""

EPOCHS = 2
FAILING_SAMPLE_ID = 2
TASK_ARGS: dict[str, Any] = {"api_key": "sk-test-secret", "difficulty": "easy"}
MODEL_ARGS: dict[str, Any] = {"token": "tok-test-secret"}
USAGE = ModelUsage(input_tokens=10, output_tokens=5, total_tokens=15)


@dataclass
class Recording:
    """Every payload one eval handed to the hooks, grouped by point, in delivery order."""

    scenario: str
    log_dir: str
    by_point: dict[str, list[Any]] = field(default_factory=dict)
    sequence: list[tuple[str, Any]] = field(default_factory=list)
    logs: list[Any] = field(default_factory=list)
    """The EvalLogs returned by ``eval()``."""

    def __getitem__(self, point: str) -> list[Any]:
        """Payloads of one point (an empty list when the point never fired)."""
        return self.by_point.get(point, [])

    def add(self, point: str, data: Any) -> None:
        """Store one payload (called by the recording hook on the event loop)."""
        self.by_point.setdefault(point, []).append(data)
        self.sequence.append((point, data))


_active: Recording | None = None


def _make_recorder() -> type[Hooks]:
    """Build the recording hook class, one ``on_<point>`` per lifecycle point."""

    def method(point: str) -> Callable[..., Any]:
        async def on_point(self: Hooks, data: Any) -> None:
            if _active is not None:
                _active.add(point, data)

        on_point.__name__ = f"on_{point}"
        return on_point

    namespace: dict[str, Any] = {
        "enabled": lambda self: _active is not None,
        "__doc__": "Test-only hook storing every payload while a recording is active.",
    }
    for point in POINTS:
        if hasattr(Hooks, f"on_{point}"):
            namespace[f"on_{point}"] = method(point)
    return type("PayloadRecorder", (Hooks,), namespace)


PayloadRecorder = hooks(
    name="inspect_mlflow_tests_payload_recorder",
    description="Records hook payloads for inspect-mlflow tests (enabled only while recording).",
)(_make_recorder())


def _usage() -> ModelUsage:
    return USAGE.model_copy()


def _text(content: str) -> ModelOutput:
    out = ModelOutput.from_content(model=MODEL_NAME, content=content)
    out.usage = _usage()
    return out


def _tool_call(x: int, y: int) -> ModelOutput:
    out = ModelOutput.for_tool_call(
        model=MODEL_NAME, tool_name="add", tool_arguments={"x": x, "y": y}
    )
    out.usage = _usage()
    return out


def answer(input: list[Any], tools: Any, tool_choice: Any, config: Any) -> ModelOutput:
    """Mock model: ask the tool for ``x + y`` first, then answer with the tool's result.

    Answers from the sample's own messages, so concurrent samples never steal each
    other's outputs.
    """
    last = input[-1]
    if isinstance(last, ChatMessageTool):
        return _text(last.text)
    question = next(m for m in input if isinstance(m, ChatMessageUser)).text
    x, y = (int(part) for part in question.removeprefix("What is ").rstrip("?").split("+"))
    return _tool_call(x, y)


@tool
def add() -> Any:
    """Tool adding two integers."""

    async def execute(x: int, y: int) -> int:
        """Add two numbers.

        Args:
            x: First number.
            y: Second number.
        """
        return x + y

    return execute


@scorer(metrics=[mean()])
def digits() -> Any:
    """Second scorer: the number of digits in the answer, with an explanation."""

    async def score(state: TaskState, target: Target) -> Score:
        text = state.output.completion
        return Score(value=len(text), answer=text, explanation=f"{len(text)} digit(s)")

    return score


def failing_answer(input: list[Any], tools: Any, tool_choice: Any, config: Any) -> ModelOutput:
    """Mock model of the ``failing`` scenario: raises on sample ``FAILING_SAMPLE_ID``."""
    _, x, y = next(s for s in SAMPLES if s[0] == FAILING_SAMPLE_ID)
    question = next(m for m in input if isinstance(m, ChatMessageUser)).text
    if question == f"What is {x}+{y}?":
        raise RuntimeError("model failed on purpose")
    return answer(input, tools, tool_choice, config)


@task
def arith(api_key: str = "", difficulty: str = "easy") -> Task:
    """Three additions solved with the ``add`` tool, scored by two scorers."""
    return Task(
        dataset=[
            Sample(id=sid, input=f"What is {x}+{y}?", target=str(x + y)) for sid, x, y in SAMPLES
        ],
        solver=[use_tools(add()), generate()],
        scorer=[match(), digits()],
        metrics=[accuracy()],
    )


def _run_ok(log_dir: str) -> list[Any]:
    model = get_model(MODEL_NAME, custom_outputs=answer, **MODEL_ARGS)
    return eval(
        arith(**TASK_ARGS),
        model=model,
        log_dir=log_dir,
        display="none",
        epochs=Epochs(EPOCHS),
        max_samples=3,
        temperature=0.2,
    )


def _run_failing(log_dir: str) -> list[Any]:
    model = get_model(MODEL_NAME, custom_outputs=failing_answer, **MODEL_ARGS)
    return eval(
        arith(**TASK_ARGS),
        model=model,
        log_dir=log_dir,
        display="none",
        max_samples=1,
    )


SCENARIOS: dict[str, Callable[[str], list[Any]]] = {"ok": _run_ok, "failing": _run_failing}
"""Scenario name -> function running the eval in a log dir."""


@functools.cache
def record_scenario(name: str) -> Recording:
    """Run one scenario's eval with the recorder enabled; cached for the process.

    Args:
        name: A key of ``SCENARIOS``.

    Returns:
        The recording. Treat it as read-only: it is shared by every caller.
    """
    global _active
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; known: {sorted(SCENARIOS)}")
    recording = Recording(scenario=name, log_dir=tempfile.mkdtemp(prefix=f"payloads-{name}-"))
    _active = recording
    try:
        recording.logs = list(SCENARIOS[name](recording.log_dir))
    finally:
        _active = None
    return recording
