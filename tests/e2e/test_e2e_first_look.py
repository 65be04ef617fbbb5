"""What a person sees first in MLflow, checked against Inspect's own log (issue 17).

Real evals (mock model) into a real store: the run descriptions state the error or the
headline scores, traces carry the target as an expectation and the raising span as
ERROR with an exception event, run times are Inspect's, and the eval ends with one line
saying where it logged, also with ``display="none"``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from e2e_support import failing_task
from inspect_ai.log import read_eval_log
from scenario_support import Scenario, run_scenario

from inspect_mlflow._commands.demo import demo_task


def _ms(iso: str | None) -> int:
    assert iso is not None
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def _by_task(scenario: Scenario) -> dict[str, Any]:
    return {
        r.data.tags["inspect.task"]: r for r in scenario.runs() if "inspect.task" in r.data.tags
    }


@pytest.fixture(scope="module")
def two_tasks(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """A task that fails (sample 2 raises) beside one that succeeds, in one eval."""
    root = tmp_path_factory.mktemp("first-look")
    return run_scenario(
        root,
        [failing_task({2}, samples=4, name="flaky"), demo_task(3, name="steady")],
        max_tasks=2,
    )


def test_failed_task_note_states_the_error_and_the_log(two_tasks: Scenario) -> None:
    [log] = [lg for lg in two_tasks.logs if lg.eval.task == "flaky"]
    assert log.status == "error" and log.error is not None
    run = _by_task(two_tasks)["flaky"]
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith(f"**The task failed:** {log.error.message}")
    assert log.error.traceback.splitlines()[0] in note  # the traceback's first lines
    block = note.split("```")[1]
    assert max(len(line) for line in block.splitlines()) <= 80, "MLflow's UI does not wrap it"
    assert any(len(line) > 80 for line in log.error.traceback.splitlines()), "a long line to wrap"
    assert log.location in note
    assert f"inspect view --log-dir {Path(log.location).parent}" in note
    assert run.data.tags["inspect.error"] == log.error.message


def test_successful_task_note_has_the_headline(two_tasks: Scenario) -> None:
    [log] = [lg for lg in two_tasks.logs if lg.eval.task == "steady"]
    assert log.status == "success" and log.results is not None
    note = _by_task(two_tasks)["steady"].data.tags["mlflow.note.content"]
    first = log.results.scores[0]
    accuracy = first.metrics["accuracy"].value
    stderr = first.metrics["stderr"].value
    assert f"**{first.name}** accuracy **{round(accuracy, 3)}** ± {round(stderr, 3)}" in note
    total = log.results.total_samples
    assert f"{total} samples: {log.results.completed_samples} completed, 0 errored" in note
    usage = log.stats.model_usage[log.eval.model]
    assert f"{usage.total_tokens} tokens ({usage.input_tokens} in" in note
    assert log.eval.model in note and log.location in note
    # The duration is the run's (Inspect's start and end), as MLflow's Duration shows it.
    run = _by_task(two_tasks)["steady"]
    import re

    [seconds] = re.findall(r" · ([0-9.]+) s · ", note)
    assert abs(float(seconds) - (run.info.end_time - run.info.start_time) / 1000) <= 0.051


def test_parent_note_summarises_its_tasks(two_tasks: Scenario) -> None:
    [parent] = two_tasks.parents()
    note = parent.data.tags["mlflow.note.content"]
    [flaky] = [lg for lg in two_tasks.logs if lg.eval.task == "flaky"]
    assert f"- **flaky** ({flaky.eval.model}) · **error**: {flaky.error.message}\n" in note
    assert "- **steady** (" in note and "3/3 samples" in note
    assert "inspect view --log-dir" in note


def test_errored_samples_are_counted(two_tasks: Scenario) -> None:
    [log] = [lg for lg in two_tasks.logs if lg.eval.task == "flaky"]
    full = read_eval_log(log.location)
    errored = sum(1 for s in full.samples or [] if s.error)
    assert errored >= 1
    run = _by_task(two_tasks)["flaky"]
    assert run.data.metrics["errored_samples"] == errored
    assert _by_task(two_tasks)["steady"].data.metrics["errored_samples"] == 0


def test_run_times_are_inspects(two_tasks: Scenario) -> None:
    """Start at the task's creation, end at its log's end (Inspect gives whole seconds)
    or its last sample's end, when later."""
    runs = _by_task(two_tasks)
    for log in two_tasks.logs:
        run = runs[log.eval.task]
        full = read_eval_log(log.location)
        assert run.info.start_time == _ms(log.eval.created)
        assert abs(run.info.start_time - _ms(log.stats.started_at)) < 1000
        ended = [_ms(s.completed_at) for s in full.samples or [] if s.completed_at]
        expected_end = max([_ms(log.stats.completed_at), *ended])
        assert run.info.end_time == expected_end
        assert 0 <= run.info.end_time - _ms(log.stats.completed_at) < 1000
        assert run.info.end_time - run.info.start_time > 100  # not the delivery's 18 ms


def test_latency_total_is_from_sample_times(two_tasks: Scenario) -> None:
    [log] = [lg for lg in two_tasks.logs if lg.eval.task == "steady"]
    full = read_eval_log(log.location)
    starts = [datetime.fromisoformat(s.started_at) for s in full.samples if s.started_at]
    ends = [datetime.fromisoformat(s.completed_at) for s in full.samples if s.completed_at]
    expected = (max(ends) - min(starts)).total_seconds()
    got = _by_task(two_tasks)["steady"].data.metrics["latency/total_seconds"]
    assert got == pytest.approx(expected, abs=1e-5) and got > 0


def test_traces_carry_the_target_as_expectation(two_tasks: Scenario) -> None:
    [log] = [lg for lg in two_tasks.logs if lg.eval.task == "steady"]
    full = read_eval_log(log.location)
    targets = {(str(s.id), str(s.epoch)): s.target for s in full.samples or []}
    traces = two_tasks.traces(_by_task(two_tasks)["steady"])
    assert len(traces) == len(targets)
    for trace in traces:
        key = (trace.info.tags["inspect.sample_id"], trace.info.tags["inspect.epoch"])
        expectations = [a for a in trace.info.assessments if a.expectation is not None]
        assert [(e.name, e.expectation.value) for e in expectations] == [
            ("expected_response", targets[key])
        ]
        # The scores are still there, as feedback.
        assert {a.name for a in trace.info.assessments if a.feedback is not None} == {
            s.name for s in log.results.scores
        }


def test_failed_sample_marks_the_raising_span(two_tasks: Scenario) -> None:
    [log] = [lg for lg in two_tasks.logs if lg.eval.task == "flaky"]
    full = read_eval_log(log.location)
    [failed] = [s for s in full.samples or [] if s.error]
    traces = two_tasks.traces(_by_task(two_tasks)["flaky"])
    [trace] = [t for t in traces if t.info.tags["inspect.sample_id"] == str(failed.id)]
    assert trace.info.state.value == "ERROR"
    errored = [s for s in trace.data.spans if s.status.status_code.value == "ERROR"]
    # The root (the sample) and the solver that raised: `explode`, the last span begun.
    assert [s.name for s in errored if s.parent_id is not None] == ["explode"]
    [span] = [s for s in errored if s.name == "explode"]
    [event] = span.events
    assert event.name == "exception"
    assert event.attributes["exception.message"] == failed.error.message
    assert "planned failure" in event.attributes["exception.stacktrace"]
    ok = [t for t in traces if t.info.tags["inspect.sample_id"] != str(failed.id)]
    for other in ok:
        assert all(not s.events for s in other.data.spans)


def test_imported_runs_look_the_same(two_tasks: Scenario) -> None:
    """``inspect-mlflow import`` of the same logs: same notes, same times."""
    import contextlib
    import io
    import os

    from inspect_mlflow._commands.cli import main

    experiment = f"{two_tasks.experiment}-imported"
    cwd = os.getcwd()
    os.chdir(two_tasks.root)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = main(
                [
                    "import",
                    str(two_tasks.root / "logs"),
                    "--tracking-uri",
                    two_tasks.uri,
                    "--experiment",
                    experiment,
                ]
            )
    finally:
        os.chdir(cwd)
    assert code == 0
    exp = two_tasks.client.get_experiment_by_name(experiment)
    imported = {
        r.data.tags["inspect.task"]: r
        for r in two_tasks.client.search_runs([exp.experiment_id])
        if "inspect.task" in r.data.tags
    }
    live = _by_task(two_tasks)
    assert set(imported) == {"flaky", "steady"}
    for task, run in imported.items():
        assert run.data.tags["mlflow.note.content"] == live[task].data.tags["mlflow.note.content"]
        assert (run.info.start_time, run.info.end_time) == (
            live[task].info.start_time,
            live[task].info.end_time,
        )
    [flaky] = [lg for lg in two_tasks.logs if lg.eval.task == "flaky"]
    assert flaky.error.message in imported["flaky"].data.tags["mlflow.note.content"]


def test_the_eval_ends_with_where_it_logged(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    scenario = run_scenario(tmp_path, demo_task(2, name="where"))
    err = capfd.readouterr().err
    line = (
        f"inspect-mlflow: logged to MLflow experiment '{scenario.experiment}'; "
        f"to see it run: mlflow ui --backend-store-uri {scenario.uri}"
    )
    assert err.count(line) == 1
    assert scenario.runs()


@pytest.mark.server
def test_on_a_server_too(
    tmp_path: Path, server_store: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    """The HTTP path: the end line, the expectation, the raising span and its event."""
    scenario = run_scenario(
        tmp_path,
        failing_task({2}, samples=3, name="flaky"),
        uri=server_store.tracking_uri,
        fail_on_error=False,
    )
    err = capfd.readouterr().err
    line = (
        f"inspect-mlflow: logged to MLflow experiment '{scenario.experiment}' "
        f"at {server_store.tracking_uri.rstrip('/')}"
    )
    assert err.count(line) == 1
    [log] = scenario.logs
    full = read_eval_log(log.location)
    run = _by_task(scenario)["flaky"]
    traces = {t.info.tags["inspect.sample_id"]: t for t in scenario.traces(run)}
    for sample in full.samples or []:
        trace = traces[str(sample.id)]
        [expectation] = [a for a in trace.info.assessments if a.expectation is not None]
        assert expectation.expectation.value == sample.target
        raised = [s for s in trace.data.spans if s.events]
        if sample.error is None:
            assert raised == []
        else:
            [span] = raised
            assert span.name == "explode" and span.status.status_code.value == "ERROR"
            assert span.events[0].attributes["exception.message"] == sample.error.message
    assert run.data.metrics["errored_samples"] == 1
