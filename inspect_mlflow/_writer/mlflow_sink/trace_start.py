"""``start_trace`` on an ``mlflow server`` without MLflow's protobuf round trips.

Why: MLflow's ``RestStore.start_trace`` turns the trace into protobuf, then into indented
JSON text (walking the message once more to keep int64 fields numbers), which its
``call_endpoint`` parses back into a dict for ``requests``; the answer, the whole trace
with its assessments, is parsed into protobuf and then into entities. The trace sender
needs one thing from that answer: which assessments the store kept. Here the protobuf
becomes the request's dict once and the answer is read as plain JSON, through MLflow's
own ``http_request`` (credentials, TLS settings, request headers, its retry settings) and
``verify_rest_response`` (the same errors, so the sender classifies them as before).
That is about a third of the client's CPU per trace, in the delivery process.

Only for MLflow's own REST store (``http://``, ``https://``): other stores (Databricks,
``sqlite:///``), a client given by a test, and a server too old for the v3 endpoint go
through ``TracingClient.start_trace`` as before.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict
from mlflow.entities import Trace, TraceData, TraceInfo
from mlflow.environment_variables import MLFLOW_ASYNC_TRACE_LOGGING_RETRY_TIMEOUT
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import ENDPOINT_NOT_FOUND, ErrorCode
from mlflow.protos.service_pb2 import StartTraceV3
from mlflow.store.tracking.rest_store import RestStore
from mlflow.tracing.client import TracingClient
from mlflow.utils.rest_utils import http_request, verify_rest_response

__all__ = ["START_TRACE_ENDPOINT", "TraceStarter"]

START_TRACE_ENDPOINT = "/api/3.0/mlflow/traces"
"""MLflow's v3 ``StartTraceV3`` endpoint (``POST``)."""


class TraceStarter:
    """Stores one trace's info (and its assessments) per call; returns the kept ids.

    Args:
        client: The tracing client; its store decides whether the direct request is used.
        direct: False: always go through ``client.start_trace`` (a client from a test).
    """

    def __init__(self, client: TracingClient, *, direct: bool = True) -> None:
        self._client = client
        store = client.store if direct else None
        self._store: RestStore | None = store if type(store) is RestStore else None

    def __call__(self, info: TraceInfo) -> set[str]:
        """Store the trace; the ids of the assessments the store kept with it."""
        store = self._store
        if store is not None:
            try:
                return _kept(_start_directly(store, info))
            except MlflowException as error:
                if error.error_code != ErrorCode.Name(ENDPOINT_NOT_FOUND):
                    raise
                self._store = None  # a server before MLflow 3.2: the client falls back
        returned = self._client.start_trace(info)
        return {a.assessment_id for a in getattr(returned, "assessments", None) or ()}


def _start_directly(store: RestStore, info: TraceInfo) -> Any:
    """The ``StartTraceV3`` request as MLflow's store makes it; the answer as JSON."""
    store._validate_workspace_support_if_specified()  # what its own call checks first
    request = StartTraceV3(trace=Trace(info=info, data=TraceData(spans=[])).to_proto())
    body = MessageToDict(request, preserving_proto_field_name=True)
    response = http_request(
        store.get_host_creds(),
        START_TRACE_ENDPOINT,
        "POST",
        json=body,
        retry_timeout_seconds=MLFLOW_ASYNC_TRACE_LOGGING_RETRY_TIMEOUT.get(),
    )
    return verify_rest_response(response, START_TRACE_ENDPOINT).json()


def _kept(answer: Any) -> set[str]:
    """Assessment ids in a ``StartTraceV3`` answer (``{"trace": {"trace_info": ...}}``)."""
    trace = answer.get("trace") if isinstance(answer, dict) else None
    info = trace.get("trace_info") if isinstance(trace, dict) else None
    assessments = info.get("assessments") if isinstance(info, dict) else None
    return {
        a["assessment_id"]
        for a in assessments or ()
        if isinstance(a, dict) and isinstance(a.get("assessment_id"), str)
    }
