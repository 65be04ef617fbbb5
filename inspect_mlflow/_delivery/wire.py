"""Messages between the eval's process and the delivery process: pickled tuples on pipes.

Both ends are this package, started together (see :mod:`inspect_mlflow._delivery.remote`), so
pickle is safe here and costs less than any text format. Each message is a tuple whose
first item names it:

eval -> delivery: ``("open", seq, sid, settings, environ, cwd, log_level)``,
``("point", sid, point, document, stamp)`` (``stamp``: the point's time, seconds since
the epoch, so its metric timestamps are the same wherever it is evaluated),
``("prepare", sid, point, document)``,
``("finish", seq, sid, timeout)``, ``("close", seq, sid, timeout)``;
delivery -> eval: ``("log", level, logger_name, text)``, ``("reply", seq, value)``,
``("acked", sid, n)`` (the first ``n`` points of session ``sid`` are delivered or spooled),
``("run", sid, key, experiment_id, run_id)`` (run ``key`` of session ``sid`` now exists in
MLflow: the eval's log links to its page).
"""

from __future__ import annotations

import pickle
import threading
from typing import IO, Any

PROTOCOL = pickle.HIGHEST_PROTOCOL


def dumps(message: tuple[Any, ...]) -> bytes:
    """One message as the bytes :meth:`Channel.send_bytes` writes."""
    return pickle.dumps(message, protocol=PROTOCOL)


def loads(data: bytes) -> tuple[Any, ...]:
    """A message from :func:`dumps`."""
    message: tuple[Any, ...] = pickle.loads(data)
    return message


class Channel:
    """One direction of a pipe: whole messages in, whole messages out, thread-safe writes."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message: tuple[Any, ...]) -> None:
        """Write one message and flush it (raises OSError when the other end is gone)."""
        self.send_bytes(dumps(message))

    def send_bytes(self, data: bytes) -> None:
        """Write one message already pickled by :func:`dumps` (kept by the sender too)."""
        with self._lock:
            self._stream.write(data)
            self._stream.flush()

    def receive(self) -> tuple[Any, ...]:
        """Read one message; raises EOFError when the other end closed the pipe."""
        message: tuple[Any, ...] = pickle.load(self._stream)
        return message
