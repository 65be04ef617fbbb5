"""The one generic Inspect hook: lifecycle points in, enqueued MLflow writes out.

It knows lifecycle points and ids (run, task, eval-set), never which fields get logged:
that is the mapping's job. Inspect creates a single instance per process; samples of
concurrent tasks call it interleaved on one event loop, eval-set points arrive on
short-lived loops, so all shared state sits behind the session's lock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from typing import Any

import anyio
import anyio.to_thread
from inspect_ai._util.error import PrerequisiteError
from inspect_ai.hooks import Hooks, SampleEnd, TaskEnd

from inspect_mlflow._config import Settings, SettingsError, fingerprint, load_settings
from inspect_mlflow._inspect.log_files import cancelled_logs, log_location, unended_samples
from inspect_mlflow._inspect.progress import TaskSamples
from inspect_mlflow._inspect.routing import ExperimentRouting
from inspect_mlflow._inspect.signals import TerminationGuard
from inspect_mlflow._mapping import MappingInvalid, load_mapping
from inspect_mlflow._mapping.model import LIFECYCLE_POINTS

logger = logging.getLogger(__name__)


class ConfigurationError(PrerequisiteError):
    """Bad settings or mapping: raised from ``enabled()`` so the eval stops before it starts."""

    def __str__(self) -> str:
        return str(self.message)


class MlflowTrackingHook(Hooks):
    """Logs Inspect evaluations to MLflow as the active mapping describes."""

    def __init__(self) -> None:
        self._checked = False
        self._fingerprint: tuple[str | None, ...] = ()
        """The environment the cached settings were parsed from (see :meth:`enabled`)."""
        self._settings: Settings | None = None
        self._mapping: Any = None
        self._points: frozenset[str] = frozenset()
        # Points that may open a resumable run (their saved state is read first).
        self._resume_points: frozenset[str] = frozenset()
        self._session: Any = None
        self._start_lock = threading.Lock()
        self._said_off = False
        # eval_ids whose task_start fired and whose task_end has not (yet).
        self._open_tasks: dict[str, str] = {}
        # eval_id -> (run_id, task identity): every attempt of a task has its own
        # eval_id but one task id, which the hook adds to each point's context.
        self._task_ids: dict[str, tuple[str, str]] = {}
        self._said_resume = False
        # Per task (all its attempts): (sample id, epoch) -> (eval_id, run_id) of samples
        # whose start fired and whose end has not. Inspect cancels the samples in flight
        # when a task aborts, also those already written to the log, whose end then
        # never fires (an eval set's retry reuses them without ending them either).
        self._unended: dict[tuple[str, ...], dict[tuple[Any, int], tuple[str, str]]] = {}
        self._said_reconcile = False
        # eval_id -> where Inspect writes the task's log (known from task start): a task
        # cancelled by Ctrl-C or SIGTERM gets no task_end, and the run end no logs.
        self._log_locations: dict[str, str] = {}
        self._samples_left = TaskSamples()
        """Which sample end is each task's last (see :mod:`~inspect_mlflow._inspect.progress`)."""
        self._termination = TerminationGuard()
        self._routing = ExperimentRouting(
            self._dispatch, self._prepare, lambda: self._session_for("run_start")
        )
        """Which experiment's session each task logs to (its metadata may name one)."""

    # -- activation -------------------------------------------------------------------

    def enabled(self) -> bool:
        """Parse settings and mapping once per run; raise on bad input (stops the eval).

        Inspect asks outside runs too (when a model is created, at an eval set's end):
        while no session is open, the settings are parsed again when the environment
        changed since, so the next eval starts with what it says then.
        """
        if self._checked and (self._session is not None or self._fingerprint == fingerprint()):
            return self._settings is not None
        try:
            settings = load_settings()
        except SettingsError as err:
            raise ConfigurationError(f"inspect-mlflow: {err}") from None
        if not settings.active:
            # Not cached: a model built before the variable was set must not switch
            # logging off for the eval that follows (reading the environment is cheap).
            if not self._said_off:
                logger.debug("inspect-mlflow: MLFLOW_TRACKING_URI is not set; not logging")
                self._said_off = True
            self._settings = None
            return False
        try:
            self._mapping = load_mapping(settings.mapping_path)
        except MappingInvalid as err:
            problems = "\n".join(f"  {e}" for e in err.errors)
            source = settings.mapping_path or "the built-in default mapping"
            raise ConfigurationError(
                f"inspect-mlflow: the mapping {source} (INSPECT_MLFLOW_MAPPING) is invalid:\n"
                f"{problems}\nFix it and run `inspect-mlflow check {source}` to confirm."
            ) from None
        except Exception as err:  # a loader bug (deep nesting...): still no traceback
            source = settings.mapping_path or "the built-in default mapping"
            raise ConfigurationError(
                f"inspect-mlflow: the mapping {source} (INSPECT_MLFLOW_MAPPING) could not be "
                f"read: {type(err).__name__}: {err}\nRun `inspect-mlflow check {source}`."
            ) from None
        self._settings = settings
        self._points = self._mapping.points()
        self._resume_points = self._mapping.resume_points()
        self._checked = True
        self._fingerprint = fingerprint()
        if settings.delivery == "process":
            threading.Thread(
                target=_prestart_delivery, name="inspect-mlflow-delivery-start", daemon=True
            ).start()
        return True

    def _session_for(self, point: str, data: Any = None) -> Any:
        """The session of ``data``'s task, else the current one (started on demand).

        The current session starts on the first point the mapping cares about.
        """
        routed = self._routing.session_of(getattr(data, "eval_id", None))
        if routed is not None:
            return routed
        session = self._session
        if session is not None or point not in self._points or self._settings is None:
            return session
        with self._start_lock:
            if self._session is None:
                if self._settings.delivery == "process":
                    from inspect_mlflow._delivery.remote import RemoteSession

                    self._session = RemoteSession(self._settings, self._mapping)
                else:
                    from inspect_mlflow._delivery.session import Session

                    self._session = Session(self._settings, self._mapping)
            return self._session

    # -- dispatch ---------------------------------------------------------------------

    def _ids(self, data: Any) -> dict[str, Any]:
        """Identities the payload lacks but the mapping may key runs by (``task_id``)."""
        known = self._task_ids.get(getattr(data, "eval_id", None) or "")
        return {"task_id": known[1]} if known else {}

    def _dispatch(
        self, point: str, data: Any, session: Any = None, stamp: float | None = None
    ) -> None:
        session = session or self._session_for(point, data)
        if session is None:
            return
        try:
            if stamp is None:
                session.handle(point, data, **self._ids(data))
            else:
                session.handle(point, data, stamp=stamp, **self._ids(data))
        except Exception as err:  # never break the eval; count and tell once
            session.errors += 1
            if session.errors == 1:
                logger.warning("inspect-mlflow: error at %s: %r", point, err)

    def _hurry(self, data: Any) -> None:
        """Ask the task's session to deliver what it holds now, not at its next interval."""
        session = self._session_for("sample_end", data)
        if session is None:
            return
        try:
            session.hurry()
        except Exception as err:  # only a hint: the run end delivers it all the same
            logger.debug("inspect-mlflow: cannot hurry the delivery: %r", err)

    async def _prepare(self, point: str, data: Any, session: Any = None) -> None:
        """Let the session read the saved state of runs this point continues.

        Off the event loop, bounded by the flush timeout; when it fails the run still
        continues, but its counters start again at zero (said once, at warning level).
        """
        if point not in self._resume_points:
            return
        session = session or self._session_for(point, data)
        if session is None:
            return
        try:
            await asyncio.wait_for(
                asyncio.to_thread(session.prepare, point, data, **self._ids(data)),
                timeout=session.settings.flush_timeout,
            )
        except Exception as err:
            if not self._said_resume:
                self._said_resume = True
                from inspect_mlflow._delivery.session import say_resume_failed

                say_resume_failed(point, repr(err))

    async def on_run_start(self, data: Any) -> None:
        """Open the eval-level run and switch provider autolog on."""
        self._routing.run_starts[data.run_id] = (data, time.time())  # handed on at its first task
        if self._settings is not None:
            # SIGTERM cancels like Ctrl-C until this run ends (even with no run_start rule).
            self._termination.install()
        session = self._session_for("run_start")
        if session is not None:
            # In a thread: explicit autolog imports MLflow and resolves the experiment.
            await anyio.to_thread.run_sync(session.start_autolog)
            uri = session.settings.tracking_uri
            if uri.startswith("sqlite:") and session.settings.delivery == "thread":
                # Now, while the directory the eval started in is current (see there);
                # in a thread, import included: importing MLflow takes seconds.
                await anyio.to_thread.run_sync(_open_local_store, uri)

    async def on_task_start(self, data: Any) -> None:
        """Open the task run; remember it so a missing task_end can be made good."""
        self._open_tasks[data.eval_id] = data.run_id
        task_id = getattr(data.spec, "task_id", None)
        if task_id:
            self._task_ids[data.eval_id] = (data.run_id, task_id)
        location = log_location(data.eval_id)
        if location:
            self._log_locations[data.eval_id] = location
        self._samples_left.started(data.eval_id, data.spec)
        await self._routing.task_started(data, self._settings, self._mapping, self._ids(data))
        await self._prepare("task_start", data)
        self._dispatch("task_start", data)

    async def on_task_end(self, data: Any) -> None:
        """Log the samples the task's log has but whose end never fired; close the task run."""
        self._open_tasks.pop(data.eval_id, None)
        self._samples_left.drop(data.eval_id)
        self._routing.links.drop(data.eval_id)  # its header is written
        await self._reconcile(data.eval_set_id, data.run_id, data.eval_id, data.log)
        self._dispatch("task_end", data)

    def _task_key(self, eval_set_id: str | None, eval_id: str) -> tuple[str, ...]:
        """One key for every attempt of a task (an eval set gives each a new eval_id)."""
        known = self._task_ids.get(eval_id)
        return (eval_set_id, known[1]) if eval_set_id and known else (eval_id,)

    async def on_sample_start(self, data: Any) -> None:
        """Remember the sample until its end (see :meth:`_reconcile`)."""
        summary = data.summary
        unended = self._unended.setdefault(self._task_key(data.eval_set_id, data.eval_id), {})
        unended[(summary.id, summary.epoch)] = (data.eval_id, data.run_id)
        if "sample_start" in self._resume_points:
            await self._prepare("sample_start", data)
        self._dispatch("sample_start", data)

    async def on_sample_end(self, data: Any) -> None:
        """Evaluate the mapping's rules for ``sample_end``; the sample has ended."""
        unended = self._unended.get(self._task_key(data.eval_set_id, data.eval_id))
        if unended:
            unended.pop((data.sample.id, data.sample.epoch), None)
        if "sample_end" in self._resume_points:
            await self._prepare("sample_end", data)
        self._dispatch("sample_end", data)
        last = self._samples_left.ended(data.eval_id)
        if last:  # the task's log and the run's end follow: deliver what is held now
            self._hurry(data)
        await self._routing.link_run(data.eval_id, last=last)

    async def _reconcile(
        self, eval_set_id: str | None, run_id: str, eval_id: str, log: Any
    ) -> None:
        """Feed ``sample_end`` for samples of the task's log that started but never ended.

        Only samples that started in this process are candidates (ones reused from an
        earlier eval_set() call were logged, or reconciled, by that call). They are read
        from the log file off the event loop, bounded by the flush timeout, and handed to
        the mapping in the order they completed, as if their end had fired.
        """
        unended = self._unended.pop(self._task_key(eval_set_id, eval_id), None)
        location = getattr(log, "location", None)
        if not unended or not location or "sample_end" not in self._points:
            return
        session = self._routing.session_of(eval_id) or self._session_for("sample_end")
        if session is None:
            return
        try:
            samples = await unended_samples(
                str(location), set(unended), session.settings.flush_timeout
            )
        except Exception as err:
            if not self._said_reconcile:
                self._said_reconcile = True
                logger.warning(
                    "inspect-mlflow: could not read %s for samples whose end never fired "
                    "(they are not logged): %r",
                    location,
                    err,
                )
            return
        for sample in samples:
            started_in, started_run = unended[(sample.id, sample.epoch)]
            self._dispatch(
                "sample_end",
                SampleEnd(
                    eval_set_id=eval_set_id,
                    run_id=started_run,
                    eval_id=started_in,
                    sample_id=sample.uuid or "",
                    sample=sample,
                ),
            )

    async def on_run_end(self, data: Any) -> None:
        """Close tasks whose task_end never fired, then the run; deliver and report."""
        if data.exception is None and not data.logs and data.run_id in self._open_tasks.values():
            # Ctrl-C under asyncio: Inspect ends the run with neither an exception nor
            # logs while its tasks never ended. Tell the mapping the run was cancelled.
            interrupted = asyncio.CancelledError("the run ended before its tasks (interrupted)")
            data = dataclasses.replace(data, exception=interrupted)
        for log in data.logs or []:
            eval_id = log.eval.eval_id
            if self._open_tasks.get(eval_id) == data.run_id:
                self._open_tasks.pop(eval_id)
                orphan = TaskEnd(
                    eval_set_id=data.eval_set_id, run_id=data.run_id, eval_id=eval_id, log=log
                )
                await self._reconcile(data.eval_set_id, data.run_id, eval_id, log)
                self._dispatch("task_end", orphan)
        for log in await self._logs_on_disk(data.run_id):
            # Cancelled (Ctrl-C, SIGTERM): Inspect wrote the task's log, status
            # `cancelled`, but handed it to no hook. Its summary is in that file.
            eval_id = log.eval.eval_id
            self._open_tasks.pop(eval_id, None)
            orphan = TaskEnd(
                eval_set_id=data.eval_set_id, run_id=data.run_id, eval_id=eval_id, log=log
            )
            await self._reconcile(data.eval_set_id, data.run_id, eval_id, log)
            self._dispatch("task_end", orphan)
        for eval_id, run_id in list(self._open_tasks.items()):
            if run_id == data.run_id:
                del self._open_tasks[eval_id]
        home = self._settings.experiment_name if self._settings is not None else ""
        await self._routing.run_ended(data, home, self._session)
        for eval_id, (run_id, _) in list(self._task_ids.items()):
            if run_id == data.run_id:
                del self._task_ids[eval_id]
                self._log_locations.pop(eval_id, None)
        for key, unended in list(self._unended.items()):
            if any(run_id == data.run_id for _, run_id in unended.values()):
                del self._unended[key]
        await self._finish_run()
        self._termination.release()

    async def _logs_on_disk(self, run_id: str) -> list[Any]:
        """The finished logs of this run's tasks that are still open, read from disk."""
        wanted = {
            eval_id: self._log_locations[eval_id]
            for eval_id, owner in self._open_tasks.items()
            if owner == run_id and eval_id in self._log_locations
        }
        if not wanted or self._session is None:
            return []
        return await cancelled_logs(wanted, self._session.settings.flush_timeout)

    async def _finish_run(self) -> None:
        await self._routing.finish()
        session = self._session
        self._checked = False
        if session is None:
            return
        timeout = session.settings.flush_timeout
        # Shielded: an interrupted run ends inside a cancelled scope, and a cancellation
        # here would leave writes undelivered (and make Inspect end the run a second time).
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(session.finish, timeout)
            _say_where(session.settings)
            if not session.has_open_runs():
                # In a thread: it links autolog traces to their task runs.
                await anyio.to_thread.run_sync(session.stop_autolog)
                await anyio.to_thread.run_sync(session.close, timeout)
                if self._session is session:
                    self._session = None


def _say_where(settings: Settings) -> None:
    """One line at the end of each eval: where it logged (stderr with display=none too)."""
    from inspect_mlflow._inspect.where import say_where

    if settings.tracking_uri:
        say_where(settings.tracking_uri, settings.experiment_name)


def _prestart_delivery() -> None:
    """Start the delivery process while Inspect sets the eval up (it imports MLflow)."""
    from inspect_mlflow._delivery.remote import prestart

    prestart()


def _open_local_store(tracking_uri: str) -> None:
    from inspect_mlflow._writer.mlflow_sink import open_local_store

    open_local_store(tracking_uri)


def _make_point_method(point: str) -> Any:
    async def method(self: MlflowTrackingHook, data: Any) -> None:
        if point in self._resume_points:
            await self._prepare(point, data)
        self._dispatch(point, data)

    method.__name__ = f"on_{point}"
    method.__doc__ = f"Evaluate the mapping's rules for ``{point}``."
    return method


for _point in LIFECYCLE_POINTS:
    # Points this Inspect version does not have are never emitted, so never defined here.
    if f"on_{_point}" not in vars(MlflowTrackingHook) and hasattr(Hooks, f"on_{_point}"):
        setattr(MlflowTrackingHook, f"on_{_point}", _make_point_method(_point))
