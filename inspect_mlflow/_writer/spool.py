"""The spool: write operations that could not be delivered, kept on disk for a replay.

A spool file is JSON lines. The first line is a header naming the format, its version and
where the operations were meant to go; every other line is one operation
(``{"op": "LogMetrics", ...fields}``). Operations are plain data keyed by logical run keys
(see ``operations.py``), so a file can be replayed by any process later, even when the
runs it writes to were never created.

Durability and privacy:

- a file is created with mode 0600 (in a directory created with mode 0700), and each
  :meth:`SpoolWriter.append` ends with ``fsync``, so what was reported as spooled survives
  a crash or a power cut;
- the process writing a file holds an exclusive ``flock`` on it until its writer thread
  is done, so a replay never delivers a file that is still growing (where ``fcntl`` does
  not exist the lock is skipped);
- the header's tracking URI has any ``user:password@`` part removed: credentials come from
  the environment at replay time, never from the file.

Replay progress lives beside the file (``<file>.progress``, rewritten by temp file +
``os.replace``), so a replay that crashes resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from inspect_mlflow._operations import (
    ALL_OPERATIONS,
    AppendRows,
    DatasetData,
    ExpectationData,
    FeedbackData,
    LogInputs,
    LogMetrics,
    LogTrace,
    Metric,
    ModelData,
    Operation,
    SpanData,
)
from inspect_mlflow._paths import default_spool_dir

try:  # POSIX only; elsewhere files are not locked.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "SPOOL_FORMAT",
    "SPOOL_SUFFIX",
    "SPOOL_VERSION",
    "SpoolError",
    "SpoolFile",
    "SpoolWriter",
    "decode_op",
    "default_spool_dir",
    "encode_op",
    "list_spool_files",
    "lock_file",
    "locked",
    "public_uri",
    "read_progress",
    "read_spool",
    "remove_spool",
    "replay_lock",
    "rewrite_spool",
    "write_progress",
]

SPOOL_FORMAT = "inspect-mlflow-spool"
SPOOL_VERSION = 1
SPOOL_SUFFIX = ".jsonl"
PROGRESS_SUFFIX = ".progress"

_BY_NAME: dict[str, type] = {cls.__name__: cls for cls in ALL_OPERATIONS}


class SpoolError(Exception):
    """A spool file cannot be read or written; the message names the file (and line)."""


# -- where ----------------------------------------------------------------------------


def public_uri(uri: str) -> str:
    """The tracking URI without a ``user:password@`` part (what may be written or shown)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if not parts.netloc or "@" not in parts.netloc:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


# -- codec ----------------------------------------------------------------------------


def encode_op(op: Operation) -> dict[str, Any]:
    """One operation as a JSON-ready dict: its class name under ``op`` and its fields."""
    return {"op": type(op).__name__, **asdict(op)}


def _build(cls: type, data: Mapping[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    return cls(**data)


def decode_op(record: Mapping[str, Any]) -> Operation:
    """Rebuild an operation from :func:`encode_op`'s dict (nested dataclasses included).

    Raises:
        ValueError: The record names no known operation or has fields it does not know.
    """
    if not isinstance(record, Mapping):
        raise ValueError(f"an operation must be a JSON object, got {type(record).__name__}")
    data = dict(record)
    name = data.pop("op", None)
    cls = _BY_NAME.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown operation {name!r}")
    if cls is LogMetrics:
        data["metrics"] = tuple(_build(Metric, m) for m in data.get("metrics", ()))
    elif cls is AppendRows:
        data["rows"] = tuple(data.get("rows", ()))
    elif cls is LogInputs:
        data["models"] = tuple(_build(ModelData, m) for m in data.get("models", ()))
        data["datasets"] = tuple(_build(DatasetData, d) for d in data.get("datasets", ()))
    elif cls is LogTrace:
        data["spans"] = tuple(_build(SpanData, s) for s in data.get("spans", ()))
        data["feedback"] = tuple(_build(FeedbackData, f) for f in data.get("feedback", ()))
        data["expectations"] = tuple(
            _build(ExpectationData, e) for e in data.get("expectations", ())
        )
    return _build(cls, data)  # type: ignore[no-any-return]


def _line(record: Mapping[str, Any]) -> bytes:
    # NaN and infinities are kept (Python's json reads them back); anything that is not
    # JSON (it should not happen: operations are plain data) becomes its text.
    return (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")


# -- locking --------------------------------------------------------------------------


def lock_file(fd: int) -> bool:
    """Take an exclusive, non-blocking lock on an open file; False if another holds it."""
    if fcntl is None:  # pragma: no cover - Windows
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- writing --------------------------------------------------------------------------


class SpoolWriter:
    """Appends undelivered operations to one spool file of this process.

    The file is created on the first :meth:`append` (no file when nothing is spooled) and
    stays locked until :meth:`close`. ``append`` may be called from any thread.
    """

    def __init__(
        self,
        directory: Path,
        *,
        tracking_uri: str,
        experiment_name: str,
        trace_options: Mapping[str, Any] | None = None,
    ) -> None:
        """Remember where to write; nothing touches the disk yet.

        Args:
            directory: The spool directory (created with mode 0700 when missing).
            tracking_uri: Where the operations were meant to go (credentials are dropped).
            experiment_name: The experiment they were meant for.
            trace_options: The trace sender's options, so a replay shapes traces the same.
        """
        self.directory = Path(directory).expanduser()
        self.tracking_uri = public_uri(tracking_uri)
        self.experiment_name = experiment_name
        self.trace_options = dict(trace_options or {})
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._count = 0
        self._closed = False

    @property
    def path(self) -> Path | None:
        """The file, once something was spooled."""
        return self._path

    @property
    def count(self) -> int:
        """Operations written so far."""
        with self._lock:
            return self._count

    def append(self, ops: Sequence[Operation]) -> int:
        """Write operations (one line each), then fsync; returns how many were written.

        Raises:
            SpoolError: The file cannot be created or written (disk full, permissions).
        """
        if not ops:
            return 0
        data = b"".join(_line(encode_op(op)) for op in ops)
        with self._lock:
            if self._closed:
                raise SpoolError("the spool was closed")
            fd = self._fd if self._fd is not None else self._create()
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            except OSError as error:
                raise SpoolError(f"cannot write spool file {self._path}: {error}") from error
            self._count += len(ops)
            return len(ops)

    def _create(self) -> int:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            name = f"{stamp}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SPOOL_SUFFIX}"
            path = self.directory / name
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
            fd = os.open(path, flags, 0o600)
        except OSError as error:
            raise SpoolError(f"cannot create a spool file in {self.directory}: {error}") from error
        with contextlib.suppress(OSError, AttributeError):
            os.fchmod(fd, 0o600)  # whatever the umask said
        lock_file(fd)
        header = {
            "format": SPOOL_FORMAT,
            "version": SPOOL_VERSION,
            "tracking_uri": self.tracking_uri,
            "experiment_name": self.experiment_name,
            "trace_options": self.trace_options,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }
        try:
            os.write(fd, _line(header))
        except OSError as error:
            os.close(fd)
            raise SpoolError(f"cannot write spool file {path}: {error}") from error
        _fsync_dir(self.directory)
        self._fd, self._path = fd, path
        return fd

    def close(self) -> None:
        """Release the lock and the file; later appends raise :class:`SpoolError`."""
        with self._lock:
            self._closed = True
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)  # closing the descriptor drops the flock
                self._fd = None


# -- reading --------------------------------------------------------------------------


@dataclass
class SpoolFile:
    """A spool file as read back: its header and its operations in file order."""

    path: Path
    header: dict[str, Any]
    ops: list[Operation]
    truncated: bool = False
    """The last line was cut short (a crash while writing it); it was left out."""

    @property
    def tracking_uri(self) -> str:
        """Where the operations were meant to go."""
        return str(self.header.get("tracking_uri") or "")

    @property
    def experiment_name(self) -> str:
        """The experiment they were meant for."""
        return str(self.header.get("experiment_name") or "")


def list_spool_files(directory: Path) -> list[Path]:
    """Spool files in ``directory``, oldest first (names start with a UTC time stamp)."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix == SPOOL_SUFFIX and p.is_file())


def _check_header(path: Path, header: Any) -> dict[str, Any]:
    if not isinstance(header, dict) or header.get("format") != SPOOL_FORMAT:
        raise SpoolError(f"{path}:1: not an inspect-mlflow spool file (no {SPOOL_FORMAT} header)")
    version = header.get("version")
    if version != SPOOL_VERSION:
        raise SpoolError(
            f"{path}:1: spool format version {version!r} is not supported (this inspect-mlflow "
            f"reads version {SPOOL_VERSION}); replay it with the version that wrote it"
        )
    return header


def read_spool(path: Path) -> SpoolFile:
    """Read a spool file.

    A last line without its newline (the process died while writing it, before the
    fsync that would have reported it as spooled) is left out and flagged.

    Raises:
        SpoolError: The file cannot be read, has no valid header, or a line is not a
            valid operation; the message names the line.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise SpoolError(f"cannot read spool file {path}: {error}") from error
    lines = raw.split(b"\n")
    truncated = bool(lines and lines[-1])
    body = lines[:-1]
    if not body:
        raise SpoolError(f"{path}:1: empty or cut-short spool file (no complete header)")
    header = _check_header(path, _parse(path, 1, body[0]))
    ops: list[Operation] = []
    for number, line in enumerate(body[1:], start=2):
        if not line.strip():
            continue
        try:
            ops.append(decode_op(_parse(path, number, line)))
        except (TypeError, ValueError) as error:
            raise SpoolError(f"{path}:{number}: not a valid operation: {error}") from None
    return SpoolFile(path=Path(path), header=header, ops=ops, truncated=truncated)


def _parse(path: Path, number: int, line: bytes) -> Any:
    try:
        return json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise SpoolError(f"{path}:{number}: not JSON: {error}") from None


def _write_atomic(target: Path, data: bytes) -> None:
    """Write ``target`` whole or not at all: temp file beside it, fsync, ``os.replace``."""
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)


def rewrite_spool(spool: SpoolFile, ops: Sequence[Operation]) -> None:
    """Replace a spool file's operations by ``ops`` (what is left), atomically."""
    data = _line(spool.header) + b"".join(_line(encode_op(op)) for op in ops)
    _write_atomic(spool.path, data)


def _progress_path(path: Path) -> Path:
    return path.with_name(path.name + PROGRESS_SUFFIX)


def read_progress(path: Path) -> dict[str, Any]:
    """The replay progress recorded beside a spool file (empty when there is none)."""
    try:
        data = json.loads(_progress_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_progress(path: Path, progress: Mapping[str, Any]) -> None:
    """Record replay progress beside a spool file (atomically)."""
    _write_atomic(_progress_path(path), json.dumps(dict(progress)).encode("utf-8"))


def remove_spool(path: Path) -> None:
    """Delete a fully delivered spool file and its progress record."""
    for target in (_progress_path(path), path):
        with contextlib.suppress(FileNotFoundError):
            target.unlink()


@contextlib.contextmanager
def _file_lock(path: Path, flags: int, what: str) -> Iterator[bool]:
    """Open ``path`` and hold its lock for the block; yields False when someone else holds it."""
    try:
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as error:
        raise SpoolError(f"cannot open {what}{path}: {error}") from error
    try:
        yield lock_file(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[bool]:
    """Hold the spool file's lock for the block; yields False when a writer still holds it."""
    with _file_lock(path, os.O_RDONLY, "spool file ") as held:
        yield held


@contextlib.contextmanager
def replay_lock(directory: Path) -> Iterator[bool]:
    """Serialise replays of one spool directory; yields False when another replay runs.

    A lock file of its own (``.replay.lock``), since a replay rewrites spool files by
    ``os.replace`` and a lock on a replaced file would no longer exclude anyone.
    """
    path = Path(directory).expanduser() / ".replay.lock"
    with _file_lock(path, os.O_RDWR | os.O_CREAT, "") as held:
        yield held
