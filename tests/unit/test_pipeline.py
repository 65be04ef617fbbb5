"""The one pipeline (engine -> adjust -> scrub -> track -> deliver) and that every path uses it.

The stages are shown on a real engine with a small mapping (no MLflow: the end of the
chain is a list); the paths are checked on their source, since an engine or a scrubber
built by a path would bypass the chain (issue 15: that is how a credential reached
MLflow on import). ``tests/e2e/test_secrets.py`` shows the scrub step at run time on each path.
"""

from __future__ import annotations

import ast
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import inspect_mlflow
from inspect_mlflow._delivery.pipeline import Pipeline
from inspect_mlflow._mapping import load_mapping_text
from inspect_mlflow._operations import CloseRun, LogMetrics, OpenRun, Operation, SetTags

PACKAGE = Path(inspect_mlflow.__file__).parent

MAPPING = """
version: 1
runs:
  task:
    open: task_start
    close: task_end
    key: eval_id
    name: name
    status: "'FINISHED'"
rules:
  task_start:
    - run: task
      tags: {note: note}
  sample_end:
    - run: task
      step: step
      metrics: {score: score}
"""

SECRET = "hunter2-secret-value"


def build(**options: Any) -> tuple[Pipeline, list[Operation]]:
    delivered: list[Operation] = []
    mapping = load_mapping_text(MAPPING, "pipeline.yaml")
    return Pipeline(mapping, delivered.extend, (SECRET,), **options), delivered


def metric_times(ops: list[Operation]) -> list[int]:
    return [m.timestamp_ms for op in ops if isinstance(op, LogMetrics) for m in op.metrics]


def test_feed_runs_the_engine_then_scrubs_tracks_and_delivers_in_that_order():
    order: list[str] = []
    tracked: list[Operation] = []

    def adjust(ops: list[Operation]) -> list[Operation]:
        order.append("adjust")
        assert any(SECRET in repr(op) for op in ops), "the adjust step comes before the scrub"
        return ops

    def track(ops: list[Operation]) -> None:
        order.append("track")
        tracked.extend(ops)

    pipeline, delivered = build(adjust=adjust, track=track)
    out = pipeline.feed("task_start", {"eval_id": "e1", "name": "t", "note": f"key {SECRET}"})
    assert order == ["adjust", "track"]
    assert [type(op) for op in out] == [OpenRun, SetTags]
    assert delivered == tracked == out
    [tags] = [op for op in delivered if isinstance(op, SetTags)]
    assert tags.tags == {"note": "key ***"}
    assert SECRET not in repr(delivered)


def test_a_live_point_is_stamped_with_its_time_else_now():
    pipeline, delivered = build()
    pipeline.feed("task_start", {"eval_id": "e1", "name": "t"})
    pipeline.feed("sample_end", {"eval_id": "e1", "step": 0, "score": 1.0}, at=1000.0)
    before = time.time()
    pipeline.feed("sample_end", {"eval_id": "e1", "step": 1, "score": 0.5})
    stamped, now = metric_times(delivered)
    assert stamped == 1_000_000
    assert now >= int(before * 1000), "a point without a time is not given the last one"


def test_a_replayed_point_without_a_time_keeps_the_last_one():
    pipeline, delivered = build(replayed=True)
    pipeline.feed("task_start", {"eval_id": "e1", "name": "t"}, at=500.0)
    pipeline.feed("sample_end", {"eval_id": "e1", "step": 0, "score": 1.0}, at=1000.0)
    pipeline.feed("sample_end", {"eval_id": "e1", "step": 1, "score": 0.5})
    assert metric_times(delivered) == [1_000_000, 1_000_000]


def test_keep_filters_what_goes_on_and_close_all_closes_through_the_chain():
    pipeline, delivered = build(lock=threading.Lock())
    kept = pipeline.feed("task_start", {"eval_id": "e1", "name": "t"}, keep=(OpenRun,))
    assert [type(op) for op in kept] == [OpenRun] and delivered == kept
    closed = pipeline.close_all("FAILED")
    assert [(type(op), op.run) for op in closed] == [(CloseRun, "task:e1")]
    assert delivered[-1] is closed[-1]
    assert pipeline.feed("task_end", {"eval_id": "e1"}) == [], "nothing left open to close"


def test_replay_enters_after_the_engine():
    delivered: list[Operation] = []
    pipeline = Pipeline(None, delivered.extend, (SECRET,))
    pipeline.emit([SetTags("task:e1", {"note": SECRET})])
    assert delivered == [SetTags("task:e1", {"note": "***"})]
    with pytest.raises(AssertionError, match="no engine"):
        pipeline.feed("task_start", {})


def test_a_pipeline_without_its_end_refuses_to_deliver_until_connected():
    mapping = load_mapping_text(MAPPING, "pipeline.yaml")
    pipeline = Pipeline(mapping, None)
    with pytest.raises(AssertionError, match="no end"):
        pipeline.feed("task_start", {"eval_id": "e1", "name": "t"})
    delivered: list[Operation] = []
    pipeline.connect(delivered.extend)
    pipeline.feed("task_end", {"eval_id": "e1"})
    assert [type(op) for op in delivered] == [CloseRun], "the engine kept its state"


# -- every path builds the one pipeline ---------------------------------------------------

PATHS = {
    "live (thread and delivery process)": "_delivery/session.py",
    "import": "_commands/importer.py",
    "dry run": "_commands/dryrun.py",
    "replay": "_commands/replay.py",
}

KEYS_ONLY = {"_inspect/routing.py"}
"""Modules that build an engine only to compute run keys: it writes nothing."""


def calls(path: Path) -> list[str]:
    """What ``path`` calls, as written: ``Engine(...)`` -> ``Engine``, ``a.b()`` -> ``a.b``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            out.append(ast.unparse(node.func))
    return out


@pytest.mark.parametrize("path", sorted(PATHS), ids=lambda name: name.split(" ")[0])
def test_each_path_builds_the_pipeline(path):
    assert "Pipeline" in calls(PACKAGE / PATHS[path]), f"{path} does not build a Pipeline"


def test_only_the_pipeline_builds_an_engine_or_a_scrubber_or_runs_an_engine():
    found = []
    for file in sorted(PACKAGE.rglob("*.py")):
        name = file.relative_to(PACKAGE).as_posix()
        if name == "_delivery/pipeline.py":
            continue
        for called in calls(file):
            if called == "Scrubber" or (called == "Engine" and name not in KEYS_ONLY):
                found.append(f"{name}: {called}(...)")
            elif called.endswith("engine.handle") or called.endswith("engine.close_all"):
                found.append(f"{name}: {called}(...)")
    assert found == [], "a path wires its own chain; build a Pipeline instead"
