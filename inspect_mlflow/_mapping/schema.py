"""Check loaded mapping data against ``schema/mapping.schema.json``, with located errors.

The schema is the single description of the mapping's shape (editors use it too, through
``# yaml-language-server: $schema=...``). ``jsonschema`` reports a data path per problem;
this module turns each into a :class:`MappingError` at the right line and column, with
wording for people and a "did you mean" hint for misspelt keys and lifecycle points.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

from inspect_mlflow._mapping.errors import DataPath, MappingError
from inspect_mlflow._mapping.model import LIFECYCLE_POINTS
from inspect_mlflow._mapping.yaml_load import LoadedYaml
from inspect_mlflow._paths import schema_path

__all__ = ["closest", "did_you_mean", "load_schema", "schema_errors"]

EXPRESSION_TITLE = "JMESPath expression"
"""The ``title`` the schema gives every expression-valued property."""

_JSON_TYPES = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "list",
    dict: "map",
    type(None): "null",
}

_TYPE_WORDS = {
    "string": "a string",
    "object": "a map",
    "array": "a list",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "null": "null",
}


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The mapping JSON Schema (read once per process)."""
    with schema_path().open(encoding="utf-8") as handle:
        return json.load(handle)


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(load_schema())


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice closest to ``word`` when one is close enough to be a likely typo."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(word: str, choices: Iterable[str], what: str = "allowed") -> str | None:
    """A hint: ``did you mean 'x'?`` or, failing that, the list of allowed choices."""
    options = sorted(set(choices))
    guess = closest(word, options)
    if guess is not None:
        return f"did you mean {guess!r}?"
    if options:
        return f"{what}: {', '.join(options)}"
    return None


def _type_name(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _expected(types: Any) -> str:
    names = [types] if isinstance(types, str) else list(types)
    words = [_TYPE_WORDS.get(name, name) for name in names if name != "null"]
    text = " or ".join(words) if words else "null"
    return f"{text} (or null)" if "null" in names and words else text


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _convert(loaded: LoadedYaml, error: ValidationError) -> list[MappingError]:
    path: DataPath = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    instance = error.instance
    kind = error.validator

    if kind == "additionalProperties" and isinstance(instance, dict):
        known = list(schema.get("properties", {}))
        out = []
        for extra in instance:
            if extra in known:
                continue
            if path == ("rules",):
                message = f"unknown lifecycle point {extra!r}"
                hint = did_you_mean(extra, LIFECYCLE_POINTS, "points")
            else:
                message = f"unknown key {extra!r}"
                hint = did_you_mean(extra, known, "allowed keys")
            out.append(loaded.error((*path, extra), message, hint, key=True))
        return out
    if kind == "enum" and schema.get("enum") == list(LIFECYCLE_POINTS):
        hint = did_you_mean(str(instance), LIFECYCLE_POINTS, "points")
        return [loaded.error(path, f"{_short(instance)} is not a lifecycle point", hint)]
    if kind == "enum":
        choices = ", ".join(map(str, schema.get("enum", [])))
        return [loaded.error(path, f"{_short(instance)} is not one of: {choices}")]
    if kind == "type":
        message = f"expected {_expected(error.validator_value)}, got {_type_name(instance)}"
        hint = None
        if schema.get("title") == EXPRESSION_TITLE and isinstance(instance, list):
            hint = "an expression is text; for a constant list write {const: [...]}"
        return [loaded.error(path, message, hint)]
    if kind == "required":
        missing = [name for name in error.validator_value if name not in instance]
        return [loaded.error(path, f"missing required key {name!r}") for name in missing]
    if kind == "dependencies" and isinstance(instance, dict):
        out = []
        for name, needs in error.validator_value.items():
            if name in instance:
                missing = [need for need in needs if need not in instance]
                if missing:
                    wanted = " and ".join(f"`{need}`" for need in missing)
                    out.append(loaded.error((*path, name), f"`{name}` needs {wanted}", key=True))
        return out
    if kind == "const":
        return [
            loaded.error(path, f"must be {_short(error.validator_value)}, got {_short(instance)}")
        ]
    if kind == "pattern":
        # propertyNames errors carry the key as instance and the map as path.
        is_key = isinstance(instance, str) and instance in _keys_at(loaded, path)
        where = (*path, instance) if is_key else path
        message = f"{_short(instance)} is not a valid name"
        hint = "use letters, digits and _ (not starting with a digit)"
        if error.validator_value == "^[A-Za-z0-9_.-]+$":
            message = f"{_short(instance)} is not a valid rule id"
            hint = "use letters, digits, _, - and ."
        elif error.validator_value == "^[A-Za-z_][A-Za-z0-9_-]*$":
            hint = "use letters, digits, _ and - (not starting with a digit or -)"
        return [loaded.error(where, message, hint, key=is_key)]
    if kind == "minLength":
        is_key = isinstance(instance, str) and instance in _keys_at(loaded, path)
        where = (*path, instance) if is_key else path
        return [loaded.error(where, "must not be empty", key=is_key)]
    if kind == "minProperties":
        return [loaded.error(path, "must not be empty")]
    if kind == "uniqueItems":
        return [loaded.error(path, "has duplicate entries")]
    return [loaded.error(path, error.message)]


def _keys_at(loaded: LoadedYaml, path: DataPath) -> frozenset[str]:
    node: Any = loaded.data
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return frozenset()
    return frozenset(node) if isinstance(node, dict) else frozenset()


def schema_errors(loaded: LoadedYaml) -> list[MappingError]:
    """Every schema violation of ``loaded.data``, placed in ``loaded.file``.

    Args:
        loaded: One mapping file as loaded by ``yaml_load`` (not yet layered).

    Returns:
        The problems found (empty when the data fits the schema), unsorted.
    """
    out: list[MappingError] = []
    for error in _validator().iter_errors(loaded.data):
        out.extend(_convert(loaded, error))
    return out
