"""The eval's side of out-of-process delivery: a session whose work runs in another process.

Why: whatever the hook does in the eval's process competes for Python's GIL with
Inspect's event loop, so seconds of mapping evaluation, MLflow's import and its HTTP
client slow a CPU-bound eval down even from a background thread. :class:`RemoteSession`
keeps only what must stay here (provider autolog, which patches SDKs in this process)
and sends each lifecycle point's context document to one delivery process per eval
process (:mod:`inspect_mlflow._delivery.process`), which evaluates the mapping and writes.

In this process a point costs a queue append on the event loop and, on the feeder
thread, the payload's JSON form (pydantic's serializer) and a pickle write to a pipe.
Sample events the mapping cannot use are dropped in the callback, before the queue (see
:mod:`inspect_mlflow._engine.relevance`).

The delivery process is started on first use and kept for the next runs; it finishes
its sessions (delivers or spools) when this process ends. When it cannot be started,
the session falls back to working in this process (``INSPECT_MLFLOW_DELIVERY=thread``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

from inspect_mlflow._config import Settings
from inspect_mlflow._delivery.session import AutologOwner
from inspect_mlflow._delivery.wire import Channel, dumps, loads
from inspect_mlflow._delivery.worker import SerialWorker
from inspect_mlflow._engine.contexts import context
from inspect_mlflow._engine.relevance import PointFilter
from inspect_mlflow._engine.views import to_json
from inspect_mlflow._mapping.model import CompiledMapping
from inspect_mlflow._notice import notice
from inspect_mlflow._operations import AppendRows, CloseRun, LogArtifact, OpenRun
from inspect_mlflow._writer.forking import reinit_after_fork

logger = logging.getLogger(__name__)

START_TIMEOUT = 60.0
"""Seconds the delivery process may take to start and open a session."""

REPLY_GRACE = 10.0
"""Seconds to wait for a reply beyond the timeout the delivery process was given."""

JOURNAL_MAX_BYTES = 512 * 1024 * 1024
"""Points of one session kept for a takeover at most (pickled bytes); beyond, none is."""

_REBUILD = (OpenRun, AppendRows, CloseRun, LogArtifact)
"""What a takeover emits again for points the delivery process confirmed: the runs (found
by key), the rows and documents it held for their ends, and the ends themselves."""


class DeliveryUnavailable(RuntimeError):
    """The delivery process is not running (it could not start, or it exited)."""


COMMAND = [sys.executable, "-m", "inspect_mlflow._delivery.process"]
"""How the delivery process is started (the interpreter running the eval)."""


class _Process:
    """The delivery process of this eval process, its pipes and pending replies."""

    def __init__(self) -> None:
        self._popen = subprocess.Popen(
            COMMAND,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # its tracebacks, if any, show where ours would
            cwd=os.getcwd(),
            env=os.environ.copy(),
            # Its own session: a Ctrl-C at the terminal interrupts the eval, whose hook
            # then closes the runs as KILLED; the delivery process must live to send that.
            start_new_session=True,
        )
        assert self._popen.stdin is not None and self._popen.stdout is not None
        self._out = Channel(self._popen.stdin)
        self._in = Channel(self._popen.stdout)
        self._seq = itertools.count(1)
        self._replies: dict[int, Any] = {}
        self._cond = threading.Condition()
        self.gone = False
        self.acked: dict[int, int] = {}
        """Session id -> how many of its points the process confirmed as delivered."""
        self.run_ids: dict[int, dict[str, tuple[str, str]]] = {}
        """Session id -> run key -> (experiment id, run id), once the run exists."""
        threading.Thread(
            target=self._read, name="inspect-mlflow-delivery-reader", daemon=True
        ).start()

    def send(self, message: tuple[Any, ...]) -> None:
        if self.gone:
            raise DeliveryUnavailable(self._why())
        try:
            self._out.send(message)
        except (OSError, ValueError) as err:
            self.gone = True
            raise DeliveryUnavailable(self._why()) from err

    def send_bytes(self, data: bytes) -> None:
        """:meth:`send` for a message already pickled (:func:`_wire.dumps`)."""
        if self.gone:
            raise DeliveryUnavailable(self._why())
        try:
            self._out.send_bytes(data)
        except (OSError, ValueError) as err:
            self.gone = True
            raise DeliveryUnavailable(self._why()) from err

    def request(self, kind: str, *args: Any, timeout: float) -> Any:
        """Send a message that is answered; wait for the answer at most ``timeout`` s."""
        seq = next(self._seq)
        self.send((kind, seq, *args))
        deadline = time.monotonic() + timeout
        with self._cond:
            while seq not in self._replies:
                remaining = deadline - time.monotonic()
                if self.gone or remaining <= 0:
                    raise DeliveryUnavailable(
                        self._why() if self.gone else f"no answer to {kind} in {timeout:g}s"
                    )
                self._cond.wait(remaining)
            return self._replies.pop(seq)

    @property
    def pid(self) -> int:
        return self._popen.pid

    def _why(self) -> str:
        code = self._popen.poll()
        if code is None and self.gone:  # its pipe closed first; the exit follows at once
            try:
                code = self._popen.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                code = None
        return "the delivery process " + (
            f"exited with code {code}" if code is not None else "stopped answering"
        )

    def _read(self) -> None:
        while True:
            try:
                message = self._in.receive()
            except Exception:  # EOF or a torn message: the process is gone
                with self._cond:
                    self.gone = True
                    self._cond.notify_all()
                return
            if message[0] == "log":
                _, level, name, text = message
                logging.getLogger(name).log(level, "%s", text)
            elif message[0] == "acked":
                self.acked[message[1]] = message[2]
            elif message[0] == "run":
                self.run_ids.setdefault(message[1], {})[message[2]] = message[3:5]
            elif message[0] == "reply":
                with self._cond:
                    self._replies[message[1]] = message[2]
                    self._cond.notify_all()


_lock = threading.Lock()
_process: _Process | None = None


def _shared_process() -> _Process:
    """The running delivery process, started on first use (again after it exited)."""
    global _process
    with _lock:
        if _process is None or _process.gone:
            _process = _Process()
        return _process


def prestart() -> None:
    """Start the delivery process now, if it is not running (blocks for the spawn only).

    Called when the hook learns it will log (``enabled()``, before Inspect sets up the
    tasks): the process imports MLflow while the eval is still starting, on another core.
    """
    try:
        _shared_process()
    except Exception as err:  # the first session will try again, and say why
        logger.debug("inspect-mlflow: delivery process not started early: %r", err)


def _forget_after_fork() -> None:
    """A forked child must not write into its parent's pipe: it starts its own."""
    global _process, _lock
    _lock = threading.Lock()
    _process = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)

_session_ids = itertools.count(1)


class RemoteSession(AutologOwner):
    """The :class:`~inspect_mlflow._delivery.session.Session` interface, served elsewhere.

    The delivery process serves it; this side only sends and waits.
    """

    def __init__(self, settings: Settings, mapping: CompiledMapping) -> None:
        super().__init__(settings)
        self.mapping = mapping
        self.points = mapping.points()
        self.resume_points = mapping.resume_points()
        self.errors = 0
        self._sid = next(_session_ids)
        self._filter = PointFilter(mapping)
        self._open_runs = True
        self._process: _Process | None = None
        self._local: Any = None
        """An in-process :class:`Session`, when the delivery process could not start."""
        self._said_gone = False
        # Now, on the hook's call: Inspect may change directory while it loads tasks, and
        # a local store's relative paths resolve against the user's directory.
        self._cwd = os.getcwd()
        self._environ = dict(os.environ)
        self._init_state()
        reinit_after_fork(self._after_fork)
        # Starting the process takes a moment: not on the event loop (first hook call).
        self._feeder.call(self._open)

    def _init_state(self) -> None:
        self._feeder = SerialWorker(self._send, name="inspect-mlflow-feeder")
        self._journal: IO[bytes] | None = None
        """Every message of this session's points, as sent, for a takeover (see there):
        length-prefixed in an unlinked temporary file, so the eval's memory stays flat
        (about 14 KB per sample of the demo eval)."""
        self._journal_bytes = 0
        self._journal_full = False

    def _after_fork(self) -> None:
        """In a forked child: a feeder of its own, and no pipe (it is the parent's)."""
        self._init_state()
        self._process = None
        self._local = None

    def _open(self) -> None:
        """Start (or reuse) the delivery process and open this session there.

        When that fails, nothing was sent yet: the session works in this process
        instead, so no point is lost.
        """
        level = logging.getLogger("inspect_mlflow").getEffectiveLevel()
        try:
            process = _shared_process()
            opened = process.request(
                "open",
                self._sid,
                self.settings,
                self._environ,
                self._cwd,
                level,
                timeout=START_TIMEOUT,
            )
            if not opened:
                raise DeliveryUnavailable("it could not open the session")
            self._process = process
        except Exception as err:
            from inspect_mlflow._delivery.session import Session

            logger.warning(
                "inspect-mlflow: the delivery process did not start (%s); delivering from "
                "the eval's process instead (INSPECT_MLFLOW_DELIVERY=thread)",
                err,
            )
            self._local = Session(self.settings, self.mapping)

    def _journal_send(self, message: tuple[Any, ...]) -> None:
        """Send a point's message and keep it: the delivery process may die with it unsent.

        Kept as the pickled bytes that go down the pipe (no second serialisation), up to
        :data:`JOURNAL_MAX_BYTES`; past that (or when the file cannot be written) a
        takeover is no longer possible.
        """
        assert self._process is not None
        data = dumps(message)
        if not self._journal_full:
            try:
                if self._journal_bytes + len(data) > JOURNAL_MAX_BYTES:
                    raise OSError("journal full")
                if self._journal is None:
                    self._journal = tempfile.TemporaryFile(prefix="inspect-mlflow-journal-")
                self._journal.write(len(data).to_bytes(8, "little"))
                self._journal.write(data)
                self._journal_bytes += len(data)
            except OSError:
                self._journal_full = True
                self._forget_journal()
        self._process.send_bytes(data)

    def _journaled(self) -> Iterator[tuple[Any, ...]]:
        """The journal's messages, oldest first."""
        journal = self._journal
        if journal is None:
            return
        journal.flush()
        journal.seek(0)
        while header := journal.read(8):
            yield loads(journal.read(int.from_bytes(header, "little")))

    def _forget_journal(self) -> None:
        journal, self._journal = self._journal, None
        self._journal_bytes = 0
        if journal is not None:
            journal.close()

    def _take_over(self, err: BaseException) -> bool:
        """The delivery process died mid-run: deliver the rest of this run from here.

        Why: otherwise everything the run logs after the death is lost. The delivery
        process confirms twice a second how many points it has delivered (or spooled).
        A session in this process (as with ``INSPECT_MLFLOW_DELIVERY=thread``) evaluates
        every point of the journal again, in order, to rebuild what the dead process held
        (open runs, counters, the table rows it kept for the runs' ends): for confirmed
        points it emits only the runs' opening and closing, rows and documents (the runs
        are found by their key, not created again); for the others, every write, with the
        points' own timestamps, so what had landed before the death lands again as the
        same values (idempotent) and nothing is lost. Says how many writes were in flight.
        Returns False when it cannot (the journal overflowed): then they are lost.
        """
        process, self._process = self._process, None
        if self._journal_full or self._local is not None:
            return False
        from inspect_mlflow._delivery.session import Session

        acked = process.acked.get(self._sid, 0) if process is not None else 0
        local = Session(self.settings, self.mapping, resume_runs=True)
        index = 0
        for message in self._journaled():
            if message[0] == "prepare":
                local.prepare_document(message[2], message[3])
                continue
            _, _, point, document, stamp = message
            local.handle_document(point, document, stamp, None if index >= acked else _REBUILD)
            index += 1
        self._forget_journal()
        self._local = local
        local._worker.drain(self.settings.flush_timeout)
        why = err if isinstance(err, DeliveryUnavailable) else f"sending failed: {err!r}"
        notice(
            "inspect-mlflow: %s mid-run; the eval's process delivers the rest of this run "
            "(as with INSPECT_MLFLOW_DELIVERY=thread). %d write(s) of %d point(s) it had "
            "not confirmed (of %d sent) were in flight: they are sent again from here, "
            "none lost.",
            why,
            local.document_ops,
            index - min(acked, index),
            index,
        )
        return True

    def _lost(self, err: BaseException) -> None:
        self._process = None
        if not self._said_gone:
            self._said_gone = True
            why = err if isinstance(err, DeliveryUnavailable) else f"sending failed: {err!r}"
            notice(
                "inspect-mlflow: %s; what this run logs from now on is lost. Set "
                "INSPECT_MLFLOW_DELIVERY=thread to deliver from the eval's process.",
                why,
            )

    def handle(self, point: str, data: Any, *, stamp: float | None = None, **ids: Any) -> None:
        """Queue one lifecycle point; returns at once (the feeder serialises it).

        ``stamp``: when the point happened, if the hook hands it over later; None: now.

        A point the mapping cannot use is dropped here, on the event loop: deciding
        takes microseconds (a few conditions on lazy views), less than waking the feeder
        thread, which would take the GIL from the eval for each of a sample's dozens of
        events.
        """
        if point not in self.points:
            return
        ctx = None
        if self._filter.decides(point):
            ctx = context(point, data, **ids)
            if not self._filter.matters(point, ctx):
                return
        # The decision's context goes along (its views keep what they read), never used here.
        self._feeder.submit(point, data, ids, ctx, stamp)

    def _send(
        self,
        point: str,
        data: Any,
        ids: dict[str, Any],
        ctx: dict[str, Any] | None,
        stamp: float | None = None,
    ) -> None:
        if self._local is not None:
            self._local.handle(point, data, stamp=stamp, **ids)
            return
        if self._process is None:
            self.errors += 1
            return
        if ctx is None:
            ctx = context(point, data, **ids)
        try:
            when = time.time() if stamp is None else stamp
            self._journal_send(("point", self._sid, point, to_json(ctx), when))
        except Exception as err:
            if not self._take_over(err):  # the point is in the journal: replayed there
                self.errors += 1
                self._lost(err)

    def _request(self, kind: str, *args: Any, timeout: float) -> Any:
        """Queue a request behind the points sent so far; wait for its answer."""
        answer: dict[str, Any] = {}

        def ask() -> None:
            if self._process is None:
                answer["error"] = DeliveryUnavailable("the delivery process is not running")
                return
            try:
                # The delivery process spends up to ``timeout`` itself (a run end waiting
                # for a server coming back): its answer comes after that, not before.
                answer["value"] = self._process.request(kind, *args, timeout=timeout + REPLY_GRACE)
            except Exception as err:
                answer["error"] = err

        self._feeder.call(ask)
        if not self._feeder.drain(START_TIMEOUT + timeout + REPLY_GRACE):
            raise DeliveryUnavailable(f"no answer to {kind} in {timeout:g}s")
        if "error" in answer:
            raise answer["error"]
        return answer.get("value")

    def run_ids(self, keys: Any = None) -> dict[str, tuple[str, str]]:
        """:meth:`Session.run_ids`, as the delivery process reported them (any run)."""
        if self._local is not None:
            return self._local.run_ids(keys)  # type: ignore[no-any-return]
        process = self._process
        return dict(process.run_ids.get(self._sid, {})) if process is not None else {}

    def hurry(self) -> None:
        """:meth:`Session.hurry`, after the points queued so far (a hint: not journaled)."""
        self._feeder.call(self._send_hurry)

    def _send_hurry(self) -> None:
        if self._local is not None:
            self._local.hurry()
        elif self._process is not None:
            with contextlib.suppress(Exception):  # a broken pipe: the next point takes over
                self._process.send(("hurry", self._sid))

    def prepare(self, point: str, data: Any, **ids: Any) -> None:
        """Have the delivery process read the saved state of runs this point continues.

        Returns at once: the delivery process reads it (within the flush timeout) before
        it evaluates the point, which follows the request down the pipe.
        """
        if point in self.resume_points:
            self._feeder.call(self._send_prepare, point, data, ids)

    def _send_prepare(self, point: str, data: Any, ids: dict[str, Any]) -> None:
        if self._local is not None:
            self._local.prepare(point, data, **ids)
        elif self._process is not None:
            try:
                self._journal_send(
                    ("prepare", self._sid, point, to_json(context(point, data, **ids)))
                )
            except Exception as err:
                if not self._take_over(err):
                    self._lost(err)

    def finish(self, timeout: float) -> bool:
        """Deliver everything within ``timeout`` seconds (spool the rest); True if delivered."""
        self._feeder.drain(START_TIMEOUT)
        if self._local is not None:
            return bool(self._local.finish(timeout))
        try:
            delivered, self._open_runs = self._request(
                "finish", self._sid, timeout, timeout=timeout
            )
        except Exception as err:
            process = self._process
            if process is not None and process.gone:  # died: not merely slow to answer
                taken: list[bool] = []
                self._feeder.call(lambda e=err: taken.append(self._take_over(e)))
                self._feeder.drain(None)
                if taken and taken[0] and self._local is not None:
                    return bool(self._local.finish(timeout))
            self._lost(err)
            self._open_runs = False
            return False
        return bool(delivered)

    def has_open_runs(self) -> bool:
        """True while any run of this session is still open (as of the last finish)."""
        return self._open_runs if self._local is None else bool(self._local.has_open_runs())

    def close(self, timeout: float) -> None:
        """End the session in the delivery process (its writer stops after a last flush)."""
        self._feeder.call(self._forget_journal)  # after the points still being sent
        if self._local is not None:
            self._feeder.stop(timeout)
            self._local.close(timeout)
            return
        try:
            self._request("close", self._sid, timeout, timeout=timeout)
        except Exception as err:
            self._lost(err)
        self._feeder.stop(timeout)
