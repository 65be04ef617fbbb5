"""Per-eval settings read from Inspect's eval metadata, and the link written back into it.

Why here and pure: the hook reads one generic thing of Inspect's task payload,
``spec.metadata`` (the eval's ``--metadata``/``eval(metadata=...)`` merged with the task's
own ``Task(metadata=...)``, the task's keys winning), and this module turns it into
settings, and the run it logged to into metadata, without Inspect or MLflow.

Settings (any of them, the dotted keys winning over the object)::

    --metadata inspect_mlflow='{"experiment": "nightly", "tags": {"team": "nlp"}}'
    --metadata inspect_mlflow.experiment=nightly --metadata inspect_mlflow.tags.team=nlp

Precedence of the experiment: this metadata, then ``INSPECT_MLFLOW_EXPERIMENT_NAME``,
then ``MLFLOW_EXPERIMENT_NAME``, then ``inspect_ai``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from inspect_mlflow._writer.spool import public_uri

__all__ = [
    "LINK_KEY",
    "SETTINGS_KEY",
    "EvalSettings",
    "PendingLinks",
    "eval_settings",
    "run_link",
    "run_page",
]

SETTINGS_KEY = "inspect_mlflow"
"""The metadata key (and dotted prefix) of per-eval settings."""

LINK_KEY = "mlflow_run"
"""The metadata key the hook writes: where the task's MLflow run is and how to open it."""

RUN_KEY_TAG = "inspect_mlflow.run_key"
"""The tag every run carries with its logical key (see the sink); the link's filter."""

_FIELDS = ("experiment", "tags")


@dataclass(frozen=True)
class EvalSettings:
    """What one task's metadata asks for: an experiment and extra tags of its runs."""

    experiment: str | None = None
    """Experiment of the task's runs; None: the environment's."""
    tags: dict[str, str] = field(default_factory=dict)
    """Tags added to the task's run."""
    problems: tuple[str, ...] = ()
    """Values that could not be used (each ignored, said once as a warning)."""

    def __bool__(self) -> bool:
        return bool(self.experiment or self.tags)

    def document(self) -> dict[str, Any]:
        """The settings as the ``eval_settings`` field of the task's context documents."""
        return {"experiment": self.experiment, "tags": dict(self.tags)}


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None if value is None else str(value).lower()
    if isinstance(value, (str, int, float)):
        return str(value).strip() or None
    return None


def eval_settings(metadata: Mapping[str, Any] | None) -> EvalSettings:
    """The settings in ``metadata`` (``spec.metadata`` of a task); empty when none.

    A bad value (an experiment that is not text, tags that are not an object, an unknown
    key) is left out and named in ``problems``: the eval must go on, and the task start
    is too late to stop it.
    """
    if not metadata:
        return EvalSettings()
    problems: list[str] = []
    merged: dict[str, Any] = {}
    tags: dict[str, str] = {}
    whole = metadata.get(SETTINGS_KEY)
    if isinstance(whole, str):
        try:
            whole = json.loads(whole)
        except json.JSONDecodeError:
            problems.append(f"{SETTINGS_KEY}={whole!r} is not a JSON object")
            whole = None
    if isinstance(whole, Mapping):
        merged.update(whole)
    elif whole is not None:
        problems.append(f"{SETTINGS_KEY} must be an object with {', '.join(_FIELDS)}")
    prefix = SETTINGS_KEY + "."
    for key, value in metadata.items():
        if not isinstance(key, str) or not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        if name.startswith("tags."):
            merged.setdefault("tags", {})
            if isinstance(merged["tags"], Mapping):
                merged["tags"] = {**merged["tags"], name[len("tags.") :]: value}
        else:
            merged[name] = value
    for name in merged:
        if name not in _FIELDS:
            problems.append(f"{prefix}{name} is not a setting (known: {', '.join(_FIELDS)})")
    experiment = None
    if merged.get("experiment") is not None:
        experiment = _text(merged["experiment"])
        if experiment is None:
            problems.append(f"{prefix}experiment={merged['experiment']!r} is not a name")
    raw_tags = merged.get("tags")
    if isinstance(raw_tags, Mapping):
        for name, value in raw_tags.items():
            text = _text(value)
            if text is None or not str(name).strip():
                problems.append(f"{prefix}tags.{name}={value!r} is not a tag value")
            else:
                tags[str(name).strip()] = text
    elif raw_tags is not None:
        problems.append(f"{prefix}tags must be an object of tag names and values")
    return EvalSettings(experiment, tags, tuple(problems))


def _how_to_open(tracking_uri: str, experiment: str, search: str) -> str:
    shown = public_uri(tracking_uri)
    scheme = urlsplit(tracking_uri).scheme.lower()
    where = (
        shown.rstrip("/")
        if scheme in ("http", "https")
        else f"`mlflow ui --backend-store-uri {shown}`"
        if scheme in ("", "file", "sqlite", "mysql", "postgresql", "mssql")
        else shown
    )
    return f"open {where}, experiment '{experiment}', and search the runs for: {search}"


def run_link(tracking_uri: str, experiment: str, run_key: str) -> dict[str, str]:
    """Where a task's run is, for the eval log's metadata (``LINK_KEY``).

    Deterministic, known at task start without asking MLflow: the delivery process
    creates the run later (once a second, after the server answers; a spooled run only
    at its replay, with another id), while its logical key, in the tag
    ``inspect_mlflow.run_key``, is the same live, replayed or imported.
    """
    search = f"tags.`{RUN_KEY_TAG}` = '{run_key}'"
    return {
        "tracking_uri": public_uri(tracking_uri),
        "experiment": experiment,
        "run_key": run_key,
        "filter": search,
        "open": _how_to_open(tracking_uri, experiment, search),
    }


LOCAL_UI = "http://127.0.0.1:5000"
"""Where ``mlflow ui`` serves a local store unless told otherwise (its default)."""


def run_page(tracking_uri: str, experiment_id: str, run_id: str) -> dict[str, str]:
    """What the link gains once the run exists in MLflow: its ids and its page.

    A server's run page is ``<uri>/#/experiments/<id>/runs/<id>``, a URL a person can
    click in Inspect View. A local store (a sqlite file, a folder) has no page until
    ``mlflow ui`` serves it: ``open`` says so, with the page it will have.
    """
    shown = public_uri(tracking_uri).rstrip("/")
    path = f"/#/experiments/{experiment_id}/runs/{run_id}"
    page = {"experiment_id": experiment_id, "run_id": run_id}
    if urlsplit(tracking_uri).scheme.lower() in ("http", "https"):
        return {**page, "url": shown + path, "open": f"open {shown + path}"}
    return {
        **page,
        "open": f"run `mlflow ui --backend-store-uri {shown}`, then open {LOCAL_UI}{path}",
    }


RunLookup = Callable[[str], "tuple[str, str] | None"]
"""A session's answer for a run key: (experiment id, run id) once the run exists."""


class PendingLinks:
    """Task links still waiting for their run's ids, filled in before the log is written.

    The eval's process learns a run's ids only after the delivery creates it (within a
    second of the task's start), while Inspect writes ``spec.metadata`` into the log's
    header when the task ends. Filling happens on the event loop (the hook's callbacks),
    replacing the link's entry whole: the dict keeps its size while Inspect may read it.
    """

    def __init__(self) -> None:
        self._pending: dict[str, tuple[Any, str, str, RunLookup]] = {}
        self.waited: set[str] = set()
        """Tasks whose one bounded wait for the ids is spent."""

    def add(self, eval_id: str, spec: Any, tracking_uri: str, key: str, lookup: RunLookup) -> None:
        """Remember that the link of ``spec`` (task ``eval_id``) lacks run ``key``'s ids."""
        self._pending[eval_id] = (spec, tracking_uri, key, lookup)

    def fill(self, eval_id: str) -> bool:
        """Complete the task's link if its run's ids are known; True when none is pending."""
        entry = self._pending.get(eval_id)
        if entry is None:
            return True
        spec, tracking_uri, key, lookup = entry
        try:
            ids = lookup(key)
        except Exception:  # a session that cannot say: the link keeps its search filter
            ids = None
        if ids is None:
            return False
        del self._pending[eval_id]
        metadata = getattr(spec, "metadata", None)
        link = metadata.get(LINK_KEY) if isinstance(metadata, dict) else None
        if isinstance(link, dict):
            metadata[LINK_KEY] = {**link, **run_page(tracking_uri, *ids)}
        return True

    def drop(self, eval_id: str) -> None:
        """Forget the task (it ended: its header is written)."""
        self._pending.pop(eval_id, None)
        self.waited.discard(eval_id)
