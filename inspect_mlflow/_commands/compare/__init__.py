"""Compare two evaluations with paired statistics, from what MLflow holds.

``compare_runs(a, b)`` reads both task runs (or log files) and ``compare_scores`` does
the statistics on plain ``{scorer: {sample_id: [epoch scores]}}`` dicts; both return a
:class:`Comparison`. The CLI is ``inspect-mlflow compare A B``. The statistical choices
are explained in :mod:`inspect_mlflow._commands.compare.stats`.
"""

from inspect_mlflow._commands.compare.report import log_comparison, render_text
from inspect_mlflow._commands.compare.result import (
    Comparison,
    PairedSample,
    RunRef,
    ScorerComparison,
)
from inspect_mlflow._commands.compare.sources import compare_runs, load_side
from inspect_mlflow._commands.compare.stats import compare_scores, holm

__all__ = [
    "Comparison",
    "PairedSample",
    "RunRef",
    "ScorerComparison",
    "compare_runs",
    "compare_scores",
    "holm",
    "load_side",
    "log_comparison",
    "render_text",
]
