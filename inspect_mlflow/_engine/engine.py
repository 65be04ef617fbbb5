"""The mapping engine: a lifecycle point's context in, plain write operations out.

Pure and synchronous: no MLflow, no threads, no Inspect. The hook builds the context
document (``contexts.context``), calls :meth:`Engine.handle` under its own lock (calls must
be serialised: counters, open runs and ``unique`` sets live here), and queues the
returned operations for the writer. Semantics are those of ``docs/mapping-language.md``:

1. runs whose ``open`` is this point are opened (parents first);
2. the point's rules run in order, each: ``when`` -> ``unique`` -> ``count`` ->
   ``collect`` -> ``for_each`` -> outputs (params, tags, metrics, table row, record,
   artifact, trace) per element;
3. runs whose ``close`` is this point are closed, their open children first.

Nothing here raises into the hook: an expression that fails skips only that output (or
that rule element) and is counted in :attr:`Engine.problems` with where it came from.

The engine is layered, one job per module: :mod:`.reading` (evaluating expressions,
counting problems, safe keys) <- :mod:`.runs` (the run state machine) and
:mod:`.builders` (models, datasets, traces) <- :mod:`.rules` (the rule pipeline) <- this
module (one point: open, apply, close). Problems are in :mod:`.problems`, the rule
document in :mod:`.rule_document`, per-run state in :mod:`.run_state`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from inspect_mlflow._engine.problems import PROBLEM_KINDS, Problem, Problems
from inspect_mlflow._engine.rules import RulePipeline
from inspect_mlflow._mapping.model import CompiledMapping, Expr
from inspect_mlflow._operations import Operation

__all__ = ["PROBLEM_KINDS", "Engine", "Problem", "Problems"]


class Engine(RulePipeline):
    """Evaluates a compiled mapping at each lifecycle point and returns write operations.

    One engine serves one logging session. It is not thread-safe: the caller serialises
    :meth:`handle` calls (the hook holds a lock); under that rule counters are exact and
    no step is used twice for one key in one run.

    Args:
        mapping: The compiled, validated mapping.
        log_artifacts: False drops tables, records and artifacts (``AppendRows`` and
            ``LogArtifact``); they are then not even evaluated.
        traces: False skips ``trace`` outputs without building them (at ``sample_end`` a
            trace with a span per event is the costliest output).
        clock: Seconds since the epoch (for run start/end and metric timestamps);
            replaceable in tests.
        problems: Where problems are counted (default: a :class:`Problems`, which logs
            the first of each kind); the dry run passes one that keeps every place.
        on_search: Called after each expression is evaluated, with the expression, the
            document and the value (``views.MISSING`` when it raised): how the dry run
            sees which expressions never gave a value. None (the default) costs nothing.
        explain_error: How an expression that raised is described in its problem
            (default: its text and the error); the dry run names the likely typo.
    """

    def __init__(
        self,
        mapping: CompiledMapping,
        *,
        log_artifacts: bool = True,
        traces: bool = True,
        clock: Callable[[], float] = time.time,
        problems: Problems | None = None,
        on_search: Callable[[Expr, Any, Any], None] | None = None,
        explain_error: Callable[[Expr, Exception], str] | None = None,
    ) -> None:
        self.log_artifacts = log_artifacts
        self.traces = traces
        self._clock = clock
        super().__init__(mapping)
        if problems is not None:
            self.problems = problems
        self.on_search = on_search
        self.explain_error = explain_error

    # -- public API -------------------------------------------------------------------

    def handle(self, point: str, ctx: Mapping[str, Any]) -> list[Operation]:
        """Open runs, apply the point's rules, close runs; return the writes, in order.

        Args:
            point: The lifecycle point that fired.
            ctx: Its context document (``contexts.context``); borrowed for this call only.

        Returns:
            Operations holding only plain JSON values (safe to queue and spool).
        """
        now_ms = int(self._clock() * 1000)
        ops: list[Operation] = []
        keys: dict[str, str | None] = {}
        for spec in self._opens.get(point, ()):
            self._guard(spec.where, self._open, spec, ctx, now_ms, ops, keys)
        for rule in self.mapping.rules.get(point, ()):
            self._guard(rule.where, self._apply, rule, ctx, now_ms, ops, keys)
        for spec in self._closes.get(point, ()):
            self._guard(spec.where, self._close_kind, spec, ctx, now_ms, ops, keys)
        return ops

    def problem_summary(self) -> list[str]:
        """One line per kind of problem counted so far (empty when all went well)."""
        return self.problems.summary()
