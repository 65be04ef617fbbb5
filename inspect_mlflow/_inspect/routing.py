"""Which experiment each task logs to, and the run's start and end handed to each of them.

A task's metadata may name another experiment (see ``eval_metadata``): its points then go
to that experiment's session (one per experiment), which gets the run's start (its own
parent run there) when the task starts, and the run's end with the logs of its own tasks.
The environment's experiment gets no parent run without tasks. This is the hook's part
that reads ``spec.metadata``, the one Inspect field it reads for settings.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import anyio
import anyio.to_thread

from inspect_mlflow._config import Settings

logger = logging.getLogger(__name__)

__all__ = ["ExperimentRouting"]


class ExperimentRouting:
    """The routing half of :class:`~inspect_mlflow._inspect.hook.MlflowTrackingHook`.

    The hook supplies settings, mapping, its main session and how a point is prepared
    and dispatched; this half keeps which session each task and run went to.
    """

    _settings: Settings | None
    _mapping: Any
    _points: frozenset[str]
    _session: Any

    def __init__(self) -> None:
        # run_id -> (RunStart, time), experiment -> session, eval_id -> session,
        # (experiment, run_id) pairs whose session got the start.
        self._run_starts: dict[str, tuple[Any, float]] = {}
        self._experiment_sessions: dict[str, Any] = {}
        self._routes: dict[str, Any] = {}
        self._started_in: set[tuple[str, str]] = set()
        self._keys: Any = None
        """An engine used only for the logical keys of a task's runs (the log's link)."""
        self._said_metadata = False

    # Supplied by the hook.
    def _session_for(self, point: str, data: Any = None) -> Any:
        raise NotImplementedError

    def _ids(self, data: Any) -> dict[str, Any]:
        raise NotImplementedError

    def _dispatch(
        self, point: str, data: Any, session: Any = None, stamp: float | None = None
    ) -> None:
        raise NotImplementedError

    async def _prepare(self, point: str, data: Any, session: Any = None) -> None:
        raise NotImplementedError

    async def _settings_from_metadata(self, data: Any) -> None:
        """Route the task to the experiment its metadata names; link its log to its run.

        The one Inspect field the hook reads for settings: ``spec.metadata`` (the eval's
        ``--metadata`` merged with the task's own), since task start is the first point
        that carries it. Into the same dictionary, which Inspect writes to the log's
        header when the task ends, goes where the task's run is (``mlflow_run``, with
        the tags the metadata gave, which the mapping reads from there).
        """
        from inspect_mlflow._inspect.eval_metadata import LINK_KEY, eval_settings, run_link

        settings = self._settings
        if settings is None or settings.tracking_uri is None:
            return
        spec = data.spec
        metadata = getattr(spec, "metadata", None) or {}
        wanted = eval_settings(metadata)
        if wanted.problems and not self._said_metadata:
            self._said_metadata = True
            logger.warning(
                "inspect-mlflow: the eval's metadata has settings that were ignored: %s",
                "; ".join(wanted.problems),
            )
        experiment = wanted.experiment or settings.experiment_name
        session = None
        if experiment != settings.experiment_name:
            session = self._routes[data.eval_id] = self._experiment_session(experiment)
        await self._start_run_in(experiment, data.run_id, session)
        link: dict[str, Any] = {}
        key = self._task_run_key(data)
        if key is not None:
            link = run_link(settings.tracking_uri, experiment, key)
        if wanted.tags:
            link["tags"] = dict(wanted.tags)
        if link:
            try:
                spec.metadata = {**metadata, LINK_KEY: link}
            except Exception as err:  # an EvalSpec that refuses: the run still logs
                logger.debug("inspect-mlflow: cannot link the log to its run: %r", err)

    async def _start_run_in(self, experiment: str, run_id: str, session: Any) -> None:
        """Hand the run's start to ``session`` (None: the main one) once, at its time."""
        entry = self._run_starts.get(run_id)
        if entry is None or (experiment, run_id) in self._started_in:
            return
        self._started_in.add((experiment, run_id))
        start, stamp = entry
        session = session or self._session_for("run_start")
        await self._prepare("run_start", start, session)
        self._dispatch("run_start", start, session, stamp)

    def _experiment_session(self, experiment: str) -> Any:
        """The session logging to ``experiment`` (other than the environment's one)."""
        session = self._experiment_sessions.get(experiment)
        if session is None:
            assert self._settings is not None
            settings = dataclasses.replace(self._settings, experiment_name=experiment)
            if settings.delivery == "process":
                from inspect_mlflow._delivery.remote import RemoteSession

                session = RemoteSession(settings, self._mapping)
            else:
                from inspect_mlflow._delivery.session import Session

                session = Session(settings, self._mapping)
            self._experiment_sessions[experiment] = session
        return session

    def _task_run_key(self, data: Any) -> str | None:
        """The logical key of the deepest run the mapping opens at task start, if any."""
        from inspect_mlflow._engine.contexts import context
        from inspect_mlflow._engine.engine import Engine

        if "task_start" not in self._points:
            return None
        try:
            if self._keys is None or self._keys.mapping is not self._mapping:
                self._keys = Engine(self._mapping, log_artifacts=False, traces=False)
            ctx = context("task_start", data, **self._ids(data))
            keys = self._keys.run_keys("task_start", ctx)
        except Exception as err:
            logger.debug("inspect-mlflow: no run key for the log's link: %r", err)
            return None
        return keys[-1] if keys else None

    async def _dispatch_run_end(self, data: Any) -> None:
        """The run's end to each session that logged it, with the logs of its own tasks.

        A run none of whose tasks started (Inspect rejected the eval, say) gets its start
        and end in the environment's experiment.
        """
        home = self._settings.experiment_name if self._settings is not None else ""
        if not any(run_id == data.run_id for _, run_id in self._started_in):
            await self._start_run_in(home, data.run_id, None)
        self._run_starts.pop(data.run_id, None)
        elsewhere = {
            experiment: session
            for experiment, session in self._experiment_sessions.items()
            if (experiment, data.run_id) in self._started_in
        }
        at_home = (home, data.run_id) in self._started_in
        self._started_in.discard((home, data.run_id))
        if not elsewhere:
            self._dispatch("run_end", data)
            return
        logs = list(data.logs or [])
        if at_home:
            here = [log for log in logs if log.eval.eval_id not in self._routes]
            self._dispatch("run_end", dataclasses.replace(data, logs=here), self._session)
        for experiment, session in elsewhere.items():
            self._started_in.discard((experiment, data.run_id))
            own = [log for log in logs if self._routes.get(log.eval.eval_id) is session]
            self._dispatch("run_end", dataclasses.replace(data, logs=own), session)

    async def _finish_experiment_sessions(self) -> None:
        """Deliver the sessions of other experiments; close those with no run left open."""
        from inspect_mlflow._inspect.where import say_where

        with anyio.CancelScope(shield=True):  # as the main session's (see the hook)
            for experiment, session in list(self._experiment_sessions.items()):
                timeout = session.settings.flush_timeout
                await anyio.to_thread.run_sync(session.finish, timeout)
                if session.settings.tracking_uri:
                    say_where(session.settings.tracking_uri, session.settings.experiment_name)
                if not session.has_open_runs():
                    await anyio.to_thread.run_sync(session.close, timeout)
                    del self._experiment_sessions[experiment]
                    for eval_id, routed in list(self._routes.items()):
                        if routed is session:
                            del self._routes[eval_id]
