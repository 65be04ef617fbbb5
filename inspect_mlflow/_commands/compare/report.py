"""A :class:`Comparison` shown to people: the terminal table, and a run in MLflow.

The MLflow run (``--log``) makes the comparison visible in the UI beside the evals it
compares: tagged ``inspect.comparison=true`` and with both task run ids, its rows as
metrics ``compare/<scorer>/<stat>`` and as the table ``inspect/comparison.json``, and
every paired sample's two values in ``inspect/comparison_samples.json``.
"""

from __future__ import annotations

import math
import time
from typing import Any

from inspect_mlflow._commands.compare.result import Comparison, RunRef, ScorerComparison

__all__ = ["COMPARISON_TAG", "comparison_rows", "log_comparison", "render_text"]

COMPARISON_TAG = "inspect.comparison"
MAX_IDS_SHOWN = 20
_TESTS = {"mcnemar_exact": "McNemar", "paired_t": "paired t"}
_METRICS = (
    "n",
    "mean_a",
    "mean_b",
    "diff",
    "se",
    "ci_low",
    "ci_high",
    "bootstrap_low",
    "bootstrap_high",
    "p_value",
    "p_holm",
    "effect_size",
    "mde",
)


def _num(value: float | None, digits: int = 3, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _p(value: float | None) -> str:
    if value is None:
        return "-"
    return "<0.0001" if value < 0.0001 else f"{value:.4f}"


def _interval(low: float | None, high: float | None) -> str:
    return "-" if low is None or high is None else f"[{low:+.3f}, {high:+.3f}]"


def _ids(ids: list[str]) -> str:
    shown = ", ".join(ids[:MAX_IDS_SHOWN])
    more = len(ids) - MAX_IDS_SHOWN
    return f"{shown}, ... (+{more} more)" if more > 0 else shown


def _describe(ref: RunRef) -> str:
    parts = [ref.task or "?", ref.model or ""]
    if ref.run_id:
        parts.append(f"run {ref.run_id}")
    if ref.eval_id:
        parts.append(f"eval {ref.eval_id}")
    if ref.source == "eval-log" and ref.location:
        parts.append(ref.location)
    return "  ".join(p for p in parts if p) + f"  ({ref.source})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Columns aligned: the first left, numbers right."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        out = [cells[0].ljust(widths[0])]
        out += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(out).rstrip()

    return [line(header), *(line(r) for r in rows)]


def _details(row: ScorerComparison) -> list[str]:
    """What a row's numbers leave out: flips, one-sided, unscored, epoch differences."""
    items: list[str] = []
    pairs = [
        ("A right, B wrong", row.a_right_b_wrong),
        ("A wrong, B right", row.a_wrong_b_right),
        ("only in A", row.only_a),
        ("only in B", row.only_b),
        ("errored in A, no score", row.unscored_a),
        ("errored in B, no score", row.unscored_b),
        ("non-numeric in A", row.non_numeric_a),
        ("non-numeric in B", row.non_numeric_b),
    ]
    items += [f"{what} ({len(ids)}): {_ids(ids)}" for what, ids in pairs if ids]
    if row.binary and not row.a_right_b_wrong and not row.a_wrong_b_right and row.n:
        items.append("no sample flipped")
    if len(row.epochs_a) > 1 or len(row.epochs_b) > 1 or row.epochs_a != row.epochs_b:

        def counts(c: dict[int, int]) -> str:
            return ", ".join(f"{n} sample{'s' * (n != 1)} x {e}" for e, n in c.items())

        items.append(f"epochs: A {counts(row.epochs_a)}; B {counts(row.epochs_b)}")
    if row.epoch_mismatch:
        ids = row.epoch_mismatch
        items.append(f"epoch counts differ ({len(ids)}): {_ids(ids)}")
    items += row.notes
    return [f"  {row.key}: {item}" for item in items]


def render_text(comparison: Comparison) -> str:
    """The comparison as aligned plain text for a terminal (what ``compare`` prints)."""
    level = f"{comparison.confidence:.0%}"
    power = f"{comparison.power:.0%}"
    out = [
        f"B vs A, paired by sample (diff = B - A; {level} intervals; bootstrap "
        f"{comparison.resamples} resamples, seed {comparison.seed})",
        f"  A  {_describe(comparison.a)}",
        f"  B  {_describe(comparison.b)}",
        "",
    ]
    header = ["scorer", "n", "mean A", "mean B", "diff", f"{level} CI (t)", "bootstrap"]
    header += ["p", "p Holm", "test", "d_z", f"MDE {power}"]
    rows = [
        [
            r.key,
            str(r.n),
            _num(r.mean_a),
            _num(r.mean_b),
            _num(r.diff, sign=True),
            _interval(r.ci_low, r.ci_high),
            _interval(r.bootstrap_low, r.bootstrap_high),
            _p(r.p_value),
            _p(r.p_holm),
            _TESTS.get(r.test or "", "-"),
            _num(r.effect_size, 2, sign=True),
            _num(r.mde),
        ]
        for r in comparison.scorers
    ]
    out += _table(header, rows) if rows else ["(no scorer on both sides)"]
    details = [line for r in comparison.scorers for line in _details(r)]
    if comparison.scorers_only_a:
        details.append(f"  scorers only in A: {', '.join(comparison.scorers_only_a)}")
    if comparison.scorers_only_b:
        details.append(f"  scorers only in B: {', '.join(comparison.scorers_only_b)}")
    details += [f"  {note}" for note in comparison.notes]
    if details:
        out += ["", *details]
    return "\n".join(out) + "\n"


def comparison_rows(comparison: Comparison) -> list[dict[str, Any]]:
    """One flat row per scorer and reducer (the ``inspect/comparison.json`` table)."""
    rows = []
    for r in comparison.scorers:
        row: dict[str, Any] = {"scorer": r.scorer, "reducer": r.reducer, "test": r.test}
        row.update({name: getattr(r, name) for name in _METRICS})
        row["a_right_b_wrong"] = ", ".join(r.a_right_b_wrong)
        row["a_wrong_b_right"] = ", ".join(r.a_wrong_b_right)
        row["only_a"] = ", ".join(r.only_a)
        row["only_b"] = ", ".join(r.only_b)
        row["unscored_a"] = ", ".join(r.unscored_a)
        row["unscored_b"] = ", ".join(r.unscored_b)
        rows.append(row)
    return rows


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    names = list(dict.fromkeys(k for row in rows for k in row))
    return {name: [row.get(name) for row in rows] for name in names}


def _short(ref: RunRef) -> str:
    """A side in a run name: its task and the start of its run (or eval) id."""
    ident = (ref.run_id or ref.eval_id or "")[:8]
    return f"{ref.task or ref.label} {ident}".strip()


def log_comparison(
    comparison: Comparison, *, tracking_uri: str, experiment_id: str, run_name: str | None = None
) -> str:
    """Record the comparison as a finished MLflow run; returns its run id."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from inspect_mlflow._keys import safe_key

    client = MlflowClient(tracking_uri=tracking_uri)
    a, b = comparison.a, comparison.b
    tags = {
        COMPARISON_TAG: "true",
        "inspect.compare.a_run_id": a.run_id or "",
        "inspect.compare.b_run_id": b.run_id or "",
        "inspect.compare.a_eval_id": a.eval_id or "",
        "inspect.compare.b_eval_id": b.eval_id or "",
        "inspect.compare.a": _describe(a),
        "inspect.compare.b": _describe(b),
    }
    name = run_name or f"compare {_short(a)} vs {_short(b)}"
    run = client.create_run(experiment_id, run_name=name, tags={k: v for k, v in tags.items() if v})
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    several = len({r.reducer for r in comparison.scorers}) > 1
    metrics = []
    for r in comparison.scorers:
        prefix = f"compare/{r.scorer}/{r.reducer}" if several else f"compare/{r.scorer}"
        for stat in _METRICS:
            value = getattr(r, stat)
            if value is not None and math.isfinite(value):
                metrics.append(Metric(safe_key(f"{prefix}/{stat}"), float(value), now, 0))
    params = {
        "confidence": comparison.confidence,
        "power": comparison.power,
        "bootstrap_resamples": comparison.resamples,
        "bootstrap_seed": comparison.seed,
        "reducers": ",".join(dict.fromkeys(r.reducer for r in comparison.scorers)),
    }
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start : start + 1000])
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
    rows = comparison_rows(comparison)
    if rows:
        client.log_table(run_id, data=_columns(rows), artifact_file="inspect/comparison.json")
    samples = [
        {"scorer": r.scorer, "reducer": r.reducer, "sample_id": p.sample_id, "a": p.a, "b": p.b}
        | {"diff": p.b - p.a, "epochs_a": p.epochs_a, "epochs_b": p.epochs_b}
        for r in comparison.scorers
        for p in r.pairs
    ]
    if samples:
        client.log_table(
            run_id, data=_columns(samples), artifact_file="inspect/comparison_samples.json"
        )
    client.set_terminated(run_id, "FINISHED")
    return run_id
