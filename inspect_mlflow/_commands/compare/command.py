"""``inspect-mlflow compare A B``: argument parsing and output of the comparison.

Exit status: 0 compared, 1 a side could not be found or read (bad reference, no
scores), 2 the command failed otherwise (see :mod:`inspect_mlflow._commands.cli`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

__all__ = ["register", "run_compare"]


def _experiment_id(uri: str, name: str) -> str:
    """The id of experiment ``name`` at ``uri``, created when missing (for ``--log``)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else client.create_experiment(name)


def run_compare(args: argparse.Namespace) -> int:
    """Compare, print (text or JSON) and, with ``--log``, record the comparison."""
    from inspect_mlflow._commands.compare.report import log_comparison, render_text
    from inspect_mlflow._commands.compare.sources import compare_runs, resolve_target

    try:
        comparison = compare_runs(
            args.a,
            args.b,
            tracking_uri=args.tracking_uri,
            experiment=args.experiment,
            reducers=args.reducer or None,
            confidence=args.confidence,
            power=args.power,
            resamples=args.resamples,
            seed=args.seed,
        )
    except ValueError as error:
        print(f"inspect-mlflow compare: {error}", file=sys.stderr)
        return 1
    logged: str | None = None
    if args.log:
        uri, name = resolve_target(args.tracking_uri, args.experiment)
        experiment_id = (
            comparison.a.experiment_id or comparison.b.experiment_id or _experiment_id(uri, name)
        )
        # MLflow prints "View run ..." links on stdout for a server: keep stdout the result's
        with contextlib.redirect_stdout(sys.stderr):
            logged = log_comparison(comparison, tracking_uri=uri, experiment_id=experiment_id)
    if args.format == "json":
        document = comparison.to_dict()
        document["logged_run_id"] = logged
        json.dump(document, sys.stdout, indent=2, ensure_ascii=False, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_text(comparison))
        if logged:
            print(f"\nlogged as MLflow run {logged}")
    return 0


def register(subparsers: Any) -> None:
    """Add the ``compare`` subcommand to the CLI."""
    parser = subparsers.add_parser(
        "compare",
        help="compare two evaluations with paired statistics",
        description=(
            "Compare evaluation B against evaluation A sample by sample, from the per-sample "
            "scores MLflow holds (the task run's inspect/sample_scores.json, else its "
            "traces) or from Inspect log files. The epochs of a sample are reduced to one "
            "value (mean by default); per scorer it prints paired n, both means, the "
            "difference with a t interval and a paired bootstrap interval, a p-value "
            "(exact McNemar for 0/1 scores, else a paired t-test) with Holm's adjustment "
            "across scorers, Cohen's d_z, the samples that flipped, the minimum detectable "
            "difference, and every sample that could not be paired."
        ),
        epilog="Exit status: 0 compared, 1 a side could not be found or read, 2 failure.",
    )
    for side in ("a", "b"):
        parser.add_argument(
            side,
            metavar=side.upper(),
            help=(
                "task run id (or an eval's parent run id), eval id, task name or run name "
                "in the experiment, or an Inspect .eval/.json log path"
            ),
        )
    parser.add_argument(
        "--experiment",
        default=None,
        metavar="NAME",
        help="experiment to look names up in (default: $MLFLOW_EXPERIMENT_NAME, else inspect_ai)",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        metavar="URI",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)",
    )
    parser.add_argument(
        "--reducer",
        action="append",
        metavar="NAME",
        help=(
            "epoch reducer, repeatable: mean, median, max, mode, pass_at_K, at_least_K "
            "(default: the evals' reducers when they used several, else mean)"
        ),
    )
    parser.add_argument("--confidence", type=float, default=0.95, help="interval level")
    parser.add_argument("--power", type=float, default=0.8, help="power of the MDE")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    parser.add_argument(
        "--log",
        action="store_true",
        help=(
            "record the comparison in MLflow: a run tagged inspect.comparison=true with "
            "metrics compare/<scorer>/<stat> and the table inspect/comparison.json"
        ),
    )
    parser.set_defaults(handler=run_compare)
