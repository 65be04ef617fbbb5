"""MLflow-safe keys and bounded text: helpers shared by the loader, functions and engine.

MLflow rejects param, metric and tag keys with characters outside
``letters digits _ - . / space :``, keys longer than 250 characters and keys that would
resolve to another path (``a//b``, ``a/../b``, a leading ``/``). A key built from data
(a model name such as ``mockllm/model@v1``) must still land, so :func:`safe_key` rewrites
any text deterministically into a key that :func:`is_valid_key` accepts.

Only ASCII letters and digits are kept in keys: some MLflow backends (Windows, Databricks)
accept fewer characters than the local file store, and a deterministic, portable key is
worth more than a faithful non-ASCII one. Artifact paths are file names, which every
store takes in Unicode: :func:`safe_path` keeps letters and digits of any script (a task
named ``数学`` logs ``eval_logs/数学.json``).
"""

from __future__ import annotations

import itertools
import json
import math
import posixpath
import re
import unicodedata
from typing import Any

MAX_KEY_LENGTH = 250
"""MLflow's limit on param, metric and tag key length."""

MAX_TAG_CHARS = 8000
"""MLflow's limit on a tag value, of a run and of a trace alike (``MAX_TAG_VAL_LENGTH``
and ``MAX_TRACE_TAG_VAL_LENGTH`` in ``mlflow.utils.validation``)."""

TRUNCATION_MARKER = "...[truncated]"
"""Appended to text cut by :func:`truncate_text`, so a reader knows it was cut."""

_VALID_KEY = re.compile(r"[A-Za-z0-9_\-. /:]+")
_INVALID_CHAR = re.compile(r"[^A-Za-z0-9_\-. /:]")
_DOT_RUN = re.compile(r"\.{2,}")


def is_valid_key(text: str) -> bool:
    """Tell whether MLflow would accept ``text`` as a param, metric or tag key.

    The loader uses it to reject a fixed key at load time instead of mid-run.

    Args:
        text: The candidate key.

    Returns:
        True when the key has only allowed characters, is 1..250 characters long and
        does not resolve to another path.

    >>> is_valid_key("sample/accuracy"), is_valid_key("a//b"), is_valid_key("/a")
    (True, False, False)
    """
    if not isinstance(text, str) or not text or len(text) > MAX_KEY_LENGTH:
        return False
    if not _VALID_KEY.fullmatch(text):
        return False
    normal = posixpath.normpath(text)
    return normal == text and normal != "." and not normal.startswith(("..", "/"))


def _normalise_segments(text: str) -> str:
    """Drop empty and ``.`` path segments (collapses ``//``, leading and trailing ``/``)."""
    segments = [part for part in text.split("/") if part not in ("", ".")]
    return "/".join(segments)


def safe_key(text: str) -> str:
    """Rewrite ``text`` into a key MLflow accepts, the same way every time.

    Characters MLflow rejects become ``_``; runs of dots collapse to one; empty and
    ``.`` path segments are dropped (so ``//`` collapses and a leading ``/`` goes); the
    result is cut at 250 characters. An empty result becomes ``_``.

    Args:
        text: Any text, usually a key template filled with data.

    Returns:
        A key for which :func:`is_valid_key` is true.

    >>> safe_key("mockllm/model@v1")
    'mockllm/model_v1'
    >>> safe_key("/a//b/../c")
    'a/b/c'
    """
    key = _INVALID_CHAR.sub("_", str(text))
    key = _DOT_RUN.sub(".", key)
    key = _normalise_segments(key)
    if len(key) > MAX_KEY_LENGTH:
        key = _normalise_segments(key[:MAX_KEY_LENGTH])
    return key or "_"


_PATH_PUNCTUATION = frozenset("_-. /:()")
"""Non-alphanumeric characters kept in artifact paths: the key set, plus parentheses."""


def _path_char(char: str) -> str:
    """``char`` when an artifact path may hold it, else ``_``."""
    if char in _PATH_PUNCTUATION or (char.isascii() and char.isalnum()):
        return char
    if not char.isascii() and unicodedata.category(char)[0] in "LNM":
        return char  # letters, digits and combining marks of any script
    return "_"


def safe_path(text: str) -> str:
    """Rewrite ``text`` into an artifact path every store takes, the same way every time.

    Like :func:`safe_key`, but letters, digits and combining marks of every script are
    kept (artifact paths are file names, and stores take them in Unicode), and so are
    parentheses. Other characters (``#``, ``%``, a backslash, ``?``, ...) become ``_``.

    Args:
        text: Any text, usually an artifact path template filled with data.

    Returns:
        A relative path without ``..``, ``//`` or a leading ``/``, at most 250 characters.

    >>> safe_path("eval_logs/数学.json"), safe_path("a#b/../c (d).json")
    ('eval_logs/数学.json', 'a_b/c (d).json')
    """
    text = str(text)
    if _VALID_KEY.fullmatch(text) is None:
        text = "".join(_path_char(char) for char in text)
    key = _DOT_RUN.sub(".", text)
    key = _normalise_segments(key)
    if len(key) > MAX_KEY_LENGTH:
        key = _normalise_segments(key[:MAX_KEY_LENGTH])
    return key or "_"


def truncate_text(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` characters, ending with a visible marker when cut.

    MLflow truncates long params and tags silently (or rejects them); a marker makes
    the cut visible in the UI.

    Args:
        text: The text to bound.
        limit: The maximum length of the result, marker included.

    Returns:
        ``text`` unchanged when short enough, else its start followed by
        ``...[truncated]`` (just the first ``limit`` characters when ``limit`` is
        smaller than the marker).

    >>> truncate_text("abcdefghijklmnopqrstuvwxyz", 20)
    'abcdef...[truncated]'
    """
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if len(text) <= limit:
        return text
    keep = limit - len(TRUNCATION_MARKER)
    if keep <= 0:
        return text[:limit]
    return text[:keep] + TRUNCATION_MARKER


def to_text(value: Any) -> str:
    """Render a JSON value as text, for key placeholders, ``format`` and param values.

    Strings stay as they are; ``true``/``false``/``null`` are written as in JSON;
    integral floats keep their ``.0`` (``1.0``) so the text says what the value was;
    lists and objects become compact JSON.

    Args:
        value: A JSON-like value.

    Returns:
        Its text.

    >>> to_text("a"), to_text(True), to_text(None), to_text(2), to_text([1, "x"])
    ('a', 'true', 'null', '2', '[1,"x"]')
    """
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else json.dumps(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def finite(value: Any, *, as_text: bool = False) -> Any:
    """``value`` with NaN and infinities replaced, at any depth: JSON has no such numbers.

    They become null, what MLflow's UI parses in tables and documents; with ``as_text``
    they become their text (``"nan"``, ``"inf"``, ``"-inf"``) and keys become text too,
    for trace values a person reads, where a null would hide what was there. Objects and
    lists are copied only where something changed (tuples become lists), so the common
    case, nothing to replace, allocates nothing.

    >>> finite({"a": [1.5, float("nan")]}), finite([float("-inf")], as_text=True)
    ({'a': [1.5, None]}, ['-inf'])
    """
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return str(value) if as_text else None
    if isinstance(value, dict):
        changed: dict[Any, Any] | None = None
        for index, (key, item) in enumerate(value.items()):
            new = finite(item, as_text=as_text)
            name = str(key) if as_text and not isinstance(key, str) else key
            if changed is None and (new is not item or name is not key):
                changed = dict(itertools.islice(value.items(), index))
            if changed is not None:
                changed[name] = new
        return value if changed is None else changed
    if isinstance(value, (list, tuple)):
        items: list[Any] | None = None
        for index, item in enumerate(value):
            new = finite(item, as_text=as_text)
            if items is None and new is not item:
                items = list(value[:index])
            if items is not None:
                items.append(new)
        if items is not None:
            return items
        return list(value) if isinstance(value, tuple) else value
    return value


_MODEL_NAME_REFUSED = re.compile(r"[/:.%\"']")
"""Characters MLflow refuses in a LoggedModel name (``_validate_logged_model_name``)."""

MAX_MODEL_NAME_LENGTH = 250


def logged_model_name(identity: str) -> str:
    """A LoggedModel name for a model identity: refused characters become ``_``.

    ``openai/gpt-4.1`` is ``openai_gpt-4_1``. Two identities may share a name; the
    identity itself (kept in a tag) is what finds the model again.

    >>> logged_model_name("openai/gpt-4.1")
    'openai_gpt-4_1'
    """
    name = _MODEL_NAME_REFUSED.sub("_", identity).strip() or "model"
    return name[:MAX_MODEL_NAME_LENGTH]
