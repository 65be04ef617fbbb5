"""The MLflow sink: write operations delivered to MLflow, split by job.

This folder is the only part of the package that writes to MLflow. Everything goes
through one explicit :class:`mlflow.MlflowClient` built from the tracking URI
(``calls``); nothing here reads or changes MLflow's process-wide state (active run,
tracking URI, experiment).

A batch is planned before it is sent (``planning``), so that each MLflow request carries
as much as it may while order still holds where it matters:

- ``OpenRun`` creates the run (once per logical key) with its name, parent and tags in
  one request, or finds it again to resume it (``runs``);
- ``SetTags``/``LogParams``/``LogMetrics`` of one run are merged across the batch, up to
  the next ``OpenRun``/``CloseRun`` of that run, and sent as ``log_batch`` requests
  within MLflow's limits (``sink``);
- ``AppendRows`` only accumulates rows in memory; ``CloseRun`` writes each accumulated
  table or record list as one JSON artifact, registers the tables in the run's
  ``mlflow.loggedArtifacts`` tag and then terminates the run (``tables``);
- ``LogInputs`` links the run's models and datasets in one ``log_inputs`` request; a
  model's LoggedModel is found or created once per sink (``logged_models``), and metrics
  and traces that name the model carry its id;
- ``LogTrace`` goes to the trace sender (``trace_send``, which sends what
  ``trace_build`` makes of it), after the runs it refers to exist. Over HTTP a batch's
  traces are sent on a thread of their own (``trace_lane``) while the batch's other
  steps go on; :meth:`MlflowSink.send` returns when both are done.

What a failure means (retry, or refused for good) is decided in one place, ``errors``,
for runs and traces alike; the import and the replay ask MLflow what it holds through
``reads``.
"""

from inspect_mlflow._writer.mlflow_sink.calls import open_local_store
from inspect_mlflow._writer.mlflow_sink.errors import Refused, SinkCancelled, classify
from inspect_mlflow._writer.mlflow_sink.planning import POOL_HEADROOM, parallel_requests, plan
from inspect_mlflow._writer.mlflow_sink.reads import RUN_KEY_TAG
from inspect_mlflow._writer.mlflow_sink.runs import LOGGED_ARTIFACTS_TAG
from inspect_mlflow._writer.mlflow_sink.sink import MlflowSink
from inspect_mlflow._writer.mlflow_sink.tables import table_json

__all__ = [
    "LOGGED_ARTIFACTS_TAG",
    "POOL_HEADROOM",
    "RUN_KEY_TAG",
    "MlflowSink",
    "Refused",
    "SinkCancelled",
    "classify",
    "open_local_store",
    "parallel_requests",
    "plan",
    "table_json",
]
