"""The mapping: load a YAML mapping file, layer it, validate it and compile it.

``load_mapping()`` is the one entry point the hook and the CLI use. Loading is strict and
complete: every problem of every file involved is collected and raised together as
:class:`MappingInvalid`, each one a :class:`MappingError` placed at ``file:line:col``.
"""

from __future__ import annotations

import os
from pathlib import Path

from inspect_mlflow._mapping.compile import compile_layered
from inspect_mlflow._mapping.errors import MappingError, MappingInvalid
from inspect_mlflow._mapping.layering import load_layered_file, load_layered_text
from inspect_mlflow._mapping.model import CompiledMapping
from inspect_mlflow._paths import default_mapping_path

__all__ = [
    "MAPPING_ENV",
    "CompiledMapping",
    "MappingError",
    "MappingInvalid",
    "load_mapping",
    "load_mapping_text",
    "resolve_mapping_path",
]

MAPPING_ENV = "INSPECT_MLFLOW_MAPPING"
"""Environment variable naming a user mapping file."""


def resolve_mapping_path(path: str | Path | None = None) -> Path:
    """The mapping file to use: ``path``, else ``$INSPECT_MLFLOW_MAPPING``, else the default."""
    if path is not None:
        return Path(path).expanduser()
    from_env = os.environ.get(MAPPING_ENV, "").strip()
    if from_env:
        return Path(from_env).expanduser()
    return default_mapping_path()


def load_mapping(path: str | Path | None = None) -> CompiledMapping:
    """Load, layer, validate and compile a mapping file.

    Args:
        path: The mapping file. None means ``$INSPECT_MLFLOW_MAPPING`` when set, else the
            built-in default mapping.

    Returns:
        The compiled mapping; its ``effective`` is the merged plain mapping.

    Raises:
        MappingInvalid: with every problem found, sorted by file and position.
    """
    return compile_layered(load_layered_file(resolve_mapping_path(path)))


def load_mapping_text(
    text: str, name: str = "<mapping>", base_dir: str | Path | None = None
) -> CompiledMapping:
    """Load a mapping given as YAML text (tests, tools); see :func:`load_mapping`.

    Args:
        text: The YAML source.
        name: How to show it in errors.
        base_dir: Where a relative ``extends`` path resolves from (default: cwd).
    """
    return compile_layered(load_layered_text(text, name, base_dir))
