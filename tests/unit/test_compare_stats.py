"""The comparison's numbers against values worked out by hand on small fixed data.

Reference values are computed here without the module's code path: plain ``statistics``
for means and standard deviations, printed t-table quantiles, ``math.comb`` for the
exact McNemar test, Holm's procedure written out.
"""

from __future__ import annotations

import math
import statistics

import pytest
from scipy import stats

from inspect_mlflow._commands.compare import compare_scores, holm, render_text
from inspect_mlflow._commands.compare.stats import paired_bootstrap, reduce_epochs

T_975_9 = 2.2621571628  # t table: 97.5 % quantile, 9 degrees of freedom
T_80_9 = 0.8834038596  # 80 % quantile, 9 degrees of freedom

# Ten samples, one epoch, 0/1: sample 2 gets worse, samples 4, 6 and 9 get better.
A_BINARY = [1, 1, 1, 0, 1, 0, 1, 1, 0, 1]
B_BINARY = [1, 0, 1, 1, 1, 1, 1, 1, 1, 1]


def _single(values: list[int]) -> dict[str, list[int]]:
    return {str(i + 1): [v] for i, v in enumerate(values)}


def test_binary_single_epoch_by_hand() -> None:
    result = compare_scores({"match": _single(A_BINARY)}, {"match": _single(B_BINARY)})
    row = result.get("match")
    diffs = [b - a for a, b in zip(A_BINARY, B_BINARY, strict=True)]
    mean = sum(diffs) / 10  # 0.2
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 9)  # sqrt(0.4)
    se = sd / math.sqrt(10)  # 0.2
    assert (row.n, row.mean_a, row.mean_b) == (10, 0.7, 0.9)
    assert row.diff == pytest.approx(0.2)
    assert row.se == pytest.approx(0.2)
    assert row.ci_low == pytest.approx(0.2 - T_975_9 * se, abs=1e-9)
    assert row.ci_high == pytest.approx(0.2 + T_975_9 * se, abs=1e-9)
    # exact McNemar: 1 pair got worse, 3 got better; two-sided binomial at 1/2
    discordant, worse = 4, 1
    tail = sum(math.comb(discordant, k) for k in range(worse + 1)) / 2**discordant
    assert row.test == "mcnemar_exact"
    assert row.p_value == pytest.approx(min(1.0, 2 * tail))  # 0.625
    assert row.p_value == pytest.approx(0.625)
    assert row.effect_size == pytest.approx(mean / sd)
    assert row.mde == pytest.approx((T_975_9 + T_80_9) * sd / math.sqrt(10), abs=1e-9)
    assert row.binary
    assert row.a_right_b_wrong == ["2"]
    assert row.a_wrong_b_right == ["4", "6", "9"]
    assert row.p_holm == row.p_value  # a single test is its own family


def test_mcnemar_lopsided_is_small() -> None:
    a = [1] * 12 + [0] * 8
    b = [0] * 9 + [1] * 3 + [0] * 8  # 9 pairs got worse, none better
    row = compare_scores({"s": _single(a)}, {"s": _single(b)}).get("s")
    assert row.p_value == pytest.approx(2 * math.comb(9, 0) / 2**9)
    assert row.a_right_b_wrong == [str(i) for i in range(1, 10)]
    assert row.a_wrong_b_right == []


def test_clustered_epochs_are_averaged_within_samples() -> None:
    # 10 samples with 2 or 3 epochs each: the sample's mean is its value
    a = {
        "1": [1, 0, 1], "2": [1, 1], "3": [0, 0, 1], "4": [1, 1, 1], "5": [0, 1],
        "6": [0, 0], "7": [1, 0, 0], "8": [1, 1], "9": [0, 1, 1], "10": [1, 0],
    }  # fmt: skip
    b = {
        "1": [1, 1, 1], "2": [1, 0], "3": [1, 0, 1], "4": [1, 1, 1], "5": [1, 1],
        "6": [0, 1], "7": [1, 1, 0], "8": [1, 1], "9": [1, 1, 1], "10": [0, 0],
    }  # fmt: skip
    row = compare_scores({"acc": a}, {"acc": b}).get("acc")
    per_a = [statistics.mean(a[str(i)]) for i in range(1, 11)]
    per_b = [statistics.mean(b[str(i)]) for i in range(1, 11)]
    diffs = [y - x for x, y in zip(per_a, per_b, strict=True)]
    mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
    se = sd / math.sqrt(10)
    assert row.n == 10
    assert row.mean_a == pytest.approx(statistics.mean(per_a))
    assert row.mean_b == pytest.approx(statistics.mean(per_b))
    assert row.diff == pytest.approx(mean)
    assert row.se == pytest.approx(se)
    assert (row.ci_low, row.ci_high) == pytest.approx((mean - T_975_9 * se, mean + T_975_9 * se))
    # not 0/1 per sample any more: the paired t-test, on samples, not on epochs
    assert not row.binary and row.test == "paired_t"
    t = mean / se
    assert row.p_value == pytest.approx(stats.ttest_rel(per_b, per_a).pvalue)
    assert row.p_value == pytest.approx(2 * stats.t.sf(abs(t), 9))
    assert row.a_right_b_wrong == row.a_wrong_b_right == []
    assert row.epochs_a == {2: 5, 3: 5} and row.epochs_b == {2: 5, 3: 5}
    assert row.epoch_mismatch == []


def test_one_sided_errored_non_numeric_and_epoch_counts_are_reported() -> None:
    a = {"1": ["C"], "2": ["I"], "3": [True], "4": ["0.5"], "5": [1], "6": ["N/A"], "7": [1]}
    a |= {"8": [1, 1, 0], "11": [1], "12": [0]}
    b = {"1": ["I"], "2": ["C"], "3": [False], "4": ["P"], "5": [], "6": [1], "7": [None]}
    b |= {"8": [1, 0], "13": [1]}
    result = compare_scores({"s": a, "only_a": {"1": [1]}}, {"s": b, "only_b": {"1": [0]}})
    row = result.get("s")
    assert [p.sample_id for p in row.pairs] == ["1", "2", "3", "4", "8"]
    assert [(p.a, p.b) for p in row.pairs] == [
        (1, 0),
        (0, 1),
        (1, 0),
        (0.5, 0.5),
        pytest.approx((2 / 3, 0.5)),
    ]
    assert row.only_a == ["11", "12"] and row.only_b == ["13"]
    assert row.unscored_b == ["5", "7"] and row.unscored_a == []
    assert row.non_numeric_a == ["6"] and row.non_numeric_b == []
    assert row.epoch_mismatch == ["8"]
    assert row.epochs_a == {1: 4, 3: 1} and row.epochs_b == {1: 4, 2: 1}
    assert not row.binary and row.test == "paired_t"
    assert result.scorers_only_a == ["only_a"] and result.scorers_only_b == ["only_b"]
    text = render_text(result)
    for shown in ("only in A (2): 11, 12", "only in B (1): 13", "errored in B, no score (2): 5, 7"):
        assert shown in text
    assert "non-numeric in A (1): 6" in text and "epoch counts differ (1): 8" in text


def test_holm_by_hand() -> None:
    # sorted: 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> kept monotone at 0.06
    assert holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None])
    assert holm([0.5, 0.9]) == [1.0, 1.0]


def test_holm_applies_across_scorers() -> None:
    a = {"x": _single(A_BINARY), "y": _single([1] * 10)}
    b = {"x": _single(B_BINARY), "y": _single([0] * 10)}
    result = compare_scores(a, b)
    p_x, p_y = result.get("x").p_value, result.get("y").p_value
    assert p_y == pytest.approx(2 / 2**10)
    assert result.get("y").p_holm == pytest.approx(2 * p_y)
    assert result.get("x").p_holm == pytest.approx(max(2 * p_y, p_x))


def test_bootstrap_agrees_loosely_with_t_and_is_seeded() -> None:
    a = {str(i): [(i * 37 % 11) / 10] for i in range(40)}
    b = {str(i): [min(1.0, (i * 37 % 11) / 10 + (i % 4) * 0.05)] for i in range(40)}
    first = compare_scores({"s": a}, {"s": b}).get("s")
    again = compare_scores({"s": a}, {"s": b}).get("s")
    assert first.bootstrap_low == again.bootstrap_low
    assert first.bootstrap_high == again.bootstrap_high
    width = first.ci_high - first.ci_low
    assert first.bootstrap_low < first.diff < first.bootstrap_high
    assert first.bootstrap_low == pytest.approx(first.ci_low, abs=0.15 * width)
    assert first.bootstrap_high == pytest.approx(first.ci_high, abs=0.15 * width)


def test_bootstrap_chunks_give_the_same_distribution() -> None:
    import numpy as np

    diffs = np.array([0.0, 1.0] * 500)
    low, high = paired_bootstrap(diffs, resamples=5000, seed=1, confidence=0.95)
    se = diffs.std(ddof=1) / math.sqrt(diffs.size)
    assert low == pytest.approx(0.5 - 1.96 * se, abs=0.01)
    assert high == pytest.approx(0.5 + 1.96 * se, abs=0.01)


def test_other_reducers_are_inspects() -> None:
    assert reduce_epochs([1, 0, 0], "max") == 1
    assert reduce_epochs([1, 0, 0], "median") == 0
    assert reduce_epochs([1, 0, 1], "mean") == pytest.approx(2 / 3)
    result = compare_scores(
        {"s": {"1": [1, 0], "2": [0, 0]}},
        {"s": {"1": [0, 0], "2": [0, 1]}},
        reducers=["mean", "max"],
    )
    assert [(r.key, r.diff) for r in result.scorers] == [("s", 0.0), ("s/max", 0.0)]
    assert result.get("s", "max").a_right_b_wrong == ["1"]
    with pytest.raises(ValueError, match="unknown epoch reducer"):
        reduce_epochs([1], "no_such_reducer")


def test_too_few_pairs_leave_undefined_values_empty() -> None:
    row = compare_scores({"s": {"1": [0.3]}}, {"s": {"1": [0.6], "2": [1]}}).get("s")
    assert row.n == 1 and row.diff == pytest.approx(0.3)
    assert row.se is None and row.ci_low is None and row.p_value is None and row.mde is None
    assert row.only_b == ["2"]
    empty = compare_scores({"s": {}}, {"s": {"1": [1]}}).get("s")
    assert empty.n == 0 and empty.mean_a is None and empty.p_value is None
