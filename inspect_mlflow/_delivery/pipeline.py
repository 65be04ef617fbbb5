"""The one chain every path sends its writes through: engine -> scrub -> track -> deliver.

Why one place: the live hook (both delivery modes), ``inspect-mlflow import``, ``replay``
and the dry run of ``check --log`` all turn operations into something written or
printed. Each used to wire its own chain, and the ones that skipped the scrub step stored
or printed MLflow's credentials (issue 15). A path that builds its own chain is a bug:
they all build a :class:`Pipeline` instead.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from inspect_mlflow._delivery.secrets import Scrubber, ScrubFilter
from inspect_mlflow._operations import Operation

__all__ = ["Pipeline", "environment_secrets"]

Deliver = Callable[[list[Operation]], Any]


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
    """Scrubs each batch of operations, lets the undelivered-tracker see it, delivers it.

    Args:
        deliver: Where the clean operations go (a writer's ``emit``, a capture); None
            for a path that delivers on its own terms (replay sends in batches with
            retries) and only uses :meth:`scrub`.
        secrets: Credential values to mask (``Settings.secrets``).
        track: Sees the clean operations before they are delivered (the live path's
            :class:`~inspect_mlflow._writer.undelivered.Undelivered`), or None.
    """

    def __init__(
        self,
        deliver: Deliver | None,
        secrets: Sequence[str] = (),
        *,
        track: Callable[[list[Operation]], Any] | None = None,
    ) -> None:
        self.deliver = deliver
        self.scrubber = Scrubber(secrets)
        self.track = track

    def scrub(self, ops: list[Operation]) -> list[Operation]:
        """``ops`` with every credential value masked (the same list when there is none)."""
        return self.scrubber.ops(ops) if self.scrubber else ops

    def emit(self, ops: list[Operation]) -> None:
        """Scrub, track and deliver one batch (nothing happens for an empty one)."""
        if not ops:
            return
        ops = self.scrub(ops)
        if self.track is not None:
            self.track(ops)
        assert self.deliver is not None, "a scrub-only pipeline delivers nothing"
        self.deliver(ops)

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
