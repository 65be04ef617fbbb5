"""The tracking hook: every Inspect eval logged to MLflow while ``MLFLOW_TRACKING_URI`` is set.

Inspect registers :class:`MlflowTrackingHook` through this package's ``inspect_ai`` entry
point, so nothing needs importing to use it; this module names it (and its settings) for
code that wants to check, configure or subclass it. It creates a parent run per eval
invocation with a nested run per task (params, per-sample step metrics, token usage,
event counts, tables under ``inspect/*.json``, ``sample_results/*.json``,
``eval_logs/*.json``) and a trace per sample with the scores as assessments, as the
mapping (``mappings/default.yaml``) describes. MLflow is reached only through explicit
clients, in a delivery process beside the eval's (``INSPECT_MLFLOW_DELIVERY``), so the
user's own MLflow state is untouched and importing this module does not import MLflow.

Settings come from the environment (:func:`load_settings`); per eval, Inspect metadata
``inspect_mlflow.experiment`` and ``inspect_mlflow.tags.<name>`` (``--metadata``, or the
task's own) choose the experiment and add tags, and the log's metadata ``mlflow_run``
says which run the task logged to and how to open it.
"""

from __future__ import annotations

from inspect_mlflow._config import Settings, SettingsError, load_settings
from inspect_mlflow._inspect.hook import ConfigurationError, MlflowTrackingHook

__all__ = [
    "ConfigurationError",
    "MlflowTrackingHook",
    "Settings",
    "SettingsError",
    "load_settings",
]
