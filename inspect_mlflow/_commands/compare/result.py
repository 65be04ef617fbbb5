"""The result of a comparison: plain dataclasses, the same for the CLI and the API.

:class:`Comparison` holds one :class:`ScorerComparison` per scorer and epoch reducer;
``to_dict`` gives the ``--format json`` document; the terminal table is
:func:`~inspect_mlflow._commands.compare.report.render_text`, which reads this data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Comparison", "PairedSample", "RunRef", "ScorerComparison"]


@dataclass(frozen=True)
class RunRef:
    """Which evaluation a side is: where it was read from and what it is."""

    label: str
    run_id: str | None = None
    eval_id: str | None = None
    task: str | None = None
    model: str | None = None
    source: str = "scores"
    """``mlflow-table``, ``mlflow-traces``, ``eval-log`` or ``scores`` (given as dicts)."""
    location: str | None = None
    """The tracking URI, or the log file's path."""
    experiment_id: str | None = None


@dataclass(frozen=True)
class PairedSample:
    """One sample present and scored on both sides: its reduced values."""

    sample_id: str
    a: float
    b: float
    epochs_a: int
    epochs_b: int


@dataclass(frozen=True)
class ScorerComparison:
    """The comparison of one scorer under one epoch reducer.

    None where undefined (for example no interval with fewer than two paired samples).
    """

    scorer: str
    reducer: str
    n: int
    mean_a: float | None
    mean_b: float | None
    diff: float | None
    se: float | None
    ci_low: float | None
    ci_high: float | None
    bootstrap_low: float | None
    bootstrap_high: float | None
    test: str | None
    """``mcnemar_exact`` (all per-sample values 0/1) or ``paired_t``."""
    p_value: float | None
    p_holm: float | None
    effect_size: float | None
    """Cohen's d_z: mean difference over the standard deviation of the differences."""
    mde: float | None
    """Smallest true difference detected with the comparison's power at its alpha."""
    binary: bool
    a_right_b_wrong: list[str]
    a_wrong_b_right: list[str]
    only_a: list[str]
    only_b: list[str]
    unscored_a: list[str]
    unscored_b: list[str]
    non_numeric_a: list[str]
    non_numeric_b: list[str]
    epochs_a: dict[int, int]
    """Number of scored epochs -> number of paired samples with that many, side A."""
    epochs_b: dict[int, int]
    epoch_mismatch: list[str]
    """Paired samples with a different number of scored epochs on the two sides."""
    pairs: list[PairedSample] = field(repr=False)
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """``scorer`` or, when the reducer is not the default mean, ``scorer/reducer``."""
        return self.scorer if self.reducer == "mean" else f"{self.scorer}/{self.reducer}"


@dataclass(frozen=True)
class Comparison:
    """Evaluation B against evaluation A: a :class:`ScorerComparison` per scorer/reducer.

    Everything left out of the pairing is listed, never silently dropped.
    """

    a: RunRef
    b: RunRef
    scorers: list[ScorerComparison]
    confidence: float
    power: float
    resamples: int
    seed: int
    scorers_only_a: list[str] = field(default_factory=list)
    scorers_only_b: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def get(self, scorer: str, reducer: str = "mean") -> ScorerComparison:
        """The row of one scorer and reducer."""
        for row in self.scorers:
            if row.scorer == scorer and row.reducer == reducer:
                return row
        raise KeyError(f"{scorer}/{reducer}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (``--format json``)."""
        return asdict(self)
