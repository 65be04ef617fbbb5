"""The spool file format: every operation survives the round trip, files are private,
durable and locked while written, and bad files give located errors."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import pytest

from inspect_mlflow._operations import (
    ALL_OPERATIONS,
    AppendRows,
    CloseRun,
    DatasetData,
    FeedbackData,
    LogArtifact,
    LogInputs,
    LogMetrics,
    LogParams,
    LogTrace,
    Metric,
    ModelData,
    OpenRun,
    SetTags,
    SpanData,
)
from inspect_mlflow._writer.spool import (
    SPOOL_VERSION,
    SpoolError,
    SpoolWriter,
    decode_op,
    default_spool_dir,
    encode_op,
    list_spool_files,
    locked,
    public_uri,
    read_progress,
    read_spool,
    remove_spool,
    replay_lock,
    rewrite_spool,
    write_progress,
)

T0 = 1_700_000_000_000


def every_operation() -> list:
    span = SpanData(
        span_id="s1",
        parent_id=None,
        name="generate",
        span_type="LLM",
        start_time_ns=1,
        end_time_ns=2,
        inputs={"messages": [{"role": "user", "content": "hi"}]},
        outputs="5",
        attributes={"model": "mockllm/model", "n": 3},
        status="ERROR",
        error="boom",
    )
    feedback = FeedbackData(name="match", value=1.0, rationale="ok", metadata={"a": "b"})
    return [
        OpenRun(
            run="eval:r", kind="eval", name="r", parent=None, tags={"t": "1"}, start_time_ms=T0
        ),
        OpenRun(run="task:a", kind="task", name="a", parent="eval:r"),
        SetTags("task:a", {"k": "v"}),
        LogParams("task:a", {"p": "1", "unicode": "δ ✓"}),
        LogMetrics(
            "task:a",
            (
                Metric("m", 0.5, 1, T0),
                Metric("nan", math.nan, 2, T0),
                Metric("inf", math.inf, 3, T0),
                Metric("linked", 1.0, 0, T0, "mockllm/model", "qa", "0a1b2c"),
            ),
        ),
        AppendRows("task:a", "samples.json", ({"id": 1, "nested": {"x": [1, 2]}}, {"id": 2})),
        AppendRows("task:a", "records.json", ({"a": None},), format="records"),
        LogArtifact("task:a", "doc.json", {"deep": [{"x": 1.5}], "none": None}),
        LogTrace(
            run="task:a",
            trace_key="sample-uuid",
            name="sample 1",
            start_time_ns=1,
            end_time_ns=3,
            inputs={"q": 1},
            outputs={"a": 2},
            tags={"x": "y"},
            metadata={"m": "n"},
            model="mockllm/model",
            spans=(span,),
            feedback=(feedback,),
        ),
        LogInputs(
            "task:a",
            (ModelData("mockllm/model", "mockllm_model", {"t": "1"}, {"p": "2"}),),
            (DatasetData("qa", "0a1b2c", source='{"uri": "qa.jsonl"}', context="eval"),),
        ),
        CloseRun("task:a", "FAILED", T0 + 5),
    ]


def test_every_operation_kind_is_covered():
    assert {type(op) for op in every_operation()} == set(ALL_OPERATIONS)


def same(a, b) -> bool:
    """Equality that treats NaN as equal to NaN (metric values)."""
    return json.dumps(encode_op(a), sort_keys=True) == json.dumps(encode_op(b), sort_keys=True)


def test_encode_decode_round_trip_keeps_nested_types():
    for op in every_operation():
        back = decode_op(json.loads(json.dumps(encode_op(op))))
        assert type(back) is type(op)
        assert same(back, op)
    trace = decode_op(json.loads(json.dumps(encode_op(every_operation()[8]))))
    assert isinstance(trace.spans[0], SpanData) and isinstance(trace.feedback[0], FeedbackData)
    metrics = decode_op(json.loads(json.dumps(encode_op(every_operation()[4]))))
    assert isinstance(metrics.metrics, tuple) and isinstance(metrics.metrics[0], Metric)
    assert math.isnan(metrics.metrics[1].value) and metrics.metrics[2].value == math.inf


@pytest.mark.parametrize(
    "record, message",
    [
        ({"op": "DropTable"}, "unknown operation"),
        ({"run": "x"}, "unknown operation"),
        ({"op": "SetTags", "run": "x", "tags": {}, "extra": 1}, "no field"),
        ([1, 2], "JSON object"),
    ],
)
def test_decode_refuses_what_it_does_not_know(record, message):
    with pytest.raises(ValueError, match=message):
        decode_op(record)


def test_writer_creates_a_private_file_lazily_with_a_header_and_no_credentials(tmp_path):
    directory = tmp_path / "spool"
    writer = SpoolWriter(
        directory,
        tracking_uri="http://alice:s3cr3t-pw@127.0.0.1:5000/",
        experiment_name="exp",
        trace_options={"max_spans_per_trace": 10},
    )
    assert writer.path is None and not directory.exists(), "nothing spooled, no file"
    ops = every_operation()
    assert writer.append(ops[:3]) == 3
    assert writer.append(ops[3:]) == len(ops) - 3
    assert writer.count == len(ops)
    path = writer.path
    assert path is not None and path.parent == directory
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "s3cr3t-pw" not in text and "alice" not in text
    spool = read_spool(path)
    assert spool.header["version"] == SPOOL_VERSION
    assert spool.tracking_uri == "http://127.0.0.1:5000/"
    assert spool.experiment_name == "exp"
    assert spool.header["trace_options"] == {"max_spans_per_trace": 10}
    assert all(same(a, b) for a, b in zip(spool.ops, ops, strict=True))
    assert not spool.truncated
    writer.close()
    with pytest.raises(SpoolError):
        writer.append(ops[:1])


def test_file_mode_is_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        writer = SpoolWriter(tmp_path, tracking_uri="sqlite:///x.db", experiment_name="e")
        writer.append([SetTags("r", {"a": "b"})])
    finally:
        os.umask(old)
    assert stat.S_IMODE(writer.path.stat().st_mode) == 0o600
    writer.close()


def test_a_file_is_locked_while_its_writer_holds_it(tmp_path):
    writer = SpoolWriter(tmp_path, tracking_uri="sqlite:///x.db", experiment_name="e")
    writer.append([SetTags("r", {"a": "b"})])
    with locked(writer.path) as free:
        assert free is False
    writer.close()
    with locked(writer.path) as free:
        assert free is True


def test_replays_of_one_directory_exclude_each_other(tmp_path):
    with replay_lock(tmp_path) as first, replay_lock(tmp_path) as second:
        assert first is True and second is False


def test_a_cut_short_last_line_is_left_out_and_flagged(tmp_path):
    writer = SpoolWriter(tmp_path, tracking_uri="sqlite:///x.db", experiment_name="e")
    writer.append([SetTags("r", {"a": "1"}), SetTags("r", {"a": "2"})])
    writer.close()
    with writer.path.open("ab") as f:
        f.write(b'{"op": "SetTags", "run": "r", "ta')
    spool = read_spool(writer.path)
    assert spool.truncated and len(spool.ops) == 2


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty or cut-short"),
        (b'{"format": "something-else"}\n', "not an inspect-mlflow spool file"),
        (b'{"format": "inspect-mlflow-spool", "version": 99}\n', "version 99 is not supported"),
        (b"not json\n", ":1: not JSON"),
        (
            b'{"format": "inspect-mlflow-spool", "version": 1}\n{"op": "Nope"}\n',
            ":2: not a valid operation",
        ),
    ],
)
def test_bad_files_give_located_errors(tmp_path, content, message):
    path = tmp_path / "x.jsonl"
    path.write_bytes(content)
    with pytest.raises(SpoolError, match=message):
        read_spool(path)


def test_rewrite_and_progress_are_atomic_and_removable(tmp_path):
    writer = SpoolWriter(tmp_path, tracking_uri="sqlite:///x.db", experiment_name="e")
    writer.append(every_operation())
    writer.close()
    spool = read_spool(writer.path)
    rewrite_spool(spool, spool.ops[-1:])
    assert [type(op) for op in read_spool(writer.path).ops] == [CloseRun]
    assert stat.S_IMODE(writer.path.stat().st_mode) == 0o600
    write_progress(writer.path, {"next": 3, "failed": [1]})
    assert read_progress(writer.path) == {"next": 3, "failed": [1]}
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    assert list_spool_files(tmp_path) == [writer.path], "progress files are not spool files"
    remove_spool(writer.path)
    assert list(tmp_path.iterdir()) == []


def test_files_list_oldest_first(tmp_path):
    for name in ("20250102T000000-1-b.jsonl", "20250101T000000-1-a.jsonl", "notes.txt"):
        (tmp_path / name).write_text("x")
    assert [p.name for p in list_spool_files(tmp_path)] == [
        "20250101T000000-1-a.jsonl",
        "20250102T000000-1-b.jsonl",
    ]
    assert list_spool_files(tmp_path / "missing") == []


def test_default_dir_is_in_the_user_cache(tmp_path):
    assert default_spool_dir({"XDG_CACHE_HOME": str(tmp_path)}) == (
        tmp_path / "inspect-mlflow" / "spool"
    )
    assert default_spool_dir({}) == Path.home() / ".cache" / "inspect-mlflow" / "spool"
    assert default_spool_dir({"XDG_CACHE_HOME": "relative"}).is_absolute()


@pytest.mark.parametrize(
    "uri, shown",
    [
        ("http://u:p@host:5000/x", "http://host:5000/x"),
        ("https://token@host", "https://host"),
        ("http://host:5000", "http://host:5000"),
        ("sqlite:///tmp/a.db", "sqlite:///tmp/a.db"),
        ("databricks", "databricks"),
    ],
)
def test_public_uri_drops_user_info(uri, shown):
    assert public_uri(uri) == shown
