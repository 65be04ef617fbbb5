"""SIGTERM ends an eval the way Ctrl-C does, so its runs close KILLED with a summary.

Why: Inspect handles SIGINT only (asyncio's or trio's Ctrl-C handler cancels the run, its
tasks write their logs with status ``cancelled`` and the run end fires). SIGTERM, what
``timeout``, ``kill`` and job schedulers send, keeps Python's default action: the process
dies at once, Inspect's log stays ``started``, no run end fires and the delivery process
can only close the runs FAILED. While a run is going, :class:`TerminationGuard` turns
SIGTERM into the Ctrl-C path; once the hook has delivered the run end, the process ends
by SIGTERM as it would have (exit status 143), so a script that called ``eval()`` does not
carry on as though nothing happened.

Only when nobody else handles SIGTERM (its handler is the default) and only in the main
thread (the only one that may set handlers); a second SIGTERM is a second Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType
from typing import Any


class TerminationGuard:
    """Installs the SIGTERM handler for the length of a run, remembers whether it fired."""

    def __init__(self) -> None:
        self.received = False
        self._installed = False

    def install(self) -> None:
        """At run start, on the event loop's thread: route SIGTERM to the Ctrl-C path."""
        if self._installed or threading.current_thread() is not threading.main_thread():
            return
        if not hasattr(signal, "SIGTERM") or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return  # the user's own handler (or an ignored SIGTERM) stays as it is
        try:
            signal.signal(signal.SIGTERM, self._on_sigterm)
        except (ValueError, OSError):
            return
        self._installed = True

    def uninstall(self) -> None:
        """Give SIGTERM its default action back (if this guard still holds it)."""
        if not self._installed:
            return
        self._installed = False
        if threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def release(self) -> None:
        """At run end, once the hook delivered: give SIGTERM back; end by it if one came.

        Ending the process is what SIGTERM would have done at once without this guard.
        """
        self.uninstall()
        if not self.received:
            return
        self.received = False
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.received = True
        handler: Any = signal.getsignal(signal.SIGINT)
        if callable(handler):
            # asyncio's or trio's Ctrl-C handler (or Python's, raising KeyboardInterrupt).
            handler(signal.SIGINT, frame)
        else:
            # SIGINT ignored (a background job): no Ctrl-C path was set up; interrupt as
            # Python's own handler would.
            signal.default_int_handler(signal.SIGINT, frame)
