"""What went wrong while applying a mapping, counted per kind instead of raised.

The engine must never break the eval it observes: an expression that fails, a value MLflow
cannot take or a rule without its run skips one output and is counted here, with the place
in the mapping of the first one, so the end of a session can say what was lost and where.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from inspect_mlflow._mapping.model import Where

__all__ = ["PROBLEM_KINDS", "Problem", "Problems"]

logger = logging.getLogger("inspect_mlflow._engine.engine")
"""The engine's logger: a user's logging setup names it, whichever module counts."""

PROBLEM_KINDS: tuple[str, ...] = (
    "expression_error",
    "rejected_value",
    "no_run",
    "key_collision",
    "step_reused",
)
"""What the engine counts: an expression that raised; a value MLflow cannot take (a
metric that is text, a null trace key, ...); a rule whose run is not open; two keys that
became one MLflow-safe key in a run (the later one gets a hash suffix); a metric key
written twice at one step of a run with different values (MLflow keeps both points and
shows whichever it sorts last, so a headline number may be the wrong one)."""

_PROBLEM_NOUNS = {
    "expression_error": "expression errors",
    "rejected_value": "rejected values",
    "no_run": "rules with no open run",
    "key_collision": "key collisions",
    "step_reused": "metric steps written twice with different values",
}


@dataclass
class Problem:
    """Occurrences of one kind of problem, with the first one described."""

    kind: str
    count: int = 0
    first: str = ""


class Problems:
    """Counts of problems per kind; the first message of each kind is kept and logged."""

    def __init__(self) -> None:
        self.by_kind: dict[str, Problem] = {}

    def add(self, kind: str, where: Where | str | None, message: str) -> None:
        """Count one problem; log it at warning level when it is the first of its kind."""
        problem = self.by_kind.get(kind)
        if problem is None:
            text = f"{where}: {message}" if where else message
            problem = self.by_kind[kind] = Problem(kind, 0, text)
            logger.warning("inspect-mlflow: %s (further ones are counted)", text)
        problem.count += 1

    def count(self, kind: str) -> int:
        """How many problems of ``kind`` were counted."""
        problem = self.by_kind.get(kind)
        return problem.count if problem else 0

    def summary(self) -> list[str]:
        """One line per kind, e.g. ``3 rejected values (first: file:1:2: rules...: ...)``."""
        return [
            f"{p.count} {_PROBLEM_NOUNS.get(p.kind, p.kind)} (first: {p.first})"
            for kind in (*PROBLEM_KINDS, *sorted(set(self.by_kind) - set(PROBLEM_KINDS)))
            if (p := self.by_kind.get(kind)) is not None
        ]
