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
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread

from inspect_mlflow._config import Settings
from inspect_mlflow._inspect.eval_metadata import PendingLinks

logger = logging.getLogger(__name__)

__all__ = ["LINK_WAIT", "ExperimentRouting"]

LINK_WAIT = 0.3
"""Seconds a task's last sample end waits, once, for its run's ids (the log's URL) when
no earlier sample end found them."""


Dispatch = Callable[..., None]
"""The hook's dispatch: ``(point, data, session=None, stamp=None)``."""

Prepare = Callable[..., Awaitable[None]]
"""The hook's prepare (reads the saved state of runs a point continues): ``(point, data,
session=None)``."""


class ExperimentRouting:
    """Which session each task logs to, and which sessions got each run's start.

    The hook owns one and calls it at run start (:attr:`run_starts`), task start
    (:meth:`task_started`), run end (:meth:`run_ended`) and when the run is finished
    (:meth:`finish`); points of a routed task go to :meth:`session_of` its eval id.

    Args:
        dispatch: How the hook hands a point to a session.
        prepare: How the hook lets a session read the saved state of runs first.
        main_session: The environment's session (started on demand), or None.
    """

    def __init__(
        self, dispatch: Dispatch, prepare: Prepare, main_session: Callable[[], Any]
    ) -> None:
        self._dispatch = dispatch
        self._prepare = prepare
        self._main_session = main_session
        self.run_starts: dict[str, tuple[Any, float]] = {}
        """run_id -> (RunStart, when it happened): handed on at the run's first task."""
        self.sessions: dict[str, Any] = {}
        """Experiment -> its session, for experiments other than the environment's."""
        self.routes: dict[str, Any] = {}
        """eval_id -> the session of the experiment the task's metadata named."""
        self.started_in: set[tuple[str, str]] = set()
        """(experiment, run_id) pairs whose session got the run's start."""
        self._keys: Any = None
        """An engine used only for the logical keys of a task's runs (the log's link)."""
        self.links = PendingLinks()
        """Task links still waiting for their run's ids (see :meth:`link_run`)."""
        self._said_metadata = False

    def session_of(self, eval_id: str | None) -> Any:
        """The session a task was routed to, or None (the environment's)."""
        return self.routes.get(eval_id or "")

    async def task_started(
        self, data: Any, settings: Settings | None, mapping: Any, ids: dict[str, Any]
    ) -> None:
        """Route the task to the experiment its metadata names; link its log to its run.

        The one Inspect field the hook reads for settings: ``spec.metadata`` (the eval's
        ``--metadata`` merged with the task's own), since task start is the first point
        that carries it. Into the same dictionary, which Inspect writes to the log's
        header when the task ends, goes where the task's run is (``mlflow_run``, with
        the tags the metadata gave, which the mapping reads from there).
        """
        from inspect_mlflow._inspect.eval_metadata import LINK_KEY, eval_settings, run_link

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
            session = self.routes[data.eval_id] = self._experiment_session(
                settings, mapping, experiment
            )
        await self._start_run_in(experiment, data.run_id, session)
        link: dict[str, Any] = {}
        key = self._task_run_key(mapping, data, ids)
        if key is not None:
            link = run_link(settings.tracking_uri, experiment, key)
        if wanted.tags:
            link["tags"] = dict(wanted.tags)
        if link:
            try:
                spec.metadata = {**metadata, LINK_KEY: link}
            except Exception as err:  # an EvalSpec that refuses: the run still logs
                logger.debug("inspect-mlflow: cannot link the log to its run: %r", err)
                return
        owner = session or self._main_session()
        if key is not None and owner is not None:

            def lookup(run_key: str) -> tuple[str, str] | None:
                return owner.run_ids([run_key]).get(run_key)  # type: ignore[no-any-return]

            self.links.add(data.eval_id, spec, settings.tracking_uri, key, lookup)

    async def link_run(self, eval_id: str, *, last: bool) -> None:
        """Put the URL of the task's run into its log's link, once the run exists.

        At each sample's end (the log's header is written at the task's end) it looks;
        the task's ``last`` expected sample end, if the ids are still not in, waits for them,
        :data:`LINK_WAIT` seconds at most. Earlier ends never wait: Inspect holds the
        sample's slot while the hook runs, so a wait there would slow the eval. A run that
        never exists in time (a server that does not answer) leaves the link as it was: a
        search filter.
        """
        links = self.links
        if links.fill(eval_id) or not last or eval_id in links.waited:
            return
        links.waited.add(eval_id)
        deadline = time.monotonic() + LINK_WAIT
        while time.monotonic() < deadline and not links.fill(eval_id):
            await anyio.sleep(0.02)

    async def _start_run_in(self, experiment: str, run_id: str, session: Any) -> None:
        """Hand the run's start to ``session`` (None: the main one) once, at its time."""
        entry = self.run_starts.get(run_id)
        if entry is None or (experiment, run_id) in self.started_in:
            return
        self.started_in.add((experiment, run_id))
        start, stamp = entry
        session = session or self._main_session()
        await self._prepare("run_start", start, session)
        self._dispatch("run_start", start, session, stamp)

    def _experiment_session(self, settings: Settings, mapping: Any, experiment: str) -> Any:
        """The session logging to ``experiment`` (other than the environment's one)."""
        session = self.sessions.get(experiment)
        if session is None:
            settings = dataclasses.replace(settings, experiment_name=experiment)
            if settings.delivery == "process":
                from inspect_mlflow._delivery.remote import RemoteSession

                session = RemoteSession(settings, mapping)
            else:
                from inspect_mlflow._delivery.session import Session

                session = Session(settings, mapping)
            self.sessions[experiment] = session
        return session

    def _task_run_key(self, mapping: Any, data: Any, ids: dict[str, Any]) -> str | None:
        """The logical key of the deepest run the mapping opens at task start, if any."""
        from inspect_mlflow._engine.contexts import context
        from inspect_mlflow._engine.engine import Engine

        if "task_start" not in mapping.points():
            return None
        try:
            if self._keys is None or self._keys.mapping is not mapping:
                self._keys = Engine(mapping, log_artifacts=False, traces=False)
            ctx = context("task_start", data, **ids)
            keys = self._keys.run_keys("task_start", ctx)
        except Exception as err:
            logger.debug("inspect-mlflow: no run key for the log's link: %r", err)
            return None
        return keys[-1] if keys else None

    async def run_ended(self, data: Any, home: str, main: Any) -> None:
        """The run's end to each session that logged it, with the logs of its own tasks.

        A run none of whose tasks started (Inspect rejected the eval, say) gets its start
        and end in the environment's experiment, ``home``, whose session is ``main``.
        """
        if not any(run_id == data.run_id for _, run_id in self.started_in):
            await self._start_run_in(home, data.run_id, None)
        self.run_starts.pop(data.run_id, None)
        elsewhere = {
            experiment: session
            for experiment, session in self.sessions.items()
            if (experiment, data.run_id) in self.started_in
        }
        at_home = (home, data.run_id) in self.started_in
        self.started_in.discard((home, data.run_id))
        if not elsewhere:
            self._dispatch("run_end", data)
            return
        logs = list(data.logs or [])
        if at_home:
            here = [log for log in logs if log.eval.eval_id not in self.routes]
            self._dispatch("run_end", dataclasses.replace(data, logs=here), main)
        for experiment, session in elsewhere.items():
            self.started_in.discard((experiment, data.run_id))
            own = [log for log in logs if self.routes.get(log.eval.eval_id) is session]
            self._dispatch("run_end", dataclasses.replace(data, logs=own), session)

    async def finish(self) -> None:
        """Deliver the sessions of other experiments; close those with no run left open."""
        from inspect_mlflow._inspect.where import say_where

        with anyio.CancelScope(shield=True):  # as the main session's (see the hook)
            for experiment, session in list(self.sessions.items()):
                timeout = session.settings.flush_timeout
                await anyio.to_thread.run_sync(session.finish, timeout)
                if session.settings.tracking_uri:
                    say_where(session.settings.tracking_uri, session.settings.experiment_name)
                if not session.has_open_runs():
                    await anyio.to_thread.run_sync(session.close, timeout)
                    del self.sessions[experiment]
                    for eval_id, routed in list(self.routes.items()):
                        if routed is session:
                            del self.routes[eval_id]
