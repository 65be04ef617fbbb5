"""Messages between the eval's process and the delivery process: pickled tuples on pipes.

Both ends are this package, started together (see :mod:`inspect_mlflow._remote`), so
pickle is safe here and costs less than any text format. Each message is a tuple whose
first item names it:

eval -> delivery: ``("open", seq, sid, settings, environ, cwd, log_level)``,
``("point", sid, point, document)``, ``("prepare", sid, point, document)``,
``("finish", seq, sid, timeout)``, ``("close", seq, sid, timeout)``;
delivery -> eval: ``("log", level, logger_name, text)``, ``("reply", seq, value)``.
"""

from __future__ import annotations

import pickle
import threading
from typing import IO, Any

PROTOCOL = pickle.HIGHEST_PROTOCOL


class Channel:
    """One direction of a pipe: whole messages in, whole messages out, thread-safe writes."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message: tuple[Any, ...]) -> None:
        """Write one message and flush it (raises OSError when the other end is gone)."""
        data = pickle.dumps(message, protocol=PROTOCOL)
        with self._lock:
            self._stream.write(data)
            self._stream.flush()

    def receive(self) -> tuple[Any, ...]:
        """Read one message; raises EOFError when the other end closed the pipe."""
        message: tuple[Any, ...] = pickle.load(self._stream)
        return message
