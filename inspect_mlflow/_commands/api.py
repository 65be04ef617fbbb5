"""Python entry points that the commands otherwise build from their arguments.

Why: ``inspect-mlflow import`` assembles settings and a mapping from flags and the
environment; a script that imports logs should not have to repeat that assembly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inspect_mlflow._commands.importer import ImportReport, LogOutcome

DEFAULT_IMPORT_URI = "sqlite:///mlflow.db"
"""Where ``import`` writes when neither an argument nor the environment says."""


def import_logs(
    paths: Iterable[str | Path],
    *,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    mapping: str | Path | None = None,
    force: bool = False,
    on_log: Callable[[LogOutcome], None] | None = None,
) -> ImportReport:
    """Import Inspect logs (files or directories) into MLflow, as ``inspect-mlflow import``.

    Each log is replayed through the mapping and writer the live hook uses, so it looks
    like a run logged live; a log already in the experiment is skipped (``force``:
    imported again as new runs).

    Args:
        paths: ``.eval``/``.json`` logs and directories (searched recursively).
        tracking_uri: Default ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``.
        experiment: Default the experiment the environment names, else ``inspect_ai``.
        mapping: A mapping file; default ``$INSPECT_MLFLOW_MAPPING``, else the built-in.
        force: Import logs whose runs are already there again.
        on_log: Called with each log's outcome as soon as it is known.

    Returns:
        Every log's outcome (``imported``, ``updated``, ``skipped``, ``failed``).

    Raises:
        SettingsError: A bad environment value.
        MappingInvalid: The mapping is invalid.
    """
    from inspect_mlflow._commands.importer import Importer
    from inspect_mlflow._config import absolute_sqlite_uri, load_settings
    from inspect_mlflow._mapping import load_mapping

    settings = load_settings()
    uri = tracking_uri or settings.tracking_uri or DEFAULT_IMPORT_URI
    settings = dataclasses.replace(
        settings,
        tracking_uri=absolute_sqlite_uri(uri),
        experiment_name=experiment or settings.experiment_name,
    )
    compiled = load_mapping(mapping if mapping is not None else settings.mapping_path)
    return Importer(settings, compiled, force=force).run(paths, on_log=on_log)
