"""Shared pytest fixtures. Each block names its owner; add new fixtures in a block of your own."""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

from mlflow_server import MlflowServer, start_mlflow_server

if TYPE_CHECKING:
    from mlflow import MlflowClient

# ---------------------------------------------------------------------------------------
# Working directory (owner: project). MLflow puts a sqlite store's artifacts under
# ./mlruns of the working directory; a test that forgets to chdir must not leave them in
# the checkout, so the whole session runs in a temporary directory.
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def _session_workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    import os

    before = os.getcwd()
    workdir = tmp_path_factory.mktemp("workdir")
    os.chdir(workdir)
    try:
        yield workdir
    finally:
        os.chdir(before)


# ---------------------------------------------------------------------------------------
# Real MLflow stores: sqlite file and `mlflow server` (owner: writer / MlflowSink).
#
# - ``sqlite_store``: a fresh ``sqlite:///<tmp_path>/mlflow.db`` per test (copied from a
#   migrated template, so each test skips the ~1-2 s schema creation), artifacts under
#   ``tmp_path``.
# - ``mlflow_server`` (session): one real server on 127.0.0.1 for the whole run; tests
#   that use it carry ``@pytest.mark.server``.
# - ``server_store``: that server with a fresh experiment name per test.
# - ``mlflow_store``: parametrised over both, to run the same checks on each path.
# mlflow is imported lazily so that tests which need no MLflow do not pay for it.
# ---------------------------------------------------------------------------------------


@dataclass
class MlflowStore:
    """A tracking target for one test, with an experiment name of its own."""

    kind: str
    """``sqlite`` or ``server``."""
    tracking_uri: str
    experiment_name: str
    artifact_location: str | None
    """Artifact root for the test's experiment (None: the server's proxied default)."""
    server: MlflowServer | None = None

    def client(self) -> MlflowClient:
        """A client bound to this store (no process-wide MLflow state)."""
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    def create_experiment(self) -> str:
        """Create the test's experiment at its artifact location; returns its id."""
        return self.client().create_experiment(
            self.experiment_name, artifact_location=self.artifact_location
        )

    def sink(self, **kwargs: Any) -> Any:
        """An ``MlflowSink`` for this store's experiment."""
        from inspect_mlflow._writer.mlflow_sink import MlflowSink

        kwargs.setdefault("artifact_location", self.artifact_location)
        return MlflowSink(self.tracking_uri, self.experiment_name, **kwargs)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def sqlite_store(tmp_path: Path, _sqlite_template: Path) -> MlflowStore:
    """A sqlite tracking store in ``tmp_path`` with artifacts under ``tmp_path/artifacts``."""
    db = tmp_path / "mlflow.db"
    shutil.copyfile(_sqlite_template, db)
    return MlflowStore(
        kind="sqlite",
        tracking_uri=f"sqlite:///{db}",
        experiment_name=f"test-{uuid.uuid4().hex[:12]}",
        artifact_location=str(tmp_path / "artifacts"),
    )


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One real `mlflow server` for the session (started on first use, ~10-15 s)."""
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server_store(mlflow_server: MlflowServer) -> MlflowStore:
    """The session's server, with an experiment name unique to the test."""
    return MlflowStore(
        kind="server",
        tracking_uri=mlflow_server.url,
        experiment_name=f"test-{uuid.uuid4().hex[:12]}",
        artifact_location=None,
        server=mlflow_server,
    )


@pytest.fixture(params=["sqlite", pytest.param("server", marks=pytest.mark.server)])
def mlflow_store(request: pytest.FixtureRequest) -> MlflowStore:
    """Each test using this runs once on a sqlite file and once on a real server."""
    return request.getfixturevalue(f"{request.param}_store")


# ------------------------------------------------------------------- end of writer block
