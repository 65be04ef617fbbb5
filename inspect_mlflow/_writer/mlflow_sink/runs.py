"""The sink's runs: the experiment, logical run key -> MLflow run, and resuming a run.

A run is created once per logical key, with its name, parent and tags in one request.
It is found again instead (by its ``inspect_mlflow.run_key`` tag) when the sink resumes
(a spool replay), when the operation asks to continue a run (an eval set's later
attempt), and when an earlier ``create_run`` failed mid-request and may have landed, so
a retry never duplicates a run. Ending a run is one request, and prints its link as
MLflow's client does.

Threading: driven by the writer's thread; the trace lane only reads run ids of runs that
already exist.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

from mlflow.entities import RunStatus
from mlflow.environment_variables import MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT
from mlflow.exceptions import MlflowException

from inspect_mlflow._operations import OpenRun
from inspect_mlflow._writer.mlflow_sink.calls import MlflowCalls
from inspect_mlflow._writer.mlflow_sink.errors import Refused, StepFailed, classify
from inspect_mlflow._writer.mlflow_sink.reads import RUN_KEY_TAG, search_run
from inspect_mlflow._writer.sink import Rejection

__all__ = ["LOGGED_ARTIFACTS_TAG", "PARENT_RUN_TAG", "RUN_NAME_TAG", "RunRegistry"]

LOGGED_ARTIFACTS_TAG = "mlflow.loggedArtifacts"
PARENT_RUN_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"


class RunRegistry:
    """The experiment and the runs one sink created or found, by logical key."""

    def __init__(
        self,
        call: Callable[..., Any],
        calls: MlflowCalls,
        experiment_name: str,
        *,
        resume: bool,
        artifact_location: str | None,
    ) -> None:
        """Keep what is needed to resolve the experiment and runs; no call is made yet.

        Args:
            call: The sink's counted MLflow call (``call("method", *args)``).
            calls: The sink's client, for the calls that bypass ``call``.
            experiment_name: Experiment to log to; created if missing.
            resume: Look up each run by its logical key before creating it.
            artifact_location: Artifact root for an experiment this sink creates.
        """
        self._call = call
        self._calls = calls
        self.experiment_name = experiment_name
        self.resume = resume
        self.artifact_location = artifact_location
        self.experiment_id: str | None = None
        self.run_ids: dict[str, str] = {}
        self.closed: set[str] = set()
        self.continued: set[str] = set()
        """Runs that existed before this sink opened them (their tables get appended to)."""
        self.artifact_uris: dict[str, str] = {}
        """MLflow run id -> its artifact URI, as learnt when the run was created or found."""
        self.logged_tables: dict[str, list[dict[str, str]]] = {}
        """Logical key -> the tables its ``mlflow.loggedArtifacts`` tag lists."""
        self._run_names: dict[str, str] = {}
        self._uncertain: set[str] = set()
        """Runs whose ``create_run`` failed transiently: the server may have created them."""

    def ensure_experiment(self) -> str:
        """The experiment's id, created when missing (a concurrent creation is fine)."""
        if self.experiment_id is not None:
            return self.experiment_id
        experiment = self._call("get_experiment_by_name", self.experiment_name)
        if experiment is None:
            try:
                experiment_id = self._call(
                    "create_experiment",
                    self.experiment_name,
                    artifact_location=self.artifact_location,
                )
            except MlflowException as error:
                if error.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment = self._call("get_experiment_by_name", self.experiment_name)
                if experiment is None:
                    raise
                experiment_id = experiment.experiment_id
        elif experiment.lifecycle_stage != "active":
            raise Refused(
                f"experiment {self.experiment_name!r} is deleted; restore it or log to "
                "another experiment",
                "experiment_deleted",
            )
        else:
            experiment_id = experiment.experiment_id
        self.experiment_id = str(experiment_id)
        return self.experiment_id

    def require(self, run: str) -> str:
        """The MLflow run id of a logical key; the step fails when the run never opened."""
        run_id = self.run_ids.get(run)
        if run_id is None:
            raise StepFailed(
                Refused(f"run {run!r} was never created (its OpenRun failed)", "unknown_run")
            )
        return run_id

    def open(self, op: OpenRun, rejected: list[Rejection]) -> None:
        """Create the run, or find it again (resume, continue, a create that may have landed)."""
        if op.run in self.run_ids:
            if op.resume and op.run in self.closed:
                self._reopen(op.run, "FINISHED")
            return
        if self.resume or op.resume or op.run in self._uncertain:
            # (An earlier create_run of this run failed mid-request: it may have landed.)
            found = self._find(op.run)
            self._uncertain.discard(op.run)
            if found is not None:
                if op.resume:
                    self._reopen(op.run, found.info.status)
                return
        tags = {str(k): str(v) for k, v in op.tags.items()}
        essential: dict[str, str] = {RUN_KEY_TAG: op.run}
        if op.name:
            essential[RUN_NAME_TAG] = op.name
        if op.parent is not None:
            parent_id = self.run_ids.get(op.parent)
            if parent_id is None:
                rejected.append(
                    Rejection(op.run, PARENT_RUN_TAG, f"parent run {op.parent!r} was never created")
                )
            else:
                essential[PARENT_RUN_TAG] = parent_id
        try:
            run = self._call(
                "create_run",
                self.experiment_id,
                start_time=op.start_time_ms or None,
                tags={**tags, **essential},
                run_name=op.name,
            )
        except Exception as error:
            if classify(error)[0]:
                self._uncertain.add(op.run)  # the retry looks for it first: no duplicate
            raise
        self._learn(op.run, run)

    def _learn(self, run: str, found: Any) -> None:
        self.run_ids[run] = found.info.run_id
        self.artifact_uris[found.info.run_id] = found.info.artifact_uri
        self._run_names[found.info.run_id] = found.info.run_name

    def renamed(self, run_id: str, name: str) -> None:
        """A run the mapping renamed (its ``mlflow.runName`` tag): the end's link says so."""
        self._run_names[run_id] = name

    def _reopen(self, run: str, status: str) -> None:
        """Continue a run that ended: RUNNING again, and its tables get appended to."""
        if status != "RUNNING":
            self._call("update_run", self.run_ids[run], status="RUNNING")
        self.closed.discard(run)
        self.continued.add(run)

    def _find(self, run: str) -> Any:
        """Adopt an existing run tagged with this logical key; the MLflow run, or None."""
        existing = search_run(self._call, self.experiment_id, run)
        if existing is None:
            return None
        self._learn(run, existing)
        try:
            logged = json.loads(existing.data.tags.get(LOGGED_ARTIFACTS_TAG, "[]"))
        except ValueError:
            logged = []
        if isinstance(logged, list):
            self.logged_tables[run] = [e for e in logged if isinstance(e, dict)]
        return existing

    def terminate(self, run_id: str, status: str, end_time: int | None) -> None:
        """End a run with its status and end time, in one request.

        ``MlflowClient.set_terminated`` first fetches the run (a round trip, on the run
        end the eval waits for) only to print a link to it; this asks the client's store
        to update the run directly and prints the same link from what the sink knows.
        A client without that store (another MLflow) goes through ``set_terminated``.
        """
        store = getattr(getattr(self._calls.client, "_tracking_client", None), "store", None)
        update = getattr(store, "update_run_info", None)
        if not callable(update):
            self._call("set_terminated", run_id, status=status, end_time=end_time)
            return
        self._calls.check_not_cancelled()
        self._calls.count("set_terminated")
        end = end_time or int(time.time() * 1000)
        update(run_id, run_status=RunStatus.from_string(status), end_time=end, run_name=None)
        self._announce(run_id)

    def _announce(self, run_id: str) -> None:
        """Print where the run is, as MLflow's client does when a run ends on a server."""
        tracking_uri = self._calls.tracking_uri
        if not self._calls.remote or tracking_uri.startswith("databricks"):
            return
        if MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.get():
            return
        experiment = f"{tracking_uri.rstrip('/')}/#/experiments/{self.experiment_id}"
        name = self._run_names.get(run_id) or run_id
        sys.stdout.write(f"🏃 View run {name} at: {experiment}/runs/{run_id}\n")
        sys.stdout.write(f"🧪 View experiment at: {experiment}\n")
