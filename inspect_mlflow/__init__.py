"""Log Inspect AI evaluations to MLflow through a declarative YAML + JMESPath mapping.

The hook needs no import (Inspect loads it through the ``inspect_ai`` entry point).
The names below are the Python API: the hook class, loading and checking a mapping,
the dry run, importing logs, replaying a spool, comparing two evaluations and the
settings. Each is imported on first use, so that importing the package, which
Inspect does at every startup, costs nothing and never imports MLflow.
See ``docs/api.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from inspect_mlflow._version import __version__

_PUBLIC: dict[str, str] = {
    "MlflowTrackingHook": "inspect_mlflow.tracking",
    "ConfigurationError": "inspect_mlflow.tracking",
    "load_mapping": "inspect_mlflow._mapping",
    "CompiledMapping": "inspect_mlflow._mapping",
    "MappingInvalid": "inspect_mlflow._mapping",
    "MappingError": "inspect_mlflow._mapping",
    "dry_run": "inspect_mlflow._commands.dryrun",
    "DryRunReport": "inspect_mlflow._commands.dryrun",
    "import_logs": "inspect_mlflow._commands.api",
    "ImportReport": "inspect_mlflow._commands.importer",
    "LogOutcome": "inspect_mlflow._commands.importer",
    "replay": "inspect_mlflow._commands.replay",
    "FileResult": "inspect_mlflow._commands.replay",
    "compare_runs": "inspect_mlflow._commands.compare",
    "compare_scores": "inspect_mlflow._commands.compare",
    "Comparison": "inspect_mlflow._commands.compare",
    "ScorerComparison": "inspect_mlflow._commands.compare",
    "PairedSample": "inspect_mlflow._commands.compare",
    "RunRef": "inspect_mlflow._commands.compare",
    "render_text": "inspect_mlflow._commands.compare",
    "load_settings": "inspect_mlflow._config",
    "Settings": "inspect_mlflow._config",
    "SettingsError": "inspect_mlflow._config",
}
"""Public name -> the module that defines it (imported when the name is first used)."""

__all__ = [
    "__version__",
    "MlflowTrackingHook",
    "ConfigurationError",
    "load_mapping",
    "CompiledMapping",
    "MappingInvalid",
    "MappingError",
    "dry_run",
    "DryRunReport",
    "import_logs",
    "ImportReport",
    "LogOutcome",
    "replay",
    "FileResult",
    "compare_runs",
    "compare_scores",
    "Comparison",
    "ScorerComparison",
    "PairedSample",
    "RunRef",
    "render_text",
    "load_settings",
    "Settings",
    "SettingsError",
]

if TYPE_CHECKING:
    from inspect_mlflow._commands.api import import_logs
    from inspect_mlflow._commands.compare import (
        Comparison,
        PairedSample,
        RunRef,
        ScorerComparison,
        compare_runs,
        compare_scores,
        render_text,
    )
    from inspect_mlflow._commands.dryrun import DryRunReport, dry_run
    from inspect_mlflow._commands.importer import ImportReport, LogOutcome
    from inspect_mlflow._commands.replay import FileResult, replay
    from inspect_mlflow._config import Settings, SettingsError, load_settings
    from inspect_mlflow._mapping import CompiledMapping, MappingError, MappingInvalid, load_mapping
    from inspect_mlflow.tracking import ConfigurationError, MlflowTrackingHook


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562)."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'inspect_mlflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names, loaded or not."""
    return sorted(set(globals()) | set(__all__))
