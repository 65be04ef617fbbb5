"""How far each task is through its samples: which sample end is its last.

Inspect has no hook for "the task's samples are done"; the task's log is written right
after its last sample ends, and the run end follows. Knowing where a task is lets the
hook use the end well: once every sample has started, nothing new will join the samples
still running, so each of their ends is delivered at once instead of at the delivery's
next interval (the run end then finds little left to send); and the log's link may wait
for its run's ids at the last sample end without holding any other sample's slot.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TaskSamples", "expected_samples"]


def expected_samples(spec: Any) -> int:
    """How many sample ends a task will have: its evaluated samples times its epochs.

    0 when the spec does not say (the count is then never reached: nothing is hurried).
    """
    dataset = getattr(spec, "dataset", None)
    ids = getattr(dataset, "sample_ids", None)
    count = len(ids) if ids else getattr(dataset, "samples", None)
    epochs = getattr(getattr(spec, "config", None), "epochs", None) or 1
    if not isinstance(count, int) or not isinstance(epochs, int):
        return 0
    return count * epochs


class TaskSamples:
    """Sample starts and ends still expected per task (by ``eval_id``), from its spec."""

    def __init__(self) -> None:
        self._left: dict[str, int] = {}
        self._unstarted: dict[str, int] = {}

    def started(self, eval_id: str, spec: Any) -> None:
        """The task started: expect :func:`expected_samples` sample starts and ends."""
        self._left[eval_id] = self._unstarted[eval_id] = expected_samples(spec)

    def sample_started(self, eval_id: str) -> None:
        """Count one sample start of the task."""
        if eval_id in self._unstarted:
            self._unstarted[eval_id] -= 1

    def all_started(self, eval_id: str) -> bool:
        """Whether every expected sample of the task has started (its last wave runs)."""
        unstarted = self._unstarted.get(eval_id)
        return unstarted is not None and unstarted <= 0 and self._left.get(eval_id, 0) > 0

    def ended(self, eval_id: str) -> bool:
        """Count one sample end; True when it is the task's last expected one."""
        left = self._left.get(eval_id)
        if left is None or left <= 0:
            return False
        self._left[eval_id] = left - 1
        return left == 1

    def drop(self, eval_id: str) -> None:
        """Forget the task (it ended)."""
        self._left.pop(eval_id, None)
        self._unstarted.pop(eval_id, None)
