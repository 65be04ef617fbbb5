"""Reading a task's own log while the eval runs, to make good the ends Inspect never fired.

Inspect cancels the samples in flight when a task aborts (their end never fires) and
hands a task cancelled by Ctrl-C or SIGTERM to no hook at all, but it has written both to
the task's log. The hook reads them from there: off the event loop, shielded (an
interrupted run ends inside a cancelled scope) and bounded by the flush timeout, so a
slow or remote log dir never holds the exit.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any

import anyio
import anyio.to_thread

__all__ = ["cancelled_logs", "log_location", "unended_samples"]

logger = logging.getLogger(__name__)


def log_location(eval_id: str) -> str | None:
    """Where Inspect writes this task's log: its control registry has it at task start.

    Not a public API: when it is missing, a cancelled task keeps only what its samples
    logged.
    """
    try:
        from inspect_ai._control.eval_state import get_eval_state

        location = getattr(get_eval_state(eval_id), "log_location", None)
    except Exception:
        return None
    return location if isinstance(location, str) and location else None


async def unended_samples(location: str, wanted: set[tuple[Any, int]], timeout: float) -> list:
    """The samples ``wanted`` (id, epoch) the log at ``location`` holds, by completion.

    Raises what reading raises (or ``TimeoutError`` after ``timeout`` seconds): the
    caller says so once.
    """
    read = contextvars.Context().run  # no async-library context: Inspect's sync reader
    loop = asyncio.get_running_loop()
    with anyio.CancelScope(shield=True):
        return await asyncio.wait_for(
            loop.run_in_executor(None, read, _read_samples, location, wanted), timeout=timeout
        )


async def cancelled_logs(locations: dict[str, str], timeout: float) -> list[Any]:
    """Headers of the logs at ``locations`` (eval_id -> location) their task finished.

    A log that cannot be read, or that is not read within ``timeout`` seconds, is left
    out with a warning: those runs keep what their samples logged.
    """
    read = contextvars.Context().run  # no async-library context: Inspect's sync reader
    headers: list[Any] = []
    with anyio.CancelScope(shield=True):
        with anyio.move_on_after(timeout) as scope:
            try:
                headers = await anyio.to_thread.run_sync(
                    read, _read_headers, locations, abandon_on_cancel=True
                )
            except Exception as err:
                logger.warning("inspect-mlflow: could not read the cancelled logs: %r", err)
    if scope.cancelled_caught:
        logger.warning(
            "inspect-mlflow: the cancelled tasks' logs were not read within %gs "
            "(INSPECT_MLFLOW_FLUSH_TIMEOUT); their runs keep what their samples logged",
            timeout,
        )
    return headers


def _read_samples(location: str, wanted: set[tuple[Any, int]]) -> list[Any]:
    """In a worker thread: the summaries say which are there, then only those are read."""
    from inspect_ai.log import read_eval_log_sample, read_eval_log_sample_summaries

    found = [s for s in read_eval_log_sample_summaries(location) if (s.id, s.epoch) in wanted]
    found.sort(key=lambda s: (str(s.completed_at or s.started_at or ""), str(s.id), s.epoch))
    return [
        read_eval_log_sample(location, id=s.id, epoch=s.epoch, resolve_attachments=True)
        for s in found
    ]


def _read_headers(locations: dict[str, str]) -> list[Any]:
    """Headers of the logs at ``locations`` that their task finished (not ``started``)."""
    from inspect_ai.log import read_eval_log

    headers = []
    for eval_id, location in locations.items():
        try:
            log = read_eval_log(location, header_only=True)
        except Exception as err:
            logger.debug("inspect-mlflow: cannot read the log %s: %r", location, err)
            continue
        if log.eval.eval_id == eval_id and log.status != "started":
            headers.append(log)
    return headers
