"""Entry point target of the ``inspect_ai`` group: importing it registers the hook.

Inspect imports every ``inspect_ai`` entry point at startup, so this stays cheap: MLflow
itself is imported only when a run actually logs.
"""

from inspect_ai.hooks import hooks

from inspect_mlflow._inspect.hook import MlflowTrackingHook


@hooks(name="mlflow_tracking", description="Log evaluations to MLflow (inspect-mlflow).")
def mlflow_tracking() -> type[MlflowTrackingHook]:
    """Return the hook class; Inspect instantiates it once per process."""
    return MlflowTrackingHook
