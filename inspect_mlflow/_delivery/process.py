"""The delivery process: evaluates the mapping and talks to MLflow for an eval's process.

Run as ``python -m inspect_mlflow._delivery.process`` by
:mod:`inspect_mlflow._delivery.remote`, with pipes on stdin (messages in) and stdout
(replies and log records out); see
:mod:`inspect_mlflow._delivery.wire`. Inside, each session is the ordinary :class:`Session`
(engine, background writer, trace sender, spool): the same code that runs in the eval's
process with ``INSPECT_MLFLOW_DELIVERY=thread``, fed context documents instead of
Inspect's objects.

Why a process: in the eval's process, MLflow's import (seconds of CPU, about 125 MB),
the mapping's evaluation and the HTTP client all hold Python's GIL that the eval's own
event loop needs; here they run on another core.

When stdin closes (the eval's process ended or died), every session still open is
finished (delivered or spooled) before the process exits.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import MutableMapping
from typing import Any

from inspect_mlflow._delivery.http_costs import (
    cache_environ_proxies,
    fail_absent_imports,
    forget_proxies,
)
from inspect_mlflow._delivery.wire import Channel
from inspect_mlflow._writer.quickack import enable_quick_acks
from inspect_mlflow._writer.reachability import own_http_retries

CONFIRM_INTERVAL = 0.5
"""Seconds between two confirmations of delivered points to the eval's process."""

RUN_IDS_INTERVAL = 0.05
"""Seconds between two looks for runs newly created in MLflow, whose ids the eval's
process puts into its log's link to the run before the log's header is written."""


class _Forward(logging.Handler):
    """Sends log records to the eval's process, which logs them under the same name.

    Once the eval's process is gone (its pipe broke: it was killed), a record goes to
    this process's stderr as one plain line, the way the eval's would have shown it, not
    as logging's "--- Logging error ---" traceback on a terminal whose command has exited.
    """

    def __init__(self, channel: Channel) -> None:
        super().__init__()
        self._channel = channel
        self._gone = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self._gone:
            try:
                self._channel.send(("log", record.levelno, record.name, record.getMessage()))
                return
            except Exception:
                self._gone = True
        if record.levelno < logging.WARNING:
            return
        try:
            sys.stderr.write(record.getMessage() + "\n")
            sys.stderr.flush()
        except Exception:
            pass  # no stderr either: nowhere left to say it


class DeliveryProcess:
    """The message loop: one :class:`Session` per ``open``, answered in arrival order."""

    def __init__(self, incoming: Channel, outgoing: Channel) -> None:
        self._in = incoming
        self._out = outgoing
        self._sessions: dict[int, Any] = {}
        self._said_resume = False
        self._handler = _Forward(outgoing)
        logging.getLogger().addHandler(self._handler)
        threading.Thread(target=self._confirm, name="inspect-mlflow-confirm", daemon=True).start()

    def run(self) -> int:
        """Serve until stdin closes; returns the exit code."""
        while True:
            try:
                message = self._in.receive()
            except EOFError:
                self._finish_all()
                return 0
            kind = message[0]
            handler = getattr(self, f"_on_{kind}", None)
            if handler is None:
                logging.getLogger(__name__).error("inspect-mlflow: unknown message %r", kind)
                continue
            handler(*message[1:])

    def _reply(self, seq: int, value: Any) -> None:
        self._out.send(("reply", seq, value))

    def _on_open(
        self, seq: int, sid: int, settings: Any, environ: dict[str, str], cwd: str, level: int
    ) -> None:
        from inspect_mlflow._delivery.session import Session
        from inspect_mlflow._mapping import load_mapping

        # MLflow reads its own variables (credentials, timeouts) from the environment.
        os.environ.clear()
        os.environ.update(environ)
        forget_proxies()  # they come from the environment
        own_http_retries()  # after the eval's environment: the writer retries, not MLflow
        size_http_pool()  # before this process's first request builds MLflow's pool
        os.chdir(cwd)
        logging.getLogger().setLevel(level)
        self._handler.setLevel(level)
        try:
            self._sessions[sid] = Session(settings, load_mapping(settings.mapping_path))
        except Exception as err:  # the eval's process checked both: a bug if it happens
            logging.getLogger(__name__).warning("inspect-mlflow: cannot log this run: %r", err)
        self._reply(seq, sid in self._sessions)

    def _on_point(self, sid: int, point: str, document: Any, stamp: float | None = None) -> None:
        session = self._sessions.get(sid)
        if session is not None:
            session.handle_document(point, document, stamp)

    def _on_hurry(self, sid: int) -> None:
        session = self._sessions.get(sid)
        if session is not None:
            session.hurry()

    def _send_run_ids(self, sent: set[tuple[int, str]]) -> bool:
        """Send the ids of open runs that now exist in MLflow, each once; False: pipe gone."""
        try:
            sessions = list(self._sessions.items())
        except RuntimeError:  # changed while copied (a session opened): next time
            return True
        for sid, session in sessions:
            try:
                found = session.run_ids()
            except Exception:
                continue
            for key, ids in found.items():
                if (sid, key) in sent:
                    continue
                try:
                    self._out.send(("run", sid, key, *ids))
                except (OSError, ValueError):
                    return False
                sent.add((sid, key))
        return True

    def _confirm(self) -> None:
        """Tell the eval's process, twice a second, which points are delivered (or spooled).

        Should this process die, the eval's process takes delivery over and sends again
        only the points not confirmed (see ``_remote.RemoteSession``). In between, the ids
        of each run as soon as it exists (for the link in the eval's log).
        """
        confirmed: dict[int, int] = {}
        sent: set[tuple[int, str]] = set()
        while True:
            due = time.monotonic() + CONFIRM_INTERVAL
            while time.monotonic() < due:
                time.sleep(RUN_IDS_INTERVAL)
                if not self._send_run_ids(sent):
                    return
            try:
                sessions = list(self._sessions.items())
            except RuntimeError:  # changed while copied (a session opened): next time
                continue
            for sid, session in sessions:
                try:
                    n = session.points_confirmed()
                except Exception:  # never end the confirmations: a takeover needs them
                    continue
                if n <= confirmed.get(sid, 0):
                    continue
                try:
                    self._out.send(("acked", sid, n))
                except (OSError, ValueError):  # the pipe is gone: stdin's EOF ends us
                    return
                confirmed[sid] = n

    def _on_prepare(self, sid: int, point: str, document: Any) -> None:
        """Read the saved state of runs ``point`` continues, before the point itself.

        Bounded by the flush timeout (a server that does not answer must not hold the
        points behind it); on failure the run still continues, its counters from zero.
        """
        session = self._sessions.get(sid)
        if session is None:
            return
        failed: list[BaseException] = []

        def read() -> None:
            try:
                session.prepare_document(point, document)
            except Exception as err:
                failed.append(err)

        reader = threading.Thread(target=read, name="inspect-mlflow-resume", daemon=True)
        reader.start()
        reader.join(session.settings.flush_timeout)
        if (failed or reader.is_alive()) and not self._said_resume:
            self._said_resume = True
            from inspect_mlflow._delivery.session import say_resume_failed

            say_resume_failed(point, repr(failed[0]) if failed else "no answer in time")

    def _on_finish(self, seq: int, sid: int, timeout: float) -> None:
        session = self._sessions.get(sid)
        if session is None:
            self._reply(seq, (False, False))
            return
        delivered = session.finish(timeout)
        self._reply(seq, (delivered, session.has_open_runs()))

    def _on_close(self, seq: int, sid: int, timeout: float) -> None:
        session = self._sessions.pop(sid, None)
        if session is not None:
            session.close(timeout)
        self._reply(seq, None)

    def _finish_all(self) -> None:
        """The eval's process is gone: close its runs as FAILED, deliver or spool the rest.

        A session still here was never closed: its process ended (or was killed) before
        the run end, so its runs would otherwise show RUNNING for ever.
        """
        for session in self._sessions.values():
            session.close_open_runs("FAILED")
            timeout = session.settings.flush_timeout
            session.finish(timeout)
            session.close(timeout)
        self._sessions.clear()


def _import_mlflow() -> None:
    """Import the MLflow side now (seconds), while the eval is still starting."""
    try:
        import inspect_mlflow._writer.mlflow_sink  # noqa: F401
        import inspect_mlflow._writer.mlflow_sink.trace_send  # noqa: F401
    except Exception:  # the session's own import will meet it again and report it
        pass


# Modules MLflow's REST client tries to import on every request to learn whether it runs
# inside Databricks or a notebook (its request-header providers), 9 tries per request.
# Where one is not installed, each try searches every entry of sys.path again under
# Python's import lock, which the trace sender's concurrent requests then queue on: about
# 0.5 ms of CPU per request. Not ``pyspark`` (2 more tries): MLflow tests
# ``"pyspark" in sys.modules`` elsewhere and would then import from the marker; its
# imports fail fast by a finder instead (``http_costs``).
ENVIRONMENT_PROBES = ("dbruntime", "IPython")


def mark_absent_probes(names: tuple[str, ...] = ENVIRONMENT_PROBES) -> list[str]:
    """Make imports of the probed modules that are not installed fail at once.

    ``sys.modules[name] = None`` is Python's own marker for "not importable": the import
    raises ``ModuleNotFoundError`` (which MLflow's probes catch) without a path search. Only
    for modules absent now, and only in this process, which is ours alone; returns them.
    """
    absent = []
    for name in names:
        if name in sys.modules:
            continue
        try:
            missing = importlib.util.find_spec(name) is None
        except (ImportError, ValueError):
            missing = False  # cannot tell: leave the import to behave as it would
        if missing:
            sys.modules[name] = None  # type: ignore[assignment]
            absent.append(name)
    return absent


DELIVERY_HTTP_POOL = 20
"""Connections of MLflow's HTTP pool in the delivery process: 8 ``start_trace`` requests
and 8 uploads at once, and room for the rest (see ``mlflow_sink.parallel_requests``)."""


def size_http_pool(environ: MutableMapping[str, str] = os.environ) -> None:
    """Give MLflow's HTTP pool of this process room for the requests it makes at once.

    MLflow builds its pool on the first request, ``MLFLOW_HTTP_POOL_MAXSIZE`` (default
    10) connections per host; more concurrent requests made urllib3 print "Connection
    pool is full" warnings. This process is ours alone, so its pool is enlarged (a larger
    value of the user's is kept); the eval's own process is left as it is.
    """
    try:
        current = int(environ.get("MLFLOW_HTTP_POOL_MAXSIZE", "10"))
    except ValueError:
        current = 10
    environ["MLFLOW_HTTP_POOL_MAXSIZE"] = str(max(current, DELIVERY_HTTP_POOL))


def prepare_http() -> None:
    """Make this process's MLflow requests cheap: no path searches, no held replies."""
    mark_absent_probes()
    fail_absent_imports()
    cache_environ_proxies()
    enable_quick_acks()


def main() -> int:
    """Entry point: messages on stdin, replies on stdout, stray prints to stderr."""
    # Interrupts are the eval's to handle; this process ends when its stdin closes. Also
    # SIGTERM: job schedulers send it to every process of the job, and the eval's
    # process turns it into a cancellation whose run end this process must deliver.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    prepare_http()
    threading.Thread(target=_import_mlflow, name="inspect-mlflow-import", daemon=True).start()
    incoming = Channel(sys.stdin.buffer)
    outgoing = Channel(sys.stdout.buffer)
    sys.stdout = sys.stderr  # a print anywhere must not corrupt the message stream
    return DeliveryProcess(incoming, outgoing).run()


if __name__ == "__main__":
    sys.exit(main())
