"""What the lazy context views save the engine at its hottest point, ``sample_event``.

Records the hook payloads of a real offline eval (the test suite's ``"ok"`` scenario:
mock model, no network), then evaluates the default mapping's ``sample_event`` rules over
its events twice: once on contexts of lazy views (what the hook does) and once on contexts
built by ``model_dump`` of every payload field (what a straightforward hook would do).
Both must give the same operations, or the script stops. For three sets of events (all of
them, model events only, model events with a 40-message input, as a real agent's
conversation is long) it prints the engine's microseconds per event on each kind of
context, the best of ``--repeats`` repetitions (the machine may be shared: the minimum is
the least noisy), and the ratio.

Usage (from the repository root)::

    .venv/bin/python benchmarks/engine_eval.py
    .venv/bin/python benchmarks/engine_eval.py --repeats 50
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "support"))  # the test suite's payload recorder

from payloads import record_scenario  # noqa: E402

from inspect_mlflow._engine.contexts import context  # noqa: E402
from inspect_mlflow._engine.engine import Engine  # noqa: E402
from inspect_mlflow._mapping import load_mapping  # noqa: E402
from inspect_mlflow._mapping.model import CompiledMapping  # noqa: E402

Build = Callable[[str, Any], dict[str, Any]]


def dumped_context(point: str, data: Any) -> dict[str, Any]:
    """A context with every pydantic field dumped to JSON up front (no lazy views)."""
    doc = {}
    for f in dataclasses.fields(data):
        value = getattr(data, f.name)
        if isinstance(value, pydantic.BaseModel):
            value = value.model_dump(mode="json", exclude_none=True, fallback=str)
        doc[f.name] = value
    doc["point"] = point
    return doc


def run_events(
    mapping: CompiledMapping,
    build: Build,
    events: list[Any],
    starts: list[tuple[str, Any]],
    repeats: int,
) -> tuple[list[float], list[Any]]:
    """Seconds per event of each repetition, and the operations of the last one."""
    times: list[float] = []
    ops: list[Any] = []
    for _ in range(repeats):
        engine = Engine(mapping, clock=lambda: 0.0)
        for point, data in starts:
            engine.handle(point, context(point, data))
        ops = []
        gc.disable()  # as timeit does: a collection would land on whichever path runs
        try:
            began = time.perf_counter()
            for data in events:
                ops.extend(engine.handle("sample_event", build("sample_event", data)))
            times.append((time.perf_counter() - began) / len(events))
        finally:
            gc.enable()
    return times, ops


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="repetitions per row")
    args = parser.parse_args(argv)

    rec = record_scenario("ok")
    mapping = load_mapping()
    starts = [("run_start", rec["run_start"][0]), ("task_start", rec["task_start"][0])]
    models = [d for d in rec["sample_event"] if d.event.event == "model"]
    long = [
        dataclasses.replace(d, event=d.event.model_copy(update={"input": d.event.input * 20}))
        for d in models
    ]
    print(f"{'events':<32} {'n':>4} {'views us':>9} {'model_dump us':>14} {'ratio':>6}")
    for label, events in (
        ("all sample events", rec["sample_event"]),
        ("model events only", models),
        ("model events, 40-message input", long),
    ):
        lazy_times, lazy_ops = run_events(mapping, context, events, starts, args.repeats)
        dump_times, dump_ops = run_events(mapping, dumped_context, events, starts, args.repeats)
        if not lazy_ops or lazy_ops != dump_ops:
            print(f"{label}: the two contexts gave different operations", file=sys.stderr)
            return 1
        lazy, dump = min(lazy_times), min(dump_times)
        print(
            f"{label:<32} {len(events):>4} {lazy * 1e6:>9.1f} {dump * 1e6:>14.1f} "
            f"{dump / lazy:>5.1f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
