"""The one line an eval ends with: where its runs are in MLflow and how to open them.

Why: with ``display="none"`` (and in a busy terminal) nothing else tells a user that
anything was logged, nor how to look at it; a file store needs ``mlflow ui`` pointed at
it, which few people know. Printed once per eval run, through :mod:`_notice`.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from inspect_mlflow._notice import NOTICE_LOGGER
from inspect_mlflow._writer.spool import public_uri

__all__ = ["WHERE_LOGGER", "say_where", "where_logged"]

WHERE_LOGGER = f"{NOTICE_LOGGER}.where"
"""A child of the notice logger (so it reaches stderr with ``display="none"``), named
apart so that code counting real warnings can leave this line out."""

_FILE_SCHEMES = ("", "file", "sqlite", "mysql", "postgresql", "mssql")
"""Stores read directly (no tracking server): ``mlflow ui`` must be started on them."""


def where_logged(tracking_uri: str, experiment: str) -> str:
    """The line: the experiment, and the command or address that shows it.

    Args:
        tracking_uri: Where the hook logged (credentials in it are masked).
        experiment: The experiment's name.
    """
    shown = public_uri(tracking_uri)
    scheme = urlsplit(tracking_uri).scheme.split("+")[0].lower()
    if scheme in ("http", "https"):
        return f"inspect-mlflow: logged to MLflow experiment '{experiment}' at {shown.rstrip('/')}"
    if scheme == "databricks" or scheme not in _FILE_SCHEMES:
        return f"inspect-mlflow: logged to MLflow experiment '{experiment}' ({shown})"
    return (
        f"inspect-mlflow: logged to MLflow experiment '{experiment}'; to see it run: "
        f"mlflow ui --backend-store-uri {shown}"
    )


def say_where(tracking_uri: str, experiment: str) -> None:
    """Log the line as a notice: Inspect shows it in every display mode."""
    logging.getLogger(WHERE_LOGGER).warning("%s", where_logged(tracking_uri, experiment))
