"""The direct ``start_trace`` request stores what MLflow's own client stores, on a server.

``trace_start`` skips MLflow's protobuf round trips on ``mlflow server``; the trace it
stores must be the same, field for field, as one stored through ``TracingClient``, and
the assessment ids it reports must be the ones the server kept.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import pytest
from mlflow.tracing.client import TracingClient
from test_traces import make_trace, new_run

from inspect_mlflow._operations import ExpectationData
from inspect_mlflow._writer.mlflow_sink.trace_build import build_trace
from inspect_mlflow._writer.mlflow_sink.trace_send import TraceSender, TraceSendError
from inspect_mlflow._writer.mlflow_sink.trace_start import TraceStarter

_IDS = ("trace_id", "assessment_id", "request_id", "span_id")


def _comparable(value: Any, ids: dict[str, str]) -> Any:
    """A stored trace info as plain data, with its ids replaced by their order of first use."""
    if isinstance(value, dict):
        return {
            k: ids.setdefault(v, f"id{len(ids)}") if k in _IDS else _comparable(v, ids)
            for k, v in value.items()
            if k not in ("create_time_ms", "last_update_time_ms", "create_time", "last_update_time")
        }
    if isinstance(value, list):
        return [_comparable(v, ids) for v in value]
    if isinstance(value, str):
        for old, new in ids.items():
            value = value.replace(old, new)
    return value


def _stored(client: TracingClient, trace_id: str) -> Any:
    info = client.get_trace_info(trace_id).to_dict()
    info["assessments"] = sorted(info.get("assessments", []), key=lambda a: a["assessment_name"])
    return info


@pytest.mark.server
def test_the_direct_request_stores_what_mlflows_client_stores(server_store: Any) -> None:
    experiment_id, run_id = new_run(server_store)
    client = TracingClient(server_store.tracking_uri)
    base = make_trace("same", scorers=3)
    base = replace(base, expectations=(ExpectationData("target", {"answer": "5"}),))
    stored = {}
    for way, start in (
        ("client", lambda info: client.start_trace(info)),
        ("direct", TraceStarter(client)),
    ):
        op = replace(base, trace_key=f"{way}-{uuid.uuid4().hex}")
        payload = build_trace(op, run_id, experiment_id)
        answer = start(payload.info)
        if way == "direct":
            sent = {a.assessment_id for a in payload.info.assessments}
            assert answer == sent and len(sent) == 4  # three scores and the target
        stored[way] = _stored(client, payload.info.trace_id)
    ids_client: dict[str, str] = {}
    ids_direct: dict[str, str] = {}
    assert _comparable(stored["direct"], ids_direct) == _comparable(stored["client"], ids_client)
    assert stored["direct"]["trace_metadata"]["mlflow.sourceRun"] == run_id


def test_other_stores_go_through_mlflows_client(sqlite_store: Any) -> None:
    experiment_id, run_id = new_run(sqlite_store)
    client = TracingClient(sqlite_store.tracking_uri)
    starter = TraceStarter(client)
    payload = build_trace(make_trace("local", scorers=2), run_id, experiment_id)
    kept = starter(payload.info)
    assert kept == {a.assessment_id for a in payload.info.assessments}
    assert len(client.get_trace_info(payload.info.trace_id).assessments) == 2


@pytest.mark.server
def test_a_refusal_on_the_direct_path_is_reported_as_before(server_store: Any) -> None:
    # The server refuses a trace of an experiment that does not exist: for good, not
    # transient, so the sender neither retries it nor spools it as if the server were away.
    _, run_id = new_run(server_store)
    sender = TraceSender(server_store.tracking_uri, "987654321")
    with pytest.raises(TraceSendError) as raised:
        sender.send([(make_trace("nowhere"), run_id)])
    assert raised.value.transient is False
    assert [op.trace_key for op, _ in raised.value.failed] == ["nowhere"]
