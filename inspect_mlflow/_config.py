"""Settings from the environment, parsed once per run, with errors that name the variable.

Every ``INSPECT_MLFLOW_*`` (and the MLflow variables we honour) is read here and nowhere
else, so a user reading one error message knows which variable to fix.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from inspect_mlflow._paths import default_spool_dir

KNOWN_PROVIDERS: tuple[str, ...] = (
    "openai",
    "anthropic",
    "langchain",
    "litellm",
    "mistral",
    "groq",
    "cohere",
    "gemini",
    "bedrock",
)
DEFAULT_PROVIDERS: tuple[str, ...] = ("openai", "anthropic", "langchain", "litellm")
DEFAULT_EXPERIMENT = "inspect_ai"

SECRET_VARIABLES: tuple[str, ...] = (
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "DATABRICKS_TOKEN",
    "DATABRICKS_CLIENT_SECRET",
)
"""Credentials MLflow reads from the environment: their values never appear in anything
the package writes or prints."""

VARIABLES: tuple[str, ...] = (
    "INSPECT_MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_URI",
    "INSPECT_MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_EXPERIMENT_NAME",
    "INSPECT_MLFLOW_LOG_ARTIFACTS",
    "MLFLOW_INSPECT_LOG_ARTIFACTS",
    "INSPECT_MLFLOW_AUTOLOG_ENABLED",
    "INSPECT_MLFLOW_AUTOLOG_MODELS",
    "INSPECT_MLFLOW_MAPPING",
    "INSPECT_MLFLOW_TRACES",
    "INSPECT_MLFLOW_TRACING_ENABLED",
    "MLFLOW_INSPECT_TRACING",
    "INSPECT_MLFLOW_TRACE_MAX_SPANS",
    "INSPECT_MLFLOW_TRACE_MAX_TEXT",
    "INSPECT_MLFLOW_FLUSH_TIMEOUT",
    "INSPECT_MLFLOW_SPOOL_DIR",
    "INSPECT_MLFLOW_MAX_QUEUE_SIZE",
    "INSPECT_MLFLOW_DELIVERY",
    *SECRET_VARIABLES,
)
"""Every environment variable :func:`load_settings` reads."""

OLDER_NAMES: dict[str, tuple[str, ...]] = {
    "INSPECT_MLFLOW_EXPERIMENT_NAME": ("MLFLOW_EXPERIMENT_NAME",),
    "INSPECT_MLFLOW_LOG_ARTIFACTS": ("MLFLOW_INSPECT_LOG_ARTIFACTS",),
    "INSPECT_MLFLOW_TRACES": ("INSPECT_MLFLOW_TRACING_ENABLED", "MLFLOW_INSPECT_TRACING"),
}
"""Other names of a setting, in the order they are honoured after the first: the names
the PyPI package ``inspect-mlflow`` (debu-sinha, 0.9) reads for the same thing, so an
environment set up for it keeps working (the first name set wins)."""

_MIN_SECRET_CHARS = 4
"""Shorter values are not scrubbed (replacing every ``a`` in a log would help nobody)."""

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class SettingsError(ValueError):
    """A bad environment value; the message names the variable and says how to fix it."""


@dataclass(frozen=True)
class Settings:
    """Everything the hook needs to know from the environment for one run."""

    tracking_uri: str | None
    """Where to log; None means the hook is off."""
    experiment_name: str = DEFAULT_EXPERIMENT
    log_artifacts: bool = True
    """Tables and artifacts on/off."""
    autolog_enabled: bool = False
    """Provider autolog: off unless asked for, since Inspect's own model calls are already
    LLM spans of the sample traces (see :mod:`inspect_mlflow._delivery.autolog`)."""
    autolog_providers: tuple[str, ...] = DEFAULT_PROVIDERS
    mapping_path: Path | None = None
    """A user mapping file; None means the built-in default."""
    traces: bool = True
    """One MLflow trace per sample with the scores as feedback."""
    trace_max_spans: int = 1000
    """At most this many child spans per trace; the rest are counted, not sent."""
    trace_max_text: int = 20_000
    """Text span inputs/outputs/attributes longer than this are cut with a marker."""
    flush_timeout: float = 30.0
    """Seconds the end of a run may wait for undelivered writes before spooling them."""
    spool_dir: Path | None = None
    """Where undelivered writes are kept for ``inspect-mlflow replay``; None: the default
    per-user cache directory."""
    max_queue_size: int = 100_000
    """Write operations that may wait in memory; beyond it they go to the spool."""
    delivery: str = "process"
    """Where the mapping is evaluated and MLflow written to: ``process`` (a delivery
    process beside the eval's, off its GIL) or ``thread`` (threads of the eval's process)."""
    secrets: tuple[str, ...] = field(default=(), repr=False)
    """Values of MLflow's credential variables (and a password in the tracking URI),
    scrubbed from everything written or printed. Never shown in a repr."""

    @property
    def active(self) -> bool:
        """True when a tracking URI is configured."""
        return bool(self.tracking_uri)


def _first_set(env: Mapping[str, str], name: str) -> str:
    """The first of ``name`` and its :data:`OLDER_NAMES` that is set (else ``name``)."""
    for candidate in (name, *OLDER_NAMES.get(name, ())):
        if _get(env, candidate) is not None:
            return candidate
    return name


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def parse_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """Read a boolean: true/false/1/0/yes/no/on/off in any case."""
    raw = _get(env, name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise SettingsError(
        f"{name}={raw!r} is not a boolean. Use one of true/false, 1/0, yes/no, on/off "
        f"(any case), or unset it to get the default ({str(default).lower()})."
    )


def _parse_number(env: Mapping[str, str], name: str, default: float, kind: type) -> float:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value <= 0:
        raise SettingsError(
            f"{name}={raw!r} is not a positive {kind.__name__}. "
            f"Set it to a number such as {default!r}, or unset it to get that default."
        )
    return value


def parse_providers(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Read a provider list given as CSV (``openai,anthropic``) or a JSON array."""
    raw = _get(env, name)
    if raw is None:
        return DEFAULT_PROVIDERS
    if raw.startswith("["):
        try:
            items = json.loads(raw)
        except json.JSONDecodeError as err:
            raise SettingsError(
                f"{name}={raw!r} looks like a JSON array but does not parse ({err.msg} at "
                f"character {err.pos}). Use a JSON array of strings or a comma-separated list."
            ) from None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise SettingsError(f"{name}={raw!r} must be a JSON array of provider names.")
    else:
        items = raw.split(",")
    providers = tuple(dict.fromkeys(p.strip().lower() for p in items if p.strip()))
    unknown = [p for p in providers if p not in KNOWN_PROVIDERS]
    if unknown:
        raise SettingsError(
            f"{name}={raw!r} names unknown provider(s): {', '.join(unknown)}. "
            f"Known providers: {', '.join(KNOWN_PROVIDERS)}."
        )
    return providers


def secret_values(env: Mapping[str, str], tracking_uri: str | None) -> tuple[str, ...]:
    """The credential values to scrub: MLflow's secret variables and a URI password."""
    values = [v for name in SECRET_VARIABLES if (v := _get(env, name)) is not None]
    if tracking_uri:
        try:
            password = urlsplit(tracking_uri).password
        except ValueError:
            password = None
        if password:
            values.append(password)
    found = {v for v in values if len(v) >= _MIN_SECRET_CHARS}
    return tuple(sorted(found, key=len, reverse=True))  # longest first: no partial leftovers


def _spool_dir(env: Mapping[str, str]) -> Path | None:
    raw = _get(env, "INSPECT_MLFLOW_SPOOL_DIR")
    if raw is None:
        return None
    path = Path(raw).expanduser()
    if path.exists() and not path.is_dir():
        raise SettingsError(
            f"INSPECT_MLFLOW_SPOOL_DIR={raw!r} is not a directory. Point it at a directory "
            "(created if missing) for writes MLflow could not take, or unset it to use the "
            "default in your cache directory."
        )
    return path


def resolve_spool_dir(env: Mapping[str, str] | None = None) -> Path:
    """The spool directory: ``INSPECT_MLFLOW_SPOOL_DIR``, else the per-user default."""
    env = os.environ if env is None else env
    return _spool_dir(env) or default_spool_dir(env)


def absolute_sqlite_uri(uri: str | None) -> str | None:
    """A ``sqlite:///relative.db`` URI made absolute against the current directory.

    SQLite opens a relative path against whatever directory is current when a connection
    is made, and Inspect changes directory while it sets up tasks loaded from files: the
    path is pinned when the settings are parsed (at run start), so the database is the
    one next to where the eval started. Other URIs are returned as they are.
    """
    prefix = "sqlite:///"
    if uri is None or not uri.startswith(prefix):
        return uri
    path, sep, query = uri[len(prefix) :].partition("?")
    if not path or path == ":memory:" or Path(path).is_absolute():
        return uri
    return f"{prefix}{os.path.abspath(path)}{sep}{query}"


def fingerprint(env: Mapping[str, str] | None = None) -> tuple[str | None, ...]:
    """What the settings depend on: the variables read here and the working directory.

    Equal fingerprints parse to equal settings (a relative sqlite path is resolved
    against the directory), so a caller may keep parsed settings until it changes.
    """
    env = os.environ if env is None else env
    return (os.getcwd(), *(env.get(name) for name in VARIABLES))


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Parse the environment (``os.environ`` by default); raise SettingsError when bad."""
    env = os.environ if env is None else env
    tracking_uri = absolute_sqlite_uri(
        _get(env, "INSPECT_MLFLOW_TRACKING_URI") or _get(env, "MLFLOW_TRACKING_URI")
    )
    log_artifacts = parse_bool(env, _first_set(env, "INSPECT_MLFLOW_LOG_ARTIFACTS"), True)
    mapping_raw = _get(env, "INSPECT_MLFLOW_MAPPING")
    mapping_path = None
    if mapping_raw is not None:
        mapping_path = Path(mapping_raw).expanduser()
        if not mapping_path.is_file():
            raise SettingsError(
                f"INSPECT_MLFLOW_MAPPING={mapping_raw!r}: no such file. Point it at a YAML "
                "mapping (check it with `inspect-mlflow check FILE`), or unset it to use the "
                "built-in default."
            )
    return Settings(
        tracking_uri=tracking_uri,
        experiment_name=_get(env, _first_set(env, "INSPECT_MLFLOW_EXPERIMENT_NAME"))
        or DEFAULT_EXPERIMENT,
        log_artifacts=log_artifacts,
        autolog_enabled=parse_bool(env, "INSPECT_MLFLOW_AUTOLOG_ENABLED", False),
        autolog_providers=parse_providers(env, "INSPECT_MLFLOW_AUTOLOG_MODELS"),
        mapping_path=mapping_path,
        traces=parse_bool(env, _first_set(env, "INSPECT_MLFLOW_TRACES"), True),
        trace_max_spans=int(_parse_number(env, "INSPECT_MLFLOW_TRACE_MAX_SPANS", 1000, int)),
        trace_max_text=int(_parse_number(env, "INSPECT_MLFLOW_TRACE_MAX_TEXT", 20_000, int)),
        flush_timeout=_parse_number(env, "INSPECT_MLFLOW_FLUSH_TIMEOUT", 30.0, float),
        spool_dir=_spool_dir(env),
        max_queue_size=int(_parse_number(env, "INSPECT_MLFLOW_MAX_QUEUE_SIZE", 100_000, int)),
        delivery=_parse_delivery(env),
        secrets=secret_values(env, tracking_uri),
    )


DELIVERY_MODES = ("process", "thread")


def _parse_delivery(env: Mapping[str, str]) -> str:
    raw = _get(env, "INSPECT_MLFLOW_DELIVERY")
    if raw is None:
        return "process"
    if raw.lower() not in DELIVERY_MODES:
        raise SettingsError(
            f"INSPECT_MLFLOW_DELIVERY={raw!r} is not a delivery mode. Use 'process' (the "
            "default: a process beside the eval's evaluates the mapping and writes to MLflow) "
            "or 'thread' (threads of the eval's process do it)."
        )
    return raw.lower()
