"""End to end: long samples, huge answers and busy HTTP evals (issue 14, cases 6, 9d, 9e).

Real offline evals (mock model) against a real store, compared with Inspect's own log:

- a sample with more spans than ``INSPECT_MLFLOW_TRACE_MAX_SPANS`` keeps its start, its
  structure and its end (the final answer's model call, ``scorers`` and its children),
  every parent link resolves, ``inspect_mlflow.droppedSpans`` says how many went, and the
  trace's token usage counts every model call of the log;
- a 200 KB answer gives no table cell far over the 4000-character cut, nested values
  included, and bounded records, while the log keeps the whole answer;
- an eval of 24 samples against a real ``mlflow server`` makes urllib3 print no
  "Connection pool is full" warning, in either delivery mode.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import download_json
from inspect_ai import Task
from inspect_ai.dataset import Sample
from inspect_ai.log import read_eval_log
from inspect_ai.model import get_model
from inspect_ai.scorer import includes, match
from inspect_ai.solver import generate, use_tools
from scenario_support import Scenario, mock_output, run_scenario

from inspect_mlflow._commands.demo import DEMO_MODEL, add_tool, answer, demo_task
from inspect_mlflow._delivery import remote as _remote
from inspect_mlflow._engine.values import MAX_CELL_CHARS, MAX_RECORD_CHARS
from inspect_mlflow._operations import LogTrace, SpanData
from inspect_mlflow._writer.mlflow_sink.trace_build import build_trace
from inspect_mlflow._writer.mlflow_sink.trace_values import DROPPED_SPANS, span_id_for

pytestmark = pytest.mark.e2e

MS = 1_000_000

# -- 6. a sample longer than the span cap ----------------------------------------------

CALLS = 150
"""Model calls of the long sample (149 tool calls between them): 300 spans or so."""
MAX_SPANS = 200
"""The cap for the long sample: the same rule as at 600 calls and 1000 spans, faster."""


def _long_outputs(input: list[Any], tools: Any, tool_choice: Any, config: Any) -> Any:
    """Call ``add`` until this is the CALLS-th model call, then answer."""
    calls = sum(1 for m in input if m.role == "assistant")
    if calls + 1 < CALLS:
        return mock_output(tool_name="add", tool_arguments={"x": calls, "y": 1})
    return mock_output("done")


@pytest.fixture(scope="module")
def long_sample(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    task = Task(
        name="long",
        dataset=[Sample(id=1, input="Keep adding.", target="done")],
        solver=[use_tools(add_tool()), generate()],
        scorer=[match(), includes()],
    )
    scenario = run_scenario(
        tmp_path_factory.mktemp("long-sample"),
        task,
        model=get_model(DEMO_MODEL, custom_outputs=_long_outputs, memoize=False),
        extra_env={"INSPECT_MLFLOW_TRACE_MAX_SPANS": str(MAX_SPANS)},
    )
    assert scenario.logs[0].status == "success", scenario.error
    return scenario


def _mapped(event: Any) -> bool:
    """The events the default mapping's ``sample-trace`` rule makes a span of."""
    return event.event in ("model", "tool") or (
        event.event == "span_begin" and event.type != "tool"
    )


def _span_key(event: Any) -> str:
    return event.id if event.event == "span_begin" else event.uuid


def test_a_capped_trace_keeps_its_start_its_structure_and_its_end(long_sample: Scenario) -> None:
    run = long_sample.run("long")
    [sample] = read_eval_log(long_sample.logs[0].location).samples or []
    [trace] = long_sample.traces(run)
    spans = trace.data.spans
    ids = {s.span_id for s in spans}
    expected = {
        _span_key(e): f"{span_id_for(sample.uuid, _span_key(e)):016x}"
        for e in sample.events
        if _mapped(e)
    }
    assert len(expected) > MAX_SPANS  # the sample really is over the cap
    assert len(spans) == MAX_SPANS
    assert trace.info.trace_metadata[DROPPED_SPANS] == str(len(expected) - (len(spans) - 1))

    model_events = [e for e in sample.events if e.event == "model"]
    begins = {e.id: e for e in sample.events if e.event == "span_begin"}
    scorers = next(e for e in begins.values() if e.type == "scorers")
    must = [model_events[0], model_events[-1], scorers]
    must += [e for e in begins.values() if e.parent_id == scorers.id]  # match, includes
    must += [e for e in begins.values() if e.type in ("solvers", "solver")]
    missing = [
        e.event + ":" + str(getattr(e, "name", ""))
        for e in must
        if expected[_span_key(e)] not in ids
    ]
    assert not missing, f"kept spans lack {missing}"
    assert model_events[-1].output.completion == "done"  # the final answer's call

    [root] = [s for s in spans if s.parent_id is None]
    assert all(s.parent_id in ids for s in spans if s is not root)
    by_id = {s.span_id: s for s in spans}
    for event in begins.values():  # the scorers' spans stay under the scorers span
        if event.parent_id == scorers.id:
            assert by_id[expected[event.id]].parent_id == expected[scorers.id]


def test_a_capped_trace_counts_the_tokens_of_every_model_call(long_sample: Scenario) -> None:
    run = long_sample.run("long")
    [sample] = read_eval_log(long_sample.logs[0].location).samples or []
    [trace] = long_sample.traces(run)
    usages = [e.output.usage for e in sample.events if e.event == "model"]
    assert len(usages) == CALLS
    assert trace.info.token_usage == {
        "input_tokens": sum(u.input_tokens for u in usages),
        "output_tokens": sum(u.output_tokens for u in usages),
        "total_tokens": sum(u.total_tokens for u in usages),
    }


def _span(key: str, parent: str | None, start: int, **extra: Any) -> SpanData:
    return SpanData(key, parent, key, extra.pop("kind", "LLM"), start * MS, start * MS + 1, **extra)


def test_a_kept_span_whose_parent_was_dropped_hangs_under_its_nearest_kept_ancestor() -> None:
    # More holders than half the cap: the earliest and latest spans of all are kept, and
    # a kept leaf whose own holder went attaches to the holder's kept ancestor.
    spans = [_span("top", None, 0, kind="CHAIN")]
    spans += [_span(f"h{i}", "top", 1 + i, kind="CHAIN") for i in range(6)]
    spans += [_span(f"leaf{i}", f"h{i}", 10 + i) for i in range(6)]
    usage = {"input_tokens": 2, "output_tokens": 1, "total_tokens": 3}
    spans = [
        SpanData(
            s.span_id,
            s.parent_id,
            s.name,
            s.span_type,
            s.start_time_ns,
            s.end_time_ns,
            attributes={"mlflow.chat.tokenUsage": usage} if s.span_id.startswith("leaf") else {},
        )
        for s in spans
    ]
    op = LogTrace(
        run="r",
        trace_key="k",
        name="root",
        start_time_ns=0,
        end_time_ns=99 * MS,
        spans=tuple(spans),
    )
    payload = build_trace(op, "run", "1", max_spans_per_trace=5)
    names = [s.name for s in payload.spans]
    assert names == ["root", "top", "h0", "leaf4", "leaf5"]
    by_name = {s.name: s for s in payload.spans}
    assert by_name["leaf4"].parent_id == by_name["top"].span_id  # h4 was dropped
    assert by_name["leaf5"].parent_id == by_name["top"].span_id
    assert by_name["top"].parent_id == by_name["root"].span_id
    assert payload.info.trace_metadata[DROPPED_SPANS] == "9"
    assert json.loads(payload.info.trace_metadata["mlflow.trace.tokenUsage"])["total_tokens"] == 18


# -- 9d. a 200 KB answer ----------------------------------------------------------------

HUGE = 200_000
CELL_MARGIN = 400
"""How far over the cut a cell's JSON may go (keys, punctuation, escapes)."""


def _huge_outputs(input: list[Any], tools: Any, tool_choice: Any, config: Any) -> Any:
    return mock_output("x" * (HUGE - 6) + '\n"end"')


@pytest.fixture(scope="module")
def huge_answer(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    task = Task(
        name="huge",
        dataset=[Sample(id=1, input="Write a lot.", target="end")],
        solver=[generate()],
        scorer=[match(), includes()],
    )
    scenario = run_scenario(
        tmp_path_factory.mktemp("huge-answer"),
        task,
        model=get_model(DEMO_MODEL, custom_outputs=_huge_outputs, memoize=False),
    )
    assert scenario.logs[0].status == "success", scenario.error
    return scenario


def _cells(rows: list[dict[str, Any]]) -> Iterator[tuple[str, Any]]:
    for row in rows:
        yield from row.items()


def test_no_table_cell_is_far_over_the_cut_even_inside_objects(huge_answer: Scenario) -> None:
    run = huge_answer.run("huge")
    [sample] = read_eval_log(huge_answer.logs[0].location).samples or []
    assert len(sample.output.completion) == HUGE  # Inspect's log keeps the whole answer
    assert any(len(json.dumps(v.answer or "")) > HUGE for v in (sample.scores or {}).values())
    tables = [p for p in huge_answer.artifact_paths(run) if p.startswith("inspect/")]
    assert "inspect/samples.json" in tables
    sizes = {
        (path, column): len(json.dumps(cell, ensure_ascii=False))
        for path in tables
        for column, cell in _cells(huge_answer.table(run, path))
    }
    largest = max(sizes, key=sizes.__getitem__)
    assert sizes[largest] <= MAX_CELL_CHARS + CELL_MARGIN, (largest, sizes[largest])
    [row] = huge_answer.table(run, "inspect/samples.json")
    assert row["scores"]["match"]["answer"].endswith("...[truncated]")  # still an object
    assert row["scores"]["match"]["value"] == sample.scores["match"].value


def test_records_are_fitted_to_their_own_limit(huge_answer: Scenario) -> None:
    run = huge_answer.run("huge")
    [record] = download_json(huge_answer.client, run.info.run_id, "sample_results/huge.json")
    assert len(json.dumps(record, ensure_ascii=False)) <= MAX_RECORD_CHARS + CELL_MARGIN
    output = record["output"]
    assert output.startswith("x" * 1000) and output.endswith("...[truncated]")
    assert len(output) > 2 * MAX_CELL_CHARS  # a record keeps more than a table cell
    assert record["scores"]["match"]["answer"].endswith("...[truncated]")
    assert record["target"] == "end" and record["id"] == 1


def test_the_dry_run_flags_cells_cut_inside_objects(
    huge_answer: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    from inspect_mlflow._commands.cli import main

    assert main(["check", "--log", huge_answer.logs[0].location, "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)["mappings"][0]["dry_run"]
    cut = [p for p in report["problems"] if p["kind"] == "over_limit"]
    assert any("inside an object" in p["message"] for p in cut), cut


# -- 9e. no "Connection pool is full" on a busy HTTP eval ------------------------------


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.server
@pytest.mark.parametrize("delivery", ["process", "thread"])
def test_a_busy_http_eval_never_fills_the_connection_pool(
    delivery: str,
    server_store: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # A delivery process of our own, started now, so its stderr is the one captured here;
    # its log records reach this process's loggers under their own names.
    monkeypatch.setattr(_remote, "_process", None)
    pool_before = os.environ.get("MLFLOW_HTTP_POOL_MAXSIZE")
    keep = _Keep()
    urllib3 = logging.getLogger("urllib3")
    urllib3.addHandler(keep)
    try:
        scenario = run_scenario(
            tmp_path,
            demo_task(24, name="busy"),
            uri=server_store.tracking_uri,
            model=get_model(DEMO_MODEL, custom_outputs=answer, memoize=False),
            max_samples=24,
            extra_env={"INSPECT_MLFLOW_DELIVERY": delivery},
        )
    finally:
        urllib3.removeHandler(keep)
    assert scenario.logs[0].status == "success", scenario.error
    run = scenario.run("busy")
    assert len(scenario.traces(run)) == 24  # the traces really went over HTTP
    stderr = capfd.readouterr().err
    full = [m for m in keep.messages if "Connection pool is full" in m]
    assert not full, full
    assert "Connection pool is full" not in stderr, stderr[-2000:]
    assert os.environ.get("MLFLOW_HTTP_POOL_MAXSIZE") == pool_before  # the eval's is untouched


def test_concurrent_requests_fit_mlflows_connection_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    from inspect_mlflow._delivery.process import size_http_pool
    from inspect_mlflow._writer.mlflow_sink import POOL_HEADROOM, parallel_requests

    monkeypatch.delenv("MLFLOW_HTTP_POOL_MAXSIZE", raising=False)
    traces, uploads = parallel_requests()
    assert traces + uploads + POOL_HEADROOM <= 10  # MLflow's default pool
    environ: dict[str, str] = {}
    size_http_pool(environ)  # the delivery process's own pool: room for 8 of each
    monkeypatch.setenv("MLFLOW_HTTP_POOL_MAXSIZE", environ["MLFLOW_HTTP_POOL_MAXSIZE"])
    assert parallel_requests() == (8, 8)
    larger = {"MLFLOW_HTTP_POOL_MAXSIZE": "64"}
    size_http_pool(larger)
    assert larger == {"MLFLOW_HTTP_POOL_MAXSIZE": "64"}  # a larger pool of the user's stays
    monkeypatch.setenv("MLFLOW_HTTP_POOL_MAXSIZE", "3")
    assert parallel_requests() == (1, 1)


def test_fit_json_cuts_the_longest_strings_inside_objects_and_keeps_the_rest() -> None:
    from inspect_mlflow._engine.values import MIN_NESTED_CHARS, fit_json

    value = {
        "a": {"answer": "x" * 200_000, "explanation": "y" * 200_000},
        "value": "C",
        "list": ["z" * 3000, 1.5, None],
        "note": "short",
    }
    fitted = fit_json(value, MAX_CELL_CHARS)
    assert len(json.dumps(fitted)) <= MAX_CELL_CHARS
    assert len(json.dumps(fitted)) > MAX_CELL_CHARS - 100  # as much kept as fits
    assert (fitted["value"], fitted["note"], fitted["list"][1:]) == ("C", "short", [1.5, None])
    assert (
        fitted["a"]["answer"].endswith("...[truncated]") and value["a"]["answer"] == "x" * 200_000
    )
    small = {"a": "x" * 10}
    assert fit_json(small, MAX_CELL_CHARS) is small  # nothing copied when it fits
    escaped = {"a": "\n" * 50_000}  # JSON doubles it: cut further
    assert len(json.dumps(fit_json(escaped, MAX_CELL_CHARS))) <= MAX_CELL_CHARS
    many = ["x" * 1000] * 100  # cannot fit without cutting below the floor
    assert all(len(s) == MIN_NESTED_CHARS for s in fit_json(many, MAX_CELL_CHARS))
