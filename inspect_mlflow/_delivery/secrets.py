"""Keep MLflow's own credentials out of everything the package writes or prints.

Credentials passed as task or model arguments are redacted by *key* where values are
built (``_engine/values.py``). The values of MLflow's credential variables
(``MLFLOW_TRACKING_TOKEN``, ``MLFLOW_TRACKING_PASSWORD``, ...; see ``_config.py``) can
turn up anywhere, under any key or inside any text: a sample that echoes the environment,
an error message that quotes a URL. So they are scrubbed by *value*: from every write
operation before it is queued (and so from MLflow and from spool files), and from every
log record of this package's loggers.

Scrubbing costs nothing when no such variable is set: :class:`Scrubber` is then falsy and
the session skips it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from inspect_mlflow._operations import Operation

__all__ = ["MASK", "ScrubFilter", "Scrubber"]

MASK = "***"
"""What a credential's value is replaced by (the same mark as key-based redaction)."""


class Scrubber:
    """Replaces known secret values inside strings, JSON-like values and operations."""

    def __init__(self, secrets: Sequence[str]) -> None:
        """Remember the values to hide (longest first, so none is left half-replaced)."""
        self.secrets: tuple[str, ...] = tuple(sorted(set(secrets), key=len, reverse=True))

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def text(self, text: str) -> str:
        """``text`` with every secret value masked."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def value(self, value: Any) -> Any:
        """A JSON-like value (or dataclass) with secrets masked; unchanged parts are reused."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            out = {self.value(k): self.value(v) for k, v in value.items()}
            same = len(out) == len(value) and all(
                k in value and value[k] is v for k, v in out.items()
            )
            return value if same else out
        if isinstance(value, (list, tuple)):
            items = [self.value(v) for v in value]
            if all(a is b for a, b in zip(items, value, strict=True)):
                return value
            return type(value)(items)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes = {}
            for field in dataclasses.fields(value):
                old = getattr(value, field.name)
                new = self.value(old)
                if new is not old:
                    changes[field.name] = new
            return dataclasses.replace(value, **changes) if changes else value
        return value

    def ops(self, ops: list[Operation]) -> list[Operation]:
        """Operations with secrets masked in every key, value and text they carry."""
        if not self.secrets:
            return ops
        return [self.value(op) for op in ops]


class ScrubFilter(logging.Filter):
    """Masks secret values in the records of the loggers it is attached to."""

    def __init__(self, scrubber: Scrubber) -> None:
        super().__init__()
        self.scrubber = scrubber

    def filter(self, record: logging.LogRecord) -> bool:
        """Render the message, mask it, and keep the record (never drops one)."""
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the handler to report
            return True
        clean = self.scrubber.text(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, None
            record.msg = f"{record.msg}\n{self.scrubber.text(text)}"
            record.args = None
        return True

    def attach(self, prefix: str = "inspect_mlflow") -> list[logging.Logger]:
        """Add this filter to ``prefix`` and every logger under it; returns them."""
        names = [prefix] + [
            name
            for name in list(logging.Logger.manager.loggerDict)
            if name.startswith(prefix + ".")
        ]
        loggers = [logging.getLogger(name) for name in names]
        for logger in loggers:
            logger.addFilter(self)
        return loggers

    def detach(self, loggers: Sequence[logging.Logger]) -> None:
        """Remove this filter from the loggers :meth:`attach` returned."""
        for logger in loggers:
            logger.removeFilter(self)
