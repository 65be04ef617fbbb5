"""The one chain every path sends its writes through: engine -> scrub -> track -> deliver.

Why one place: the live hook (both delivery modes: the session runs in the eval's
process or in the delivery process), ``inspect-mlflow import``, ``replay`` and the dry
run of ``check --log`` all turn lifecycle points into something written or printed.
Each used to wire its own chain, and the ones that skipped the scrub step stored or
printed MLflow's credentials (issue 15). Like a chain of processors, each stage takes
the operations of the one before::

    document -> engine -> [a path's adjust] -> scrub -> track undelivered -> deliver
                                        spooled operations (replay) ^ enter here

A path builds a :class:`Pipeline` (the one constructor: it builds the engine too) and
feeds it context documents with :meth:`Pipeline.feed`; a path with operations and no
engine (replay) enters after the engine with :meth:`Pipeline.emit`. Only the end
differs: a background writer (live, import), a capture (dry run), a list sent in
batches (replay).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from inspect_mlflow._delivery.secrets import Scrubber, ScrubFilter
from inspect_mlflow._engine.engine import Engine, Problems
from inspect_mlflow._mapping.model import CompiledMapping, Expr
from inspect_mlflow._operations import Operation

__all__ = ["Pipeline", "environment_secrets"]

Stage = Callable[[list[Operation]], Any]
"""A stage of the chain: takes a batch of operations."""


def environment_secrets(
    tracking_uri: str | None = None, env: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    """The credential values to mask for a command run in this environment.

    MLflow's secret variables and a password in ``tracking_uri`` (or, when None, in the
    environment's tracking URI), as the hook's settings compute them.
    """
    from inspect_mlflow._config import secret_values

    env = os.environ if env is None else env
    if tracking_uri is None:
        tracking_uri = env.get("INSPECT_MLFLOW_TRACKING_URI") or env.get("MLFLOW_TRACKING_URI")
    return secret_values(env, tracking_uri)


class Pipeline:
    """Runs the engine on each point, scrubs what it writes, tracks it, delivers it.

    Args:
        mapping: The compiled mapping the engine evaluates; None for a path that has
            operations already (replay) and enters with :meth:`emit`.
        deliver: Where the clean operations go (a writer's ``emit``, a capture, a list);
            None until :meth:`connect` (the live session builds its writer on its worker
            thread), or for a path that only masks text with :attr:`scrubber`.
        secrets: Credential values to mask (``Settings.secrets``).
        track: Sees the clean operations before they are delivered (the live path's
            :class:`~inspect_mlflow._writer.undelivered.Undelivered`), or None.
        adjust: A path's own step between the engine and the scrub (the import's
            ``--force`` and its update of runs already in MLflow), or None.
        lock: Held while the engine runs: the live session reads the engine from other
            threads too. None: the caller's thread is the only one.
        replayed: True for a log replayed (import, dry run): a point without a time is
            evaluated at the time of the last point that had one. False: at the time
            the engine runs.
        log_artifacts, traces, problems, on_search, explain_error: The engine's options
            (see :class:`~inspect_mlflow._engine.engine.Engine`).
    """

    def __init__(
        self,
        mapping: CompiledMapping | None,
        deliver: Stage | None,
        secrets: Sequence[str] = (),
        *,
        track: Stage | None = None,
        adjust: Callable[[list[Operation]], list[Operation]] | None = None,
        lock: contextlib.AbstractContextManager[Any] | None = None,
        replayed: bool = False,
        log_artifacts: bool = True,
        traces: bool = True,
        problems: Problems | None = None,
        on_search: Callable[[Expr, Any, Any], None] | None = None,
        explain_error: Callable[[Expr, Exception], str] | None = None,
    ) -> None:
        self._replayed = replayed
        self._time: float | None = 0.0 if replayed else None
        """The time the point being evaluated happened; None: now."""
        self._engine = (
            None
            if mapping is None
            else Engine(
                mapping,
                log_artifacts=log_artifacts,
                traces=traces,
                clock=self._now,
                problems=problems,
                on_search=on_search,
                explain_error=explain_error,
            )
        )
        self.deliver = deliver
        self.scrubber = Scrubber(secrets)
        self.track = track
        self.adjust = adjust
        self._lock = lock if lock is not None else contextlib.nullcontext()

    @property
    def engine(self) -> Engine:
        """The engine stage, for what a path asks it besides operations (run keys, state)."""
        assert self._engine is not None, "a pipeline without a mapping has no engine"
        return self._engine

    def connect(self, deliver: Stage, *, track: Stage | None = None) -> None:
        """Attach the end of the chain once it exists (the live session's writer)."""
        self.deliver = deliver
        self.track = track

    def feed(
        self,
        point: str,
        document: Mapping[str, Any],
        *,
        at: float | None = None,
        keep: tuple[type[Operation], ...] | None = None,
    ) -> list[Operation]:
        """Evaluate one lifecycle point and send its operations down the chain.

        Args:
            point: The lifecycle point.
            document: Its context document (``_engine.contexts.context``).
            at: When the point happened (seconds since the epoch), for its timestamps;
                None: see ``replayed``.
            keep: Send only operations of these types (the live session rebuilding the
                state of a run whose other writes landed already); None: all.

        Returns:
            The operations delivered, scrubbed.
        """
        engine = self.engine
        with self._lock:
            if at is not None:
                self._time = at
            try:
                ops = engine.handle(point, document)
            finally:
                if not self._replayed:
                    self._time = None
        if keep is not None:
            ops = [op for op in ops if isinstance(op, keep)]
        return self._engine_out(ops)

    def close_all(self, status: str) -> list[Operation]:
        """Close every run still open (a session ending without its points), as :meth:`feed`."""
        engine = self.engine
        with self._lock:
            ops = engine.close_all(status=status)
        return self._engine_out(ops)

    def _engine_out(self, ops: list[Operation]) -> list[Operation]:
        if self.adjust is not None and ops:
            ops = self.adjust(ops)
        return self.emit(ops)

    def scrub(self, ops: list[Operation]) -> list[Operation]:
        """``ops`` with every credential value masked (the same list when there is none)."""
        return self.scrubber.ops(ops) if self.scrubber else ops

    def emit(self, ops: list[Operation]) -> list[Operation]:
        """Scrub, track and deliver one batch; return it as delivered (empty: nothing)."""
        if not ops:
            return ops
        ops = self.scrub(ops)
        if self.track is not None:
            self.track(ops)
        assert self.deliver is not None, "this pipeline has no end to deliver to"
        self.deliver(ops)
        return ops

    @contextlib.contextmanager
    def scrubbing_logs(self) -> Iterator[None]:
        """Mask the credentials in this package's log records for the duration."""
        if not self.scrubber:
            yield
            return
        scrub_filter = ScrubFilter(self.scrubber)
        loggers = scrub_filter.attach()
        try:
            yield
        finally:
            scrub_filter.detach(loggers)

    def _now(self) -> float:
        """The engine's clock: the time of the point being evaluated."""
        return time.time() if self._time is None else self._time
