"""Where the package's files are: the built-in mapping, the mapping schema, the spool.

``mappings/`` and ``schema/`` live at the top of the repository; the wheel carries copies
under ``inspect_mlflow/_data/`` (see ``pyproject.toml``). A checkout (editable install,
tests) uses the top-level files, so an edit there takes effect without a rebuild; an
installed wheel uses its own copies.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = ["data_root", "default_mapping_path", "default_spool_dir", "schema_path"]

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


def default_spool_dir(env: Mapping[str, str] | None = None) -> Path:
    r"""The per-user cache directory for spool files (``INSPECT_MLFLOW_SPOOL_DIR`` overrides).

    Linux and other POSIX: ``$XDG_CACHE_HOME/inspect-mlflow/spool`` (``~/.cache`` when
    unset); macOS: ``~/Library/Caches/inspect-mlflow/spool``; Windows:
    ``%LOCALAPPDATA%\inspect-mlflow\Cache\spool``.
    """
    env = os.environ if env is None else env
    if sys.platform == "win32":  # pragma: no cover - not exercised in CI
        base = Path(env.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
        return base / "inspect-mlflow" / "Cache" / "spool"
    if sys.platform == "darwin":  # pragma: no cover - not exercised in CI
        return Path.home() / "Library" / "Caches" / "inspect-mlflow" / "spool"
    xdg = env.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "inspect-mlflow" / "spool"
