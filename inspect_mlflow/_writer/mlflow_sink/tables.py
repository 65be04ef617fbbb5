"""Tables and documents: rows held per run, written as JSON files when the run closes.

``AppendRows`` only accumulates rows in memory; at ``CloseRun`` each accumulated table
or record list becomes one JSON artifact, and the tables are registered in the run's
``mlflow.loggedArtifacts`` tag (as ``log_table`` does, so the UI shows them as tables).
A continued run (an eval set's later attempt) keeps the rows it wrote before: they are
read back and the new ones appended. ``LogArtifact`` documents are JSON files too, and
over HTTP a run's files go up side by side.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from inspect_mlflow._keys import finite
from inspect_mlflow._operations import AppendRows, LogArtifact, Operation
from inspect_mlflow._writer.mlflow_sink.calls import MlflowCalls
from inspect_mlflow._writer.mlflow_sink.errors import Refused, StepFailed
from inspect_mlflow._writer.mlflow_sink.planning import parallel_requests
from inspect_mlflow._writer.mlflow_sink.reads import existing_rows
from inspect_mlflow._writer.mlflow_sink.runs import LOGGED_ARTIFACTS_TAG, RunRegistry
from inspect_mlflow._writer.sink import Rejection

__all__ = ["Tables", "documents", "dumps", "table_json"]


def dumps(content: Any) -> str:
    """JSON text that browsers can parse: non-finite floats become null."""
    try:
        return json.dumps(content, ensure_ascii=False, allow_nan=False)
    except ValueError:
        return json.dumps(finite(content), ensure_ascii=False, allow_nan=False)


def table_json(rows: Sequence[Mapping[str, Any]]) -> str:
    """MLflow's table format: the union of row keys (first-seen order) and one list per row.

    This is what ``MlflowClient.log_table`` writes for a JSON file (pandas ``split``
    orient without index); a missing cell is null and a nested object stays an object.
    """
    columns: dict[str, None] = {}
    for row in rows:
        for key in row:
            columns.setdefault(key, None)
    names = list(columns)
    return dumps({"columns": names, "data": [[row.get(c) for c in names] for row in rows]})


def documents(ops: Sequence[Operation], rejected: list[Rejection]) -> list[tuple[str, str]]:
    """``(text, path)`` of each ``LogArtifact``; a document that is not JSON is refused."""
    uploads: list[tuple[str, str]] = []
    for op in ops:
        assert isinstance(op, LogArtifact)
        try:
            uploads.append((dumps(op.content), op.path))
        except (TypeError, ValueError) as error:
            rejected.append(Rejection(op.run, op.path, f"not JSON: {error}"))
    return uploads


class Tables:
    """The rows each run has been sent, and the upload of a run's files."""

    def __init__(self, call: Callable[..., Any], calls: MlflowCalls, runs: RunRegistry) -> None:
        self._call = call
        self._calls = calls
        self._runs = runs
        self.rows: dict[str, dict[tuple[str, str], list[dict[str, Any]]]] = {}
        """Logical run key -> ``(path, format)`` -> the rows held for it."""
        self._merged: dict[str, set[tuple[str, str]]] = {}
        self._artifact_repos: dict[str, Any] = {}

    def append(self, op: AppendRows) -> None:
        """Hold the rows until the run closes; rows for a closed run are refused."""
        if op.run in self._runs.closed:
            raise StepFailed(
                Refused(
                    f"rows for {op.path!r} arrived after run {op.run!r} was closed",
                    "run_closed",
                )
            )
        tables = self.rows.setdefault(op.run, {})
        tables.setdefault((op.path, op.format), []).extend(op.rows)

    def write(
        self, run: str, run_id: str, docs: list[tuple[str, str]], rejected: list[Rejection]
    ) -> None:
        """Upload a closing run's documents and tables, and register the tables."""
        logged = list(self._runs.logged_tables.get(run, []))
        uploads: list[tuple[str, str]] = list(docs)
        for (path, fmt), rows in self.rows.get(run, {}).items():
            if run in self._runs.continued and (path, fmt) not in self._merged.get(run, set()):
                # A continued run keeps the rows it wrote before: read them back first.
                # Once merged, the rows stay merged in memory (a retried close must not
                # read back what it wrote itself).
                rows[:0] = existing_rows(self._call, run_id, path, fmt)
                self._merged.setdefault(run, set()).add((path, fmt))
            try:
                text = table_json(rows) if fmt == "table" else dumps(rows)
            except (TypeError, ValueError) as error:
                rejected.append(Rejection(run, path, f"not JSON: {error}"))
                continue
            uploads.append((text, path))
            entry = {"path": path, "type": "table"}
            if fmt == "table" and entry not in logged:
                logged.append(entry)
        tag = None
        if logged != self._runs.logged_tables.get(run, []):
            tag = json.dumps(logged)
        self.upload(run_id, uploads, logged_tag=tag)
        if tag is not None:
            self._runs.logged_tables[run] = logged

    def forget(self, run: str) -> None:
        """Drop what was held for a run that closed."""
        self.rows.pop(run, None)
        self._merged.pop(run, None)

    def upload(
        self, run_id: str, uploads: list[tuple[str, str]], *, logged_tag: str | None = None
    ) -> None:
        """Write each ``(text, path)`` as an artifact of the run, and the tables' tag.

        The files (and ``mlflow.loggedArtifacts``, when ``logged_tag`` is given) are
        independent, so over HTTP they go up side by side: the run end, which the eval
        waits for, then costs one round trip for all of a run's documents and tables
        instead of one each. The first failure is raised after all were tried (a retry
        writes them all again; an upload replaces the file).
        """
        calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [
            (self.log_text, (run_id, text, path)) for text, path in uploads
        ]
        if logged_tag is not None:  # first: it must not wait for a free upload thread
            calls.insert(0, (self._call, ("set_tag", run_id, LOGGED_ARTIFACTS_TAG, logged_tag)))
        if len(calls) < 2 or not self._calls.remote:
            for fn, args in calls:
                fn(*args)
            return
        workers = min(len(calls), parallel_requests()[1])  # within MLflow's HTTP pool
        with ThreadPoolExecutor(workers, thread_name_prefix="inspect-mlflow-upload") as pool:
            futures = [pool.submit(fn, *args) for fn, args in calls]
        for future in futures:
            future.result()

    def log_text(self, run_id: str, text: str, path: str) -> None:
        """One artifact file, written through the run's artifact repository.

        The repository is built from the artifact URI the run was created (or found)
        with, as MLflow's client would build it after asking the server for the run: one
        round trip less, on the run end the eval waits for. Runs whose URI this sink
        has not seen, and Databricks (whose URIs carry a profile), go through the client.
        """
        self._calls.check_not_cancelled()
        repo = self._artifact_repo(run_id)
        if repo is None:
            self._call("log_text", run_id, text, path)
            return
        self._calls.count("log_text")
        folder, _, name = path.rpartition("/")
        with tempfile.TemporaryDirectory(prefix="inspect-mlflow-") as tmp:
            local = os.path.join(tmp, name)
            with open(local, "w", encoding="utf-8") as handle:
                handle.write(text)
            repo.log_artifact(local, folder or None)

    def _artifact_repo(self, run_id: str) -> Any:
        uri = self._runs.artifact_uris.get(run_id)
        tracking_uri = self._calls.tracking_uri
        if uri is None or tracking_uri.startswith("databricks"):
            return None
        repo = self._artifact_repos.get(run_id)
        if repo is None:
            from mlflow.store.artifact.artifact_repository_registry import (
                get_artifact_repository,
            )

            repo = get_artifact_repository(uri, tracking_uri=tracking_uri)
            self._artifact_repos[run_id] = repo
        return repo
