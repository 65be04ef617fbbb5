"""The document a rule's expressions read: the point's context plus the engine's own names.

``counter``, ``series`` and ``run`` come from the state of the rule's run; ``for_each``
adds loop names. Semantics are those of ``docs/mapping-language.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from inspect_mlflow._engine.run_state import RunState
from inspect_mlflow._engine.views import MISSING, LazyView
from inspect_mlflow._mapping.checks import COMPUTED_NAMES

__all__ = ["COMPUTED_NAMES", "RuleDocument", "RunScope"]


class RunScope(Protocol):
    """What a rule document needs of the engine: the declared names and the open runs."""

    counter_names: tuple[str, ...]
    series_names: tuple[str, ...]

    def run_state(self, key: str) -> RunState | None:
        """The state of the open run ``key``; None when it is not open."""
        ...


class RuleDocument(LazyView):
    """What an expression sees: the context, plus ``counter``, ``series``, ``run``, loop names.

    Chains to the context instead of copying it; the computed entries are built only
    when an expression reads them.
    """

    __slots__ = ("_base", "_scope", "_run", "_bound")

    def __init__(
        self, base: Mapping[str, Any], scope: RunScope, run: RunState, bound: dict[str, Any]
    ) -> None:
        super().__init__()
        self._base = base
        self._scope = scope
        self._run = run
        self._bound = bound

    def __repr__(self) -> str:
        return f"RuleDocument({self._run.key}, bound={sorted(self._bound)})"

    def bind(self, names: Mapping[str, Any]) -> RuleDocument:
        """A document with loop names added (the computed entries are recomputed)."""
        return RuleDocument(self._base, self._scope, self._run, {**self._bound, **names})

    def get(self, key: Any, default: Any = None) -> Any:
        """Loop names first, then the computed entries (built once), then the context."""
        bound = self._bound
        if key in bound:
            return bound[key]
        if key in COMPUTED_NAMES:
            return super().get(key, default)
        return self._base.get(key, default)

    def refresh(self) -> None:
        """Forget loaded values (after counters or series changed)."""
        dict.clear(self)
        self._complete = False

    def _visible(self) -> list[str]:
        names = [key for key in self._base if key not in self._bound]
        names.extend(name for name in ("counter", "series", "run") if name not in self._base)
        names.extend(self._bound)
        return list(dict.fromkeys(names))

    def _load(self, key: str) -> Any:
        if key in self._bound:
            return self._bound[key]
        run = self._run
        if key == "counter":
            counts = run.counters
            return {
                name: {"count": counts.get(name, 0), "index": _index(counts.get(name, 0))}
                for name in self._scope.counter_names
            }
        if key == "series":
            return {name: run.series.get(name, []) for name in self._scope.series_names}
        if key == "run":
            parent = self._scope.run_state(run.parent) if run.parent else None
            return {
                "kind": run.spec.kind,
                "key": run.key,
                "name": run.name,
                "models": list(run.models),
                "datasets": [{"name": n, "digest": d} for n, d in run.datasets.items()],
                "parent": None
                if parent is None
                else {
                    "kind": parent.spec.kind,
                    "key": parent.key,
                    "name": parent.name,
                    "context": parent.context,
                },
            }
        return self._base.get(key, MISSING)


def _index(count: int) -> int | None:
    """0-based index of the latest increment, null before the first one."""
    return count - 1 if count > 0 else None
