"""Where the package's data files are: the built-in mapping and the mapping schema.

``mappings/`` and ``schema/`` live at the top of the repository; the wheel carries copies
under ``inspect_mlflow/_data/`` (see ``pyproject.toml``). A checkout (editable install,
tests) uses the top-level files, so an edit there takes effect without a rebuild; an
installed wheel uses its own copies.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["data_root", "default_mapping_path", "schema_path"]

_PACKAGE = Path(__file__).resolve().parent


def _checkout_root() -> Path | None:
    """The repository root when this package is imported from a checkout, else None."""
    root = _PACKAGE.parent
    if (root / "pyproject.toml").is_file() and (root / "mappings" / "default.yaml").is_file():
        return root
    return None


def data_root() -> Path:
    """The directory holding ``mappings/`` and ``schema/``."""
    return _checkout_root() or (_PACKAGE / "_data")


def default_mapping_path() -> Path:
    """Path of the built-in mapping, ``mappings/default.yaml``."""
    return data_root() / "mappings" / "default.yaml"


def schema_path() -> Path:
    """Path of the mapping JSON Schema, ``schema/mapping.schema.json``."""
    return data_root() / "schema" / "mapping.schema.json"
