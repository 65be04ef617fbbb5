"""Provider autolog: switch MLflow's LLM SDK integrations on for a run, and only those off.

A provider is switched on only when both its MLflow flavor and its SDK import, and only
when the user has not already switched it on themselves; at run end we switch off exactly
what we switched on, so the user's own MLflow settings are left as they were.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging

logger = logging.getLogger(__name__)

PROVIDERS: dict[str, tuple[str, str]] = {
    "openai": ("mlflow.openai", "openai"),
    "anthropic": ("mlflow.anthropic", "anthropic"),
    "langchain": ("mlflow.langchain", "langchain"),
    "litellm": ("mlflow.litellm", "litellm"),
    "mistral": ("mlflow.mistral", "mistralai"),
    "groq": ("mlflow.groq", "groq"),
    "cohere": ("mlflow.cohere", "cohere"),
    "gemini": ("mlflow.gemini", "google.genai"),
    "bedrock": ("mlflow.bedrock", "boto3"),
}
"""Provider name -> (MLflow flavor module, provider SDK module)."""


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _already_on(flavor: str) -> bool:
    from mlflow.utils.autologging_utils import autologging_is_disabled

    return not autologging_is_disabled(flavor)


def enable(providers: tuple[str, ...] | list[str]) -> list[str]:
    """Switch on autolog for each listed provider that is available and not already on.

    Returns:
        The providers this call switched on (pass them to :func:`disable` later).
    """
    switched: list[str] = []
    for name in providers:
        flavor_module, sdk = PROVIDERS[name]
        # The SDK first: finding an MLflow flavor imports MLflow itself (seconds, on the
        # event loop), which a run with no provider SDK installed need not pay here.
        if not (_importable(sdk) and _importable(flavor_module)):
            logger.debug("autolog: skipping %s (MLflow flavor or SDK not installed)", name)
            continue
        try:
            if _already_on(name):
                logger.debug("autolog: %s already on; leaving it as the user set it", name)
                continue
            importlib.import_module(flavor_module).autolog(silent=True)
        except Exception as err:  # an SDK version MLflow cannot patch must not stop the eval
            logger.warning("autolog: could not switch on %s: %s", name, err)
            continue
        switched.append(name)
    return switched


def disable(providers: list[str]) -> None:
    """Switch off autolog for providers that :func:`enable` switched on."""
    for name in providers:
        try:
            importlib.import_module(PROVIDERS[name][0]).autolog(disable=True, silent=True)
        except Exception as err:
            logger.warning("autolog: could not switch off %s: %s", name, err)
