"""Messages the user must see whatever Inspect's display mode (``display="none"`` too).

Why: the hook reports through :mod:`logging`, which Inspect shows on the terminal in
every display mode but ``none``, where warnings go nowhere. A message that says where
undelivered writes were saved, or that writes were lost, must not go nowhere: it is
logged under :data:`NOTICE_LOGGER`, whose handler also writes it to stderr when
Inspect's display in this process is ``none`` (and only then, so no other mode shows it
twice). The delivery process forwards its records under the same logger name, so they
reach this handler in the eval's process; in the delivery process itself Inspect's
display is never set up and the handler stays quiet.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

NOTICE_LOGGER = "inspect_mlflow.notice"


def notice(message: str, *args: Any) -> None:
    """Log a warning the user must see (see the module docstring)."""
    logging.getLogger(NOTICE_LOGGER).warning(message, *args)


def display_is_silent() -> bool:
    """True when Inspect runs in this process with ``display="none"``.

    Reads the display type Inspect set, without setting one up where none was.
    """
    module = sys.modules.get("inspect_ai.util._display")
    return getattr(module, "_display_type", None) == "none"


class StderrLines(logging.Handler):
    """Writes each record's message, and nothing else, as one line on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        if not self.shows(record):
            return
        try:
            sys.stderr.write(f"{record.getMessage()}\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)

    def shows(self, record: logging.LogRecord) -> bool:
        """Whether this record is written (every one, here)."""
        return True


class _EchoWhenSilent(StderrLines):
    """Writes notices to stderr when Inspect's display would show nothing."""

    def shows(self, record: logging.LogRecord) -> bool:
        """Only while Inspect's display is ``none``."""
        return display_is_silent()


def _install() -> None:
    target = logging.getLogger(NOTICE_LOGGER)
    if not any(isinstance(h, _EchoWhenSilent) for h in target.handlers):
        target.addHandler(_EchoWhenSilent(logging.WARNING))


_install()
