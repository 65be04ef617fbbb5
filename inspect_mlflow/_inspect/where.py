"""The one line an eval ends with: where its runs are in MLflow and how to open them.

Why: with ``display="none"`` (and in a busy terminal) nothing else tells a user that
anything was logged, nor how to look at it; a file store needs ``mlflow ui`` pointed at
it, which few people know. Printed once per eval run, on stderr.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from inspect_mlflow._notice import NOTICE_LOGGER, StderrLines
from inspect_mlflow._writer.spool import public_uri

__all__ = ["WHERE_LOGGER", "say_where", "where_logged"]

WHERE_LOGGER = f"{NOTICE_LOGGER}.where"
"""Named under the notice logger, at INFO: below the notice handler's WARNING level, so it
is written once, by this module's own handler, in every display mode."""

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
    """Print the line on stderr, in every display mode, as information (not a warning).

    Logged at INFO under :data:`WHERE_LOGGER`: Inspect shows only warnings by default, and
    a line that says where things went must not read as ``WARNING`` (a user would take
    it for a failure); the handler below writes it to stderr itself.
    """
    logging.getLogger(WHERE_LOGGER).info("%s", where_logged(tracking_uri, experiment))


def _install() -> None:
    target = logging.getLogger(WHERE_LOGGER)
    target.setLevel(logging.INFO)
    target.propagate = False  # shown once, here; not again by Inspect at --log-level info
    if not any(isinstance(h, StderrLines) for h in target.handlers):
        target.addHandler(StderrLines(logging.INFO))


_install()
