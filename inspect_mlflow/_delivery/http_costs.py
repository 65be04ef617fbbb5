"""Per-request work of MLflow's HTTP client that the delivery process does once instead.

Why: every MLflow request first asks whether it runs inside Databricks (its request-header
providers try to import ``pyspark``, twice per request: each failed import searches
every entry of ``sys.path`` again) and asks ``requests`` for the environment's proxies
for its URL (which reads every environment variable, twice, per request). With one
``start_trace`` per sample these were about a third of the client's CPU per trace. The
delivery process is ours alone and its environment changes only when a session opens
(it takes the eval's), so the answers are kept:

- a module that is not installed fails to import at once, without a path search and
  without a ``sys.modules`` entry (MLflow tests ``"pyspark" in sys.modules`` elsewhere);
- the proxies for a scheme and host are looked up once per environment.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ABSENT_BY_FINDER", "cache_environ_proxies", "fail_absent_imports", "forget_proxies"]

ABSENT_BY_FINDER = ("pyspark",)
"""Probed modules that must stay out of ``sys.modules`` when they are not installed."""

_proxy_cache: dict[tuple[str, str, str | None], dict[str, str]] = {}
_proxies_cached = False


class _AbsentModules(importlib.abc.MetaPathFinder):
    """Makes imports of the given top-level modules (not installed) fail at once."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = frozenset(names)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


def fail_absent_imports(names: Sequence[str] = ABSENT_BY_FINDER) -> list[str]:
    """Put a finder first on ``sys.meta_path`` for those of ``names`` not installed now.

    Returns:
        The names it covers (none when all are installed: nothing is added).
    """
    if any(isinstance(finder, _AbsentModules) for finder in sys.meta_path):
        return []
    absent = []
    for name in names:
        try:
            if name not in sys.modules and importlib.util.find_spec(name) is None:
                absent.append(name)
        except (ImportError, ValueError):
            continue  # cannot tell: leave its imports alone
    if absent:
        sys.meta_path.insert(0, _AbsentModules(absent))
    return absent


def cache_environ_proxies() -> None:
    """Have ``requests`` look up the environment's proxies once per scheme and host."""
    global _proxies_cached
    import requests.sessions

    if _proxies_cached:
        return
    _proxies_cached = True
    original: Callable[..., dict[str, str]] = requests.utils.get_environ_proxies

    def get_environ_proxies(url: str, no_proxy: str | None = None) -> dict[str, str]:
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc, no_proxy)
        found = _proxy_cache.get(key)
        if found is None:
            found = _proxy_cache[key] = original(url, no_proxy=no_proxy)
        return dict(found)

    requests.sessions.get_environ_proxies = get_environ_proxies  # type: ignore[assignment]


def forget_proxies() -> None:
    """The environment changed (a session opened with the eval's): look proxies up again."""
    _proxy_cache.clear()
