"""Build a local sqlite store once, under an inter-process lock, before any writer uses it.

Why (issue 15, case 3): MLflow creates a new sqlite database's tables (its schema
migrations) when a process first opens it and finds them missing. Two evals started at
once on a new ``sqlite:///`` file both ran the migrations, on the same file; one of them
had its writes refused (spooled), and once the file was left broken. MLflow serialises
this only between threads of one process.

So the first use of a sqlite store in a process takes an exclusive ``fcntl.flock`` on a
lock file beside the database (``<db>.lock``) and builds MLflow's store under it: the
first process creates the tables, the others wait, then find them and only check the
schema. After that the database's own locking serialises the writes. Where ``fcntl`` is
missing (Windows) or the lock file cannot be made, the store is built as before.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = ["prepare_local_store", "sqlite_path"]

_lock = threading.Lock()
_prepared: set[tuple[int, str]] = set()


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI; None for other URIs and ``:memory:``.

    A relative path is relative to the current directory, as MLflow resolves it.
    """
    if not tracking_uri.startswith("sqlite:"):
        return None
    parts = urlsplit(tracking_uri)
    path = unquote(parts.path)
    if path.startswith("/"):
        path = path[1:]  # sqlite:///rel.db -> rel.db, sqlite:////abs.db -> /abs.db
    if not path or path == ":memory:":
        return None
    return Path(path)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (nothing where that is not possible)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        yield  # a read-only directory: MLflow will say what is wrong
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def prepare_local_store(tracking_uri: str) -> None:
    """Open MLflow's store for a sqlite URI now, once per process, under the file lock.

    Other URIs return at once. A failure (a path that cannot be opened) is raised, as the
    first MLflow call would have raised it, and the next call tries again.
    """
    path = sqlite_path(tracking_uri)
    if path is None:
        return
    key = (os.getpid(), str(path.resolve()))
    if key in _prepared:
        return
    with _lock:
        if key in _prepared:
            return
        from mlflow import MlflowClient

        lock_path = path.resolve().with_name(path.name + ".lock")
        with _exclusive(lock_path):
            # Builds (and caches, per process) the store: creates the tables if missing.
            MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
        _prepared.add(key)
