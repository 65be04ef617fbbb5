"""``inspect-mlflow import``: settings from the options, a progress bar, a summary.

The import itself is :class:`inspect_mlflow._commands.importer.Importer`; this module is
what the terminal sees of it and the exit status scripts read.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from inspect_mlflow._commands.importer import Importer, LogOutcome
from inspect_mlflow._delivery.pipeline import environment_secrets

__all__ = ["run_import_command"]


def run_import_command(args: argparse.Namespace, console: Any = None) -> int:
    """Run ``inspect-mlflow import``: a progress bar on stderr, a summary on stdout.

    Settings come from the options, then the environment (as for the hook).

    Exit status: 0 every log imported or skipped, 1 a log or the mapping could not be
    read, 2 writes did not reach MLflow (or the settings are bad).
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from inspect_mlflow._config import SettingsError, load_settings
    from inspect_mlflow._mapping import MappingInvalid, load_mapping

    try:
        settings = load_settings()
    except SettingsError as err:
        print(f"inspect-mlflow import: {err}", file=sys.stderr)
        return 2
    uri = args.tracking_uri or settings.tracking_uri or "sqlite:///mlflow.db"
    settings = dataclasses.replace(
        settings,
        tracking_uri=uri,
        experiment_name=args.experiment or settings.experiment_name,
        mapping_path=args.mapping or settings.mapping_path,
        # A password in --tracking-uri is a credential too.
        secrets=(*settings.secrets, *environment_secrets(uri)),
    )
    try:
        mapping = load_mapping(settings.mapping_path)
    except MappingInvalid as invalid:
        for error in invalid.errors:
            print(error, file=sys.stderr)
        print("inspect-mlflow import: the mapping is invalid; nothing imported", file=sys.stderr)
        return 1

    console = console or Console(stderr=True)
    counts = {"imported": 0, "skipped": 0, "failed": 0}
    columns = (
        TextColumn("importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("logs  {task.fields[counts]}"),
    )
    with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
        task = progress.add_task("import", total=None, counts="")

        def on_total(total: int) -> None:
            progress.update(task, total=total)

        def on_log(outcome: LogOutcome) -> None:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
            if outcome.status == "failed" and not progress.disable:
                progress.console.print(f"[red]failed[/red] {outcome.path}: {outcome.detail}")
            shown = ", ".join(f"{n} {status}" for status, n in counts.items())
            progress.update(task, advance=1, counts=shown)

        report = Importer(settings, mapping, force=args.force).run(
            args.paths, on_total=on_total, on_log=on_log
        )

    updated = f"{report.count('updated')} updated, " if report.count("updated") else ""
    print(
        f"inspect-mlflow import: {report.count('imported')} imported, {updated}"
        f"{report.count('skipped')} skipped, {report.count('failed')} failed "
        f"-> experiment '{settings.experiment_name}' at {uri}"
    )
    for outcome in report.outcomes:
        if outcome.status != "imported":
            print(f"  {outcome.status}: {outcome.path}: {outcome.detail}")
    for line in report.problems:
        print(f"  problem: {line}")
    if not report.delivered:
        print("  some writes did not reach MLflow before the deadline")
        return 2
    if any(o.status == "failed" and "not delivered" in o.detail for o in report.outcomes):
        return 2
    return 1 if report.count("failed") else 0
