"""LoggedModels of an experiment, one per evaluated model: found again, else created once.

MLflow 3 records an evaluation against a LoggedModel: the runs that evaluated it name it
as an input, their metrics carry its id, and traces carry it as ``mlflow.modelId``. A
LoggedModel's name is not unique in MLflow (``create_logged_model`` always makes a new
one), so the model is found by a deterministic tag, ``inspect_mlflow.model_key`` (a
digest of the model's identity, which any identity fits in a filter string), in this
eval and every later one.

Two evals that start at once may both find nothing and both create the model. MLflow
has no unique constraint to settle that, so every creator follows one rule: the model is
the oldest with the tag (by creation time, then id). After creating one, the creator
searches again; the later creator always sees the earlier model (it committed first)
and, if that one is the oldest, deletes its own. The earlier creator may not have seen
the later one yet (both created in the same millisecond, the later one with the smaller
id): so it searches once more after :data:`RECHECK_SECONDS`, and yields the same way.
Only then is the id used for anything; a creator never deletes a model it returned.
What is left is a creation that takes longer than that pause to commit after the other's.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any

from mlflow.entities import LoggedModelStatus
from mlflow.exceptions import MlflowException

from inspect_mlflow._keys import logged_model_name
from inspect_mlflow._operations import ModelData

__all__ = ["MODEL_ID_METADATA", "MODEL_KEY_TAG", "LoggedModels", "model_key_digest"]

MODEL_KEY_TAG = "inspect_mlflow.model_key"
"""LoggedModel tag holding :func:`model_key_digest` of the model's identity."""

MODEL_ID_METADATA = "mlflow.modelId"
"""Trace metadata key linking a trace to a LoggedModel (``TraceMetadataKey.MODEL_ID``)."""

EXTERNAL_TAG = "mlflow.model.isExternal"
"""Set by ``mlflow.create_external_model``: the weights live elsewhere (an API model)."""

RECHECK_SECONDS = 0.5
"""Pause before a creator that found no rival checks once more (once per new model)."""

_OLDEST_FIRST = [
    {"field_name": "creation_timestamp", "ascending": True},
    {"field_name": "model_id", "ascending": True},
]


def model_key_digest(identity: str) -> str:
    """The tag value that finds a model again: 32 hex characters of SHA-256."""
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:32]


class LoggedModels:
    """Model identity -> LoggedModel id, cached for the sink's life (thread-safe).

    Args:
        call: The sink's MLflow call (counts the call, honours cancellation).
        experiment_id: Gives the sink's experiment id (resolved before any send).
    """

    def __init__(
        self,
        call: Callable[..., Any],
        experiment_id: Callable[[], str | None],
        recheck_seconds: float = RECHECK_SECONDS,
    ) -> None:
        self._call = call
        self._experiment_id = experiment_id
        self._recheck_seconds = recheck_seconds
        self._ids: dict[str, str] = {}
        self._known: dict[str, ModelData] = {}
        self._lock = threading.Lock()

    def know(self, model: ModelData) -> None:
        """Remember how to create a model, for whichever write needs it first.

        A batch may deliver a run's metrics or traces for a model before the run's
        inputs (a run's data ops are merged into its first data step): the model is then
        created from these tags and params all the same.
        """
        with self._lock:
            self._known.setdefault(model.key, model)

    def resolve(self, model: ModelData | str, run_id: str | None = None) -> str:
        """The id of the model's LoggedModel, creating it when the experiment has none.

        Args:
            model: The model (its tags and params are used only when it is created), or
                just its identity.
            run_id: The run that evaluates it: the new model's source run.
        """
        key = model.key if isinstance(model, ModelData) else model
        with self._lock:
            found = self._ids.get(key)
            if found is None:
                found = self._find(key) or self._create(model, run_id)
                self._ids[key] = found
            return found

    def _find(self, key: str) -> str | None:
        models = self._call(
            "search_logged_models",
            [self._experiment_id()],
            filter_string=f"tags.`{MODEL_KEY_TAG}` = '{model_key_digest(key)}'",
            order_by=_OLDEST_FIRST,
            max_results=1,
        )
        return str(models[0].model_id) if models else None

    def _create(self, model: ModelData | str, run_id: str | None) -> str:
        if isinstance(model, str):
            model = self._known.get(model) or ModelData(key=model, name=logged_model_name(model))
        tags = {
            **model.tags,
            MODEL_KEY_TAG: model_key_digest(model.key),
            EXTERNAL_TAG: "true",
        }
        created = self._call(  # positional: ``_call`` has a ``name`` of its own
            "create_logged_model",
            self._experiment_id(),
            model.name,
            run_id,
            tags,
            dict(model.params) or None,
        )
        model_id = str(created.model_id)
        winner = self._yield_to(model.key, model_id)
        if winner != model_id:
            return winner
        self._call("finalize_logged_model", model_id, LoggedModelStatus.READY)
        time.sleep(self._recheck_seconds)  # a rival created at the same moment shows now
        return self._yield_to(model.key, model_id)

    def _yield_to(self, key: str, model_id: str) -> str:
        """The oldest model with the key's tag; ours is deleted when it is not that one."""
        winner = self._find(key) or model_id
        if winner != model_id:  # another eval created it first: use that one
            try:
                self._call("delete_logged_model", model_id)
            except MlflowException:
                pass  # a duplicate left behind is harmless: nothing refers to it
        return winner
