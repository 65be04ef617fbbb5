"""The sink's one MLflow client: every call counted, none made once the sink is cancelled.

Everything goes through one explicit :class:`mlflow.MlflowClient` built from the tracking
URI; nothing here reads or changes MLflow's process-wide state (active run, tracking
URI, experiment). The client is built on the first call, so a sink is cheap to create on
the event loop.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any

from mlflow import MlflowClient

from inspect_mlflow._writer.mlflow_sink.errors import SinkCancelled
from inspect_mlflow._writer.store_lock import prepare_local_store

__all__ = ["MlflowCalls", "open_local_store"]

logger = logging.getLogger(__name__)


class MlflowCalls:
    """MLflow client calls for one sink, counted by method name and cancellable.

    Uploads and the trace lane call from threads of their own: the counts are kept
    under a lock, and :meth:`cancel` may be called from any thread.
    """

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self.remote = tracking_uri.startswith(("http://", "https://", "databricks"))
        """Whether the store is a server (requests may then go side by side)."""
        self.counts: Counter[str] = Counter()
        """MLflow client calls made, by method name (for tests and diagnostics)."""
        self._count_lock = threading.Lock()
        self._client: MlflowClient | None = None
        self._cancelled = False

    @property
    def client(self) -> MlflowClient:
        """The client for the tracking URI (built on first use)."""
        if self._client is None:
            # A new sqlite file is set up by one process at a time (see store_lock).
            prepare_local_store(self.tracking_uri)
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def __call__(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the client's method ``name``, counted; raise once cancelled."""
        self.check_not_cancelled()
        self.count(name)
        return getattr(self.client, name)(*args, **kwargs)

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancelled

    def cancel(self) -> None:
        """Make no further call: each later one raises :class:`SinkCancelled`."""
        self._cancelled = True

    def check_not_cancelled(self) -> None:
        """Raise :class:`SinkCancelled` once :meth:`cancel` was called: no call goes out."""
        if self._cancelled:
            raise SinkCancelled("the sink was cancelled; no further MLflow call")

    def count(self, name: str, n: int = 1) -> None:
        """Count a call made some other way than through the client (or a skipped one)."""
        with self._count_lock:
            self.counts[name] += n


def open_local_store(tracking_uri: str) -> None:
    """Build MLflow's store for a local database now, against the current directory.

    MLflow resolves a local store's default artifact root (``./mlruns``) against the
    working directory when it first builds the store for a URI, and reuses that store.
    Inspect changes directory while it sets up tasks loaded from files; a store first
    built then (by the writer thread) would put the run's artifacts in the task's
    directory. Call this where the user's directory is current, off the event loop
    (it may create the database). Remote stores are left alone; a failure is left for
    the writer to meet and report.
    """
    if not tracking_uri.startswith("sqlite:"):
        return
    try:
        prepare_local_store(tracking_uri)
    except Exception as error:
        logger.debug("inspect-mlflow: could not open %s yet: %r", tracking_uri, error)
