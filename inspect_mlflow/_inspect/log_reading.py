"""Finding Inspect eval logs and reading them: headers, then samples one at a time.

Why apart from the payloads: import and the dry run read logs the same way (a header,
then the samples in the order they completed, one in memory at a time), and a file that
cannot be read becomes a :class:`LogReadError` naming it, never a traceback.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = [
    "LOG_SUFFIXES",
    "LogReadError",
    "epoch_seconds",
    "find_logs",
    "read_header",
    "reuse_cutoff",
    "samples_by_completion",
    "task_ended",
    "task_started",
]

LOG_SUFFIXES = (".eval", ".json")

_TIMESTAMPED = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}[:-]\d{2}[:-]\d{2}")
"""Inspect names its log files ``<ISO time>_<task>_<id>``; other ``.json`` files in a log
directory (listings, eval-set state) are not logs."""


class LogReadError(Exception):
    """A log (or one of its samples) could not be read; the message names the file."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


# -- reading -----------------------------------------------------------------------------


def find_logs(paths: Iterable[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """The log files named by ``paths`` (files, or directories searched recursively).

    A file given by name is tried whatever its name; in a directory, every ``.eval`` file
    and every ``.json`` file named like an Inspect log counts.

    Args:
        paths: Files and directories.

    Returns:
        The files found (sorted per directory, duplicates removed) and, for paths that
        do not exist, ``(path, reason)``.
    """
    found: dict[Path, None] = {}
    missing: list[tuple[str, str]] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    if name.endswith(".eval") or (
                        name.endswith(".json") and _TIMESTAMPED.match(name)
                    ):
                        found[(Path(root) / name).absolute()] = None
        elif path.is_file():
            found[path.absolute()] = None
        else:
            missing.append((str(raw), "no such file or directory"))
    return list(found), missing


def read_header(path: str | Path) -> Any:
    """An eval log without its samples (``EvalLog`` with ``location`` set).

    Raises:
        LogReadError: The file is not a readable Inspect log.
    """
    from inspect_ai.log import read_eval_log

    if not str(path).endswith(LOG_SUFFIXES):
        raise LogReadError(path, "not an Inspect log (expected a .eval or .json file)")
    try:
        header = read_eval_log(str(path), header_only=True)
    except Exception as err:
        raise LogReadError(path, f"cannot read the log: {_describe(err)}") from err
    if getattr(header, "eval", None) is None or not header.eval.eval_id:
        raise LogReadError(path, "not an Inspect log (no eval id)")
    return header


def _describe(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def epoch_seconds(value: Any) -> float | None:
    """An ISO time (text or datetime) or epoch seconds as epoch seconds; None if unknown."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    return None


def task_started(header: Any) -> float | None:
    stats = header.stats
    return epoch_seconds(getattr(stats, "started_at", None)) or epoch_seconds(header.eval.created)


def task_ended(header: Any) -> float | None:
    return epoch_seconds(getattr(header.stats, "completed_at", None))


def _read_sample(path: str, summary: Any) -> Any:
    from inspect_ai.log import read_eval_log_sample

    try:
        try:
            return read_eval_log_sample(
                path, id=summary.id, epoch=summary.epoch, resolve_attachments="core"
            )
        except TypeError:  # an Inspect without "core": resolve everything
            return read_eval_log_sample(
                path, id=summary.id, epoch=summary.epoch, resolve_attachments=True
            )
    except Exception as err:
        reason = f"cannot read sample {summary.id} (epoch {summary.epoch}): {_describe(err)}"
        raise LogReadError(path, reason) from err


def _completion_key(item: Any) -> tuple[float, float, int, str]:
    done = epoch_seconds(getattr(item, "completed_at", None))
    start = epoch_seconds(getattr(item, "started_at", None))
    return (
        done if done is not None else math.inf,
        start if start is not None else math.inf,
        item.epoch,
        str(item.id),
    )


def reuse_cutoff(header: Any) -> float | None:
    """When this attempt of the task started, to the second (samples before it were reused).

    The log's own times have second precision, cut down: a sample that started before
    the cut-off surely came from an earlier attempt, while one reused in the very second
    the attempt started is counted as new (replayed again) rather than lost.
    """
    times = [t for t in (task_started(header), epoch_seconds(header.eval.created)) if t is not None]
    return math.floor(max(times)) if times else None


def samples_by_completion(
    path: str | Path, header: Any, reused_before: float | None = None
) -> Iterator[Any]:
    """The samples of a log in the order they completed, one in memory at a time.

    ``.eval`` files are zip archives read sample by sample (the summaries give the
    order); a ``.json`` log is one document, read whole. Samples that started before
    ``reused_before`` are left out.
    """

    def keep(item: Any) -> bool:
        started = epoch_seconds(getattr(item, "started_at", None))
        return reused_before is None or started is None or started >= reused_before

    from inspect_ai.log import read_eval_log, read_eval_log_sample_summaries

    location = str(path)
    if location.endswith(".eval"):
        try:
            summaries = read_eval_log_sample_summaries(location)
        except Exception as err:
            raise LogReadError(location, f"cannot read the samples: {_describe(err)}") from err
        for summary in sorted(filter(keep, summaries), key=_completion_key):
            yield _read_sample(location, summary)
        return
    try:
        try:
            log = read_eval_log(location, resolve_attachments="core")
        except TypeError:
            log = read_eval_log(location, resolve_attachments=True)
    except Exception as err:
        raise LogReadError(location, f"cannot read the samples: {_describe(err)}") from err
    samples = sorted(filter(keep, log.samples or []), key=_completion_key, reverse=True)
    del log
    while samples:
        yield samples.pop()
