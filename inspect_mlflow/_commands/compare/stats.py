"""Paired statistics of two evaluations over the same samples (pure: no MLflow, no I/O).

The unit of analysis is the *sample*: the epochs of one sample are reduced to one value
(the mean by default), and the two evaluations are compared through the per-sample
differences ``d = B - A`` (Miller, "Adding Error Bars to Evals", 2024). Averaging the
epochs within a sample makes the standard error of ``d`` the cluster-robust one with
samples as clusters, so repeated epochs do not pass for independent evidence.

Choices, and why:

- **Interval**: ``mean(d) ± t_{1-α/2, n-1} · sd(d)/√n``. The t quantile (not z) keeps
  small evals honest; a **paired percentile bootstrap** (fixed seed, resampling samples)
  is reported beside it as a second opinion that assumes no normality.
- **p-value**: when every per-sample value on both sides is 0 or 1, the **exact
  McNemar test** (two-sided binomial test of the discordant pairs at ½): it is exact
  for binary outcomes at any n. Otherwise the **paired t-test** on ``d``. We chose it over
  Wilcoxon's signed-rank test because the question is about the *mean* score (the
  accuracy the eval reports), which is what the t-test tests; its p-value agrees with
  the t interval (p < α exactly when the interval excludes 0); and Wilcoxon's test of a
  symmetric location shift handles the many ties and zero differences of epoch-averaged
  0/1 scores poorly. The bootstrap interval covers the non-normal cases.
- **Effect size**: Cohen's ``d_z = mean(d) / sd(d)``.
- **Minimum detectable difference** at power ``1-β`` (default 80 %), two-sided α:
  ``(t_{1-α/2, n-1} + t_{1-β, n-1}) · sd(d) / √n``, the usual normal-theory
  approximation with t quantiles in place of z (slightly larger, so not optimistic).
- **Several scorers/reducers**: Holm's step-down adjustment over every row that has a
  p-value (a family-wise error rate of α across the comparison).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy import stats

from inspect_mlflow._commands.compare.result import (
    Comparison,
    PairedSample,
    RunRef,
    ScorerComparison,
)
from inspect_mlflow._mapping.functions_numbers import score_value

__all__ = [
    "compare_scores",
    "holm",
    "is_reducer",
    "paired_bootstrap",
    "reduce_epochs",
    "to_number",
]

DEFAULT_RESAMPLES = 10_000
DEFAULT_SEED = 0

ScoresByScorer = Mapping[str, Mapping[Any, Sequence[Any]]]
"""``{scorer: {sample_id: [score of epoch 1, epoch 2, ...]}}``; an empty list (or
``None`` entries only) marks a sample that is present but has no score (it errored)."""


def to_number(value: Any) -> float | None:
    """A score value as a number, exactly as the mapping's ``score_value`` gives it.

    C 1, I 0, P 0.5, N 0, booleans 1/0, numeric strings; None when it is not one
    (reported): one definition of a score's number.
    """
    number = score_value(value)
    return None if number is None else float(number)


@functools.cache
def _inspect_reducer(name: str) -> Any:
    """Inspect's own reducer of that name (``max``, ``median``, ``pass_at_2``, ...)."""
    from inspect_ai import Epochs

    [reducer] = Epochs(1, [name]).reducer or [None]
    if reducer is None:
        raise ValueError(f"unknown epoch reducer {name!r}")
    return reducer


def is_reducer(name: str) -> bool:
    """Whether Inspect knows an epoch reducer of that name."""
    try:
        _inspect_reducer(name)
    except (LookupError, ValueError):
        return False
    return True


def reduce_epochs(values: Sequence[float], reducer: str = "mean") -> float:
    """One sample's value from its epochs' values.

    Reducers other than ``mean`` are Inspect's own, so ``max`` or ``pass_at_2`` mean here
    what they mean in the eval.
    """
    if reducer == "mean":
        return float(np.mean(values))
    from inspect_ai.scorer import Score

    try:
        reduced = _inspect_reducer(reducer)([Score(value=v) for v in values])
    except LookupError as error:
        raise ValueError(f"unknown epoch reducer {reducer!r}") from error
    return float(reduced.value)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values, in the input's order (None stays None)."""
    known = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(known)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(known):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def paired_bootstrap(
    diffs: np.ndarray, *, resamples: int, seed: int, confidence: float
) -> tuple[float, float]:
    """Percentile interval of the mean of ``diffs`` over resampled samples.

    Vectorised, in chunks of about two million draws so large evals stay within memory.
    """
    rng = np.random.default_rng(seed)
    n = diffs.size
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // n)
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        means[start:stop] = diffs[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


@dataclass
class _Side:
    """One side's samples for one scorer, sorted into what can be paired and what not."""

    values: dict[str, list[float]] = field(default_factory=dict)
    unscored: list[str] = field(default_factory=list)
    non_numeric: list[str] = field(default_factory=list)


def _sort_side(samples: Mapping[Any, Sequence[Any]]) -> _Side:
    side = _Side()
    for sample_id, epochs in samples.items():
        key = str(sample_id)
        present = [v for v in epochs if v is not None]
        numbers = [to_number(v) for v in present]
        if not present:
            side.unscored.append(key)
        elif any(n is None for n in numbers):
            side.non_numeric.append(key)
        else:
            side.values[key] = [float(n) for n in numbers if n is not None]
    return side


def _sample_order(ids: set[str]) -> list[str]:
    """Numeric ids in numeric order, then the others alphabetically."""
    return sorted(ids, key=lambda s: (0, int(s), "") if s.lstrip("-").isdigit() else (1, 0, s))


def _compare_one(
    scorer: str,
    reducer: str,
    samples_a: Mapping[Any, Sequence[Any]],
    samples_b: Mapping[Any, Sequence[Any]],
    *,
    confidence: float,
    power: float,
    resamples: int,
    seed: int,
) -> ScorerComparison:
    side_a, side_b = _sort_side(samples_a), _sort_side(samples_b)
    present_a = set(side_a.values) | set(side_a.unscored) | set(side_a.non_numeric)
    present_b = set(side_b.values) | set(side_b.unscored) | set(side_b.non_numeric)
    paired_ids = _sample_order(set(side_a.values) & set(side_b.values))
    pairs = [
        PairedSample(
            sid,
            reduce_epochs(side_a.values[sid], reducer),
            reduce_epochs(side_b.values[sid], reducer),
            len(side_a.values[sid]),
            len(side_b.values[sid]),
        )
        for sid in paired_ids
    ]
    a = np.array([p.a for p in pairs])
    b = np.array([p.b for p in pairs])
    d = b - a
    n = len(pairs)
    binary = n > 0 and bool(np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all())
    notes: list[str] = []
    mean_a = float(a.mean()) if n else None
    mean_b = float(b.mean()) if n else None
    diff = float(d.mean()) if n else None
    se = ci_low = ci_high = boot_low = boot_high = p_value = effect = mde = None
    test: str | None = None
    sd = float(d.std(ddof=1)) if n >= 2 else None
    if sd is not None and diff is not None:
        alpha = 1 - confidence
        t_crit = float(stats.t.ppf(1 - alpha / 2, n - 1))
        se = sd / math.sqrt(n)
        ci_low, ci_high = diff - t_crit * se, diff + t_crit * se
        boot_low, boot_high = paired_bootstrap(
            d, resamples=resamples, seed=seed, confidence=confidence
        )
        if sd > 0:
            effect = diff / sd
            mde = (t_crit + float(stats.t.ppf(power, n - 1))) * se
        else:
            notes.append("every paired difference is the same: no spread to test or size")
    elif n < 2:
        notes.append(f"{n} paired sample{'s' if n != 1 else ''}: no interval")
    if binary:
        test = "mcnemar_exact"
        worse = int(((a == 1) & (b == 0)).sum())
        better = int(((a == 0) & (b == 1)).sum())
        discordant = worse + better
        p_value = 1.0 if discordant == 0 else float(stats.binomtest(worse, discordant).pvalue)
    elif sd is not None and sd > 0 and se is not None and diff is not None:
        test = "paired_t"
        p_value = float(2 * stats.t.sf(abs(diff / se), n - 1))
    elif sd == 0 and diff == 0:
        test, p_value = "paired_t", 1.0
    flips_worse = [p.sample_id for p in pairs if binary and p.a == 1 and p.b == 0]
    flips_better = [p.sample_id for p in pairs if binary and p.a == 0 and p.b == 1]
    epochs_a: dict[int, int] = {}
    epochs_b: dict[int, int] = {}
    for p in pairs:
        epochs_a[p.epochs_a] = epochs_a.get(p.epochs_a, 0) + 1
        epochs_b[p.epochs_b] = epochs_b.get(p.epochs_b, 0) + 1
    return ScorerComparison(
        scorer=scorer,
        reducer=reducer,
        n=n,
        mean_a=mean_a,
        mean_b=mean_b,
        diff=diff,
        se=se,
        ci_low=ci_low,
        ci_high=ci_high,
        bootstrap_low=boot_low,
        bootstrap_high=boot_high,
        test=test,
        p_value=p_value,
        p_holm=None,
        effect_size=effect,
        mde=mde,
        binary=binary,
        a_right_b_wrong=flips_worse,
        a_wrong_b_right=flips_better,
        only_a=_sample_order(present_a - present_b),
        only_b=_sample_order(present_b - present_a),
        unscored_a=_sample_order(set(side_a.unscored)),
        unscored_b=_sample_order(set(side_b.unscored)),
        non_numeric_a=_sample_order(set(side_a.non_numeric)),
        non_numeric_b=_sample_order(set(side_b.non_numeric)),
        epochs_a=dict(sorted(epochs_a.items())),
        epochs_b=dict(sorted(epochs_b.items())),
        epoch_mismatch=[p.sample_id for p in pairs if p.epochs_a != p.epochs_b],
        pairs=pairs,
        notes=notes,
    )


def compare_scores(
    scores_a: ScoresByScorer,
    scores_b: ScoresByScorer,
    *,
    reducers: Sequence[str] = ("mean",),
    confidence: float = 0.95,
    power: float = 0.8,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    a: RunRef | None = None,
    b: RunRef | None = None,
) -> Comparison:
    """Compare B against A, scorer by scorer, from plain per-sample epoch scores.

    Args:
        scores_a: ``{scorer: {sample_id: [epoch scores]}}`` of A; a score may be a number,
            a boolean, ``C``/``I``/``P`` or a numeric string (anything else is reported as
            non-numeric); an empty list marks a sample without a score (errored).
        scores_b: The same for B; sample ids are compared as text.
        reducers: How each sample's epochs become one value: ``mean`` (the default) or
            any Inspect reducer name (``median``, ``max``, ``mode``, ``pass_at_2``, ...).
        confidence: Level of both intervals; ``1 - confidence`` is the tests' alpha.
        power: Power of the minimum detectable difference.
        resamples: Bootstrap resamples.
        seed: Bootstrap seed (the same inputs give the same interval).
        a: What A is (shown in reports); ``RunRef("A")`` when None.
        b: What B is.
    """
    rows: list[ScorerComparison] = []
    for scorer in [s for s in scores_a if s in scores_b]:
        for reducer in reducers:
            rows.append(
                _compare_one(
                    scorer,
                    reducer,
                    scores_a[scorer],
                    scores_b[scorer],
                    confidence=confidence,
                    power=power,
                    resamples=resamples,
                    seed=seed,
                )
            )
    adjusted = holm([row.p_value for row in rows])
    rows = [_with_holm(row, p) for row, p in zip(rows, adjusted, strict=True)]
    return Comparison(
        a=a or RunRef("A"),
        b=b or RunRef("B"),
        scorers=rows,
        confidence=confidence,
        power=power,
        resamples=resamples,
        seed=seed,
        scorers_only_a=[s for s in scores_a if s not in scores_b],
        scorers_only_b=[s for s in scores_b if s not in scores_a],
    )


def _with_holm(row: ScorerComparison, p_holm: float | None) -> ScorerComparison:
    return replace(row, p_holm=p_holm)
