"""Provider autolog: switch MLflow's LLM SDK integrations on for a run, and only those off.

A provider is switched on only when both its MLflow flavor and its SDK import, and only
when the user has not already switched it on themselves; at run end we switch off exactly
what we switched on, so the user's own MLflow settings are left as they were.

Inspect's own model calls are already LLM spans of the sample's trace (the hook builds
them from Inspect's model events), so a provider SDK call made inside Inspect's model API
goes straight to the SDK, unpatched: autolog records only the calls user code makes
outside it (a tool, solver or scorer calling the SDK itself), and no call is counted
twice. Those traces go to the hook's experiment (:class:`Routing`), carry the sample they
were made in, and are linked to its task run at run end.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

PROVIDERS: dict[str, tuple[str, str]] = {
    "openai": ("mlflow.openai", "openai"),
    "anthropic": ("mlflow.anthropic", "anthropic"),
    "langchain": ("mlflow.langchain", "langchain"),
    "litellm": ("mlflow.litellm", "litellm"),
    "mistral": ("mlflow.mistral", "mistralai"),
    "groq": ("mlflow.groq", "groq"),
    "cohere": ("mlflow.cohere", "cohere"),
    "gemini": ("mlflow.gemini", "google.genai"),
    "bedrock": ("mlflow.bedrock", "boto3"),
}
"""Provider name -> (MLflow flavor module, provider SDK module)."""

AUTOLOG_METADATA = "inspect_mlflow.autolog"
"""Trace metadata key marking a trace written by provider autolog (value ``"true"``)."""

LINK_BATCH = 100
"""MLflow links at most this many traces to a run per request."""


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _already_on(flavor: str) -> bool:
    from mlflow.utils.autologging_utils import autologging_is_disabled

    return not autologging_is_disabled(flavor)


def _in_inspect_model_call() -> bool:
    """True inside Inspect's model API (``Model.generate`` around the provider call)."""
    try:
        from inspect_ai.log._samples import has_active_model_event
    except ImportError:  # an Inspect without it: record everything, as MLflow would
        return False
    return has_active_model_event()


def _bypass_inspect_calls(flavor: str) -> None:
    """Let calls made inside Inspect's model API reach the SDK's original methods.

    MLflow patches SDK methods with gorilla and keeps the patches per flavor; each patched
    method is wrapped once more, choosing per call between MLflow's patch and the original.
    MLflow's ``autolog(disable=True)`` puts the original back, removing the wrapper too.
    """
    from mlflow.utils import gorilla
    from mlflow.utils.autologging_utils.safety import _AUTOLOGGING_PATCHES

    for patch in _AUTOLOGGING_PATCHES.get(flavor, ()):
        patched = patch.destination.__dict__.get(patch.name)
        if not callable(patched) or getattr(patched, "_inspect_mlflow_bypass", False):
            continue
        original = gorilla.get_original_attribute(
            patch.destination, patch.name, bypass_descriptor_protocol=True
        )
        if not callable(original):
            continue
        setattr(patch.destination, patch.name, _choose(patched, original))


def _choose(patched: Callable[..., Any], original: Callable[..., Any]) -> Callable[..., Any]:
    # Returns what either returns (a coroutine for async methods), so one wrapper serves both.
    @functools.wraps(original)
    def call(*args: Any, **kwargs: Any) -> Any:
        return (original if _in_inspect_model_call() else patched)(*args, **kwargs)

    call._inspect_mlflow_bypass = True  # type: ignore[attr-defined]
    return call


def enable(providers: tuple[str, ...] | list[str]) -> list[str]:
    """Switch on autolog for each listed provider that is available and not already on.

    Returns:
        The providers this call switched on (pass them to :func:`disable` later).
    """
    switched: list[str] = []
    for name in providers:
        flavor_module, sdk = PROVIDERS[name]
        # The SDK first: finding an MLflow flavor imports MLflow itself (seconds, on the
        # event loop), which a run with no provider SDK installed need not pay here.
        if not (_importable(sdk) and _importable(flavor_module)):
            logger.debug("autolog: skipping %s (MLflow flavor or SDK not installed)", name)
            continue
        try:
            if _already_on(name):
                logger.debug("autolog: %s already on; leaving it as the user set it", name)
                continue
            importlib.import_module(flavor_module).autolog(silent=True)
        except Exception as err:  # an SDK version MLflow cannot patch must not stop the eval
            logger.warning("autolog: could not switch on %s: %s", name, err)
            continue
        try:
            _bypass_inspect_calls(name)
        except Exception as err:  # MLflow internals moved: Inspect's calls show up twice
            logger.warning(
                "autolog: %s will also trace Inspect's own model calls (already in the "
                "sample traces): %s",
                name,
                err,
            )
        switched.append(name)
    return switched


def disable(providers: list[str]) -> None:
    """Switch off autolog for providers that :func:`enable` switched on."""
    for name in providers:
        try:
            importlib.import_module(PROVIDERS[name][0]).autolog(disable=True, silent=True)
        except Exception as err:
            logger.warning("autolog: could not switch off %s: %s", name, err)


class Routing:
    """Sends the traces MLflow writes in this process to the hook's experiment for a run.

    MLflow's tracer exports to the process-wide tracking URI and to the active experiment
    (``Default`` unless the user set one), which is not where the hook logs. For the run,
    this sets a trace destination (and, when it differs, the tracking URI) and a span
    processor that tags each trace with the sample it was made in; :meth:`close` links
    those traces to their task runs and restores exactly what was there before.
    """

    def __init__(self, tracking_uri: str, experiment_name: str) -> None:
        import mlflow
        from mlflow.tracing.config import get_config
        from mlflow.tracing.provider import _MLFLOW_TRACE_USER_DESTINATION

        self.tracking_uri = tracking_uri
        self.experiment_id = _experiment_id(tracking_uri, experiment_name)
        self._lock = threading.Lock()
        self._traces: dict[str, str] = {}
        """Trace id -> Inspect eval id of the sample it was made in."""
        self._previous_destination = _MLFLOW_TRACE_USER_DESTINATION._global_value
        self._previous_processors = list(get_config().span_processors)
        self._previous_uri: tuple[str | None, str | None] | None = None
        if not _same_uri(mlflow.get_tracking_uri(), tracking_uri):
            from mlflow.tracking._tracking_service import utils

            self._previous_uri = (utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI"))
            mlflow.set_tracking_uri(tracking_uri)
        from mlflow.entities.trace_location import MlflowExperimentLocation

        mlflow.tracing.set_destination(MlflowExperimentLocation(self.experiment_id))
        mlflow.tracing.configure(span_processors=[*self._previous_processors, self._tag])

    def _tag(self, span: Any) -> None:
        """Span processor (in the caller's context): the sample a root span was made in."""
        if span.parent_id is not None:
            return
        from inspect_ai.log._samples import sample_active
        from mlflow.tracing.trace_manager import InMemoryTraceManager

        active = sample_active()
        manager = InMemoryTraceManager.get_instance()
        metadata = {AUTOLOG_METADATA: "true"}
        if active is not None:
            metadata.update(
                {
                    "inspect.eval_id": active.eval_id,
                    "inspect.run_id": active.run_id or "",
                    "inspect.sample_uuid": active.sample_uuid,
                    "inspect.sample_id": str(active.sample.id),
                    "inspect.epoch": str(active.epoch),
                }
            )
            with self._lock:
                self._traces[span.trace_id] = active.eval_id
        for key, value in metadata.items():
            manager.set_trace_metadata(span.trace_id, key, value)

    def close(self) -> None:
        """Deliver MLflow's pending traces, link them to their task runs, restore the rest."""
        import mlflow

        try:
            mlflow.flush_trace_async_logging()
        except Exception as err:
            logger.debug("autolog: flushing traces failed: %r", err)
        try:
            self._link()
        finally:
            self._restore()

    def _link(self) -> None:
        from mlflow import MlflowClient

        with self._lock:
            by_eval: dict[str, list[str]] = {}
            for trace_id, eval_id in self._traces.items():
                by_eval.setdefault(eval_id, []).append(trace_id)
            self._traces.clear()
        if not by_eval:
            return
        client = MlflowClient(tracking_uri=self.tracking_uri)
        for eval_id, trace_ids in by_eval.items():
            try:
                runs = client.search_runs(
                    [self.experiment_id],
                    filter_string=f"tags.`inspect.eval_id` = '{eval_id}'",
                    max_results=1,
                )
                if not runs:
                    raise LookupError(f"no task run tagged inspect.eval_id={eval_id}")
                for start in range(0, len(trace_ids), LINK_BATCH):
                    batch = trace_ids[start : start + LINK_BATCH]
                    client.link_traces_to_run(batch, runs[0].info.run_id)
            except Exception as err:
                logger.warning(
                    "autolog: could not link %d provider traces to their task run: %s",
                    len(trace_ids),
                    err,
                )

    def _restore(self) -> None:
        import mlflow

        mlflow.tracing.reset()  # destination, span processors and tracer, as MLflow starts
        if self._previous_uri is not None:
            global_uri, env_uri = self._previous_uri
            mlflow.set_tracking_uri(global_uri)
            if env_uri is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = env_uri
        if self._previous_destination is not None:
            mlflow.tracing.set_destination(self._previous_destination)
        if self._previous_processors:
            mlflow.tracing.configure(span_processors=self._previous_processors)


def _same_uri(current: str | None, wanted: str) -> bool:
    from inspect_mlflow._config import absolute_sqlite_uri

    return current is not None and absolute_sqlite_uri(current) == wanted


def _experiment_id(tracking_uri: str, name: str) -> str:
    """The hook's experiment, created here when the run's first write has not yet."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException as err:  # the delivery process created it meanwhile
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)
