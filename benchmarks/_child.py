"""One timed eval in a fresh process: the unit the overhead benchmark repeats.

Run by ``overhead.py`` as ``python benchmarks/_child.py --samples N --out FILE``, with
``MLFLOW_TRACKING_URI`` set (hook on) or unset (hook off). Each eval gets a process of
its own so that its peak memory (``ru_maxrss``) is its own and the two arms start alike.

It writes one JSON object to ``--out``:

- ``wall``: seconds from building the model (where Inspect loads the hooks and asks them
  whether they are on) to the end of Inspect's ``eval()`` call. Interpreter start-up and
  imports, identical in both arms, are outside; everything the hook does, including
  reading its settings and mapping, MLflow's import and the wait for delivery at run
  end, is inside;
- ``maxrss_kb``: the process's peak resident memory;
- ``delivery_cpu``, ``delivery_maxrss_kb``: CPU seconds and peak memory of the hook's
  delivery process (None with ``INSPECT_MLFLOW_DELIVERY=thread`` or the hook off);
- ``holds``: how long hook callbacks held the event loop (p50, p99, max, count, and the
  worst callback by name). A callback holds the loop from each resumption to its next
  suspension: an ``async`` hook method that awaits a thread holds it only before and after
  the await. Measured by wrapping :class:`MlflowTrackingHook`'s methods in this process
  with ``time.perf_counter`` around every step of the coroutine; the package itself is not
  instrumented. Garbage-collection pauses inside a step are left out: with thousands of
  samples in memory a full collection of the eval's heap takes 0.2-0.4 s, and it runs
  wherever an allocation happens to trigger it, in Inspect's code as in a callback;
- ``gc_pause_max``: the longest of those pauses in the whole eval, in seconds;
- ``first_sample_start``, ``after_last_sample``: seconds from the start of the clock to
  the first sample's start, and from the last sample's completion (Inspect's own
  ``completed_at`` stamps in the returned log) to the end of ``eval()``: the wait at the
  end of an eval, hook off (Inspect's own closing work) and on.

``--foreign`` runs the same eval where ``inspect_mlflow`` is another package (the other
MLflow integration for Inspect, in its own virtual environment): the demo task is loaded
from this checkout's file, and nothing of the hook is instrumented.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import resource
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Generator
from datetime import datetime
from pathlib import Path
from typing import Any

from _cpu import peak_rss_kb, process_cpu


class _GcClock:
    """Time the interpreter spent in garbage collection so far, from ``gc.callbacks``."""

    def __init__(self) -> None:
        self.total = 0.0
        self.longest = 0.0
        self._began = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._began = now
            return
        pause = now - self._began
        self.total += pause
        self.longest = max(self.longest, pause)


GC = _GcClock()


def _now() -> float:
    """A clock that stands still during garbage collection."""
    return time.perf_counter() - GC.total


class _Holds:
    """Per-callback loop-holding times, in seconds."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.worst: dict[str, float] = defaultdict(float)
        self.total: dict[str, float] = defaultdict(float)
        self.longest: dict[str, float] = defaultdict(float)

    def add(self, name: str, seconds: float) -> None:
        self.times.append(seconds)
        self.total[name] += seconds
        if seconds > self.worst[name]:
            self.worst[name] = seconds

    def elapsed(self, name: str, seconds: float) -> None:
        """A callback's whole duration, awaits included (the eval waits for it)."""
        self.longest[name] = max(self.longest[name], seconds)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.times)
        if not ordered:
            empty: dict[str, float] = {}
            return {"count": 0, "p50": 0.0, "p99": 0.0, "max": 0.0, "worst": empty}

        def pct(p: float) -> float:
            return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

        worst = dict(sorted(self.worst.items(), key=lambda kv: -kv[1])[:5])
        return {
            "count": len(ordered),
            "p50": pct(50),
            "p99": pct(99),
            "max": ordered[-1],
            "worst": worst,
            "total": dict(sorted(self.total.items(), key=lambda kv: -kv[1])),
            "elapsed": dict(sorted(self.longest.items(), key=lambda kv: -kv[1])[:5]),
        }


def _stepped(gen: Generator[Any, Any, Any], record: Callable[[float], None]) -> Any:
    """Drive a coroutine's ``__await__`` generator, timing each step between suspensions."""
    value: Any = None
    error: BaseException | None = None
    longest = 0.0
    while True:
        began = _now()
        try:
            if error is not None:
                yielded = gen.throw(error)
            else:
                yielded = gen.send(value)
        except StopIteration as stop:
            record(max(longest, _now() - began))
            return stop.value
        except BaseException:
            record(max(longest, _now() - began))
            raise
        longest = max(longest, _now() - began)
        error, value = None, None
        try:
            value = yield yielded
        except BaseException as thrown:  # delivered back into the coroutine
            error = thrown


class _Timed:
    def __init__(self, coro: Any, record: Callable[[float], None]) -> None:
        self._coro = coro
        self._record = record

    def __await__(self) -> Generator[Any, Any, Any]:
        return _stepped(self._coro.__await__(), self._record)


def instrument(holds: _Holds) -> None:
    """Wrap every ``on_*`` method and ``enabled`` of the hook class with timers."""
    from inspect_mlflow._inspect.hook import MlflowTrackingHook

    for name, original in list(vars(MlflowTrackingHook).items()):
        if name.startswith("on_") and callable(original):

            def make(method: Any, label: str) -> Any:
                async def timed(self: Any, data: Any) -> Any:
                    began = time.perf_counter()
                    try:
                        return await _Timed(method(self, data), lambda s: holds.add(label, s))
                    finally:
                        holds.elapsed(label, time.perf_counter() - began)

                return timed

            setattr(MlflowTrackingHook, name, make(original, name))

    enabled = MlflowTrackingHook.enabled

    def timed_enabled(self: Any) -> bool:
        began = time.perf_counter()
        try:
            return enabled(self)
        finally:
            holds.add("enabled", time.perf_counter() - began)

    MlflowTrackingHook.enabled = timed_enabled  # type: ignore[method-assign]


DEMO_FILE = Path(__file__).resolve().parents[1] / "inspect_mlflow" / "_commands" / "demo.py"


def _demo() -> Any:
    """This checkout's demo module, loaded from its file (``inspect_mlflow`` may be another's)."""
    spec = importlib.util.spec_from_file_location("_benchmark_demo", DEMO_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _model(latency: float) -> Any:
    """The demo's mock model; with ``latency``, each call first waits that many seconds.

    The wait is asynchronous, as a real provider's is: the event loop is free meanwhile,
    which is what the hook's background threads use.
    """
    demo = _demo()
    answer = demo.answer
    if latency <= 0:
        return demo.demo_model()
    import anyio
    from inspect_ai.model import get_model

    async def slow_answer(*args: Any) -> Any:
        await anyio.sleep(latency)
        return answer(*args)

    return get_model("mockllm/model", custom_outputs=slow_answer)


def _delivery_process() -> int | None:
    """The pid of the hook's delivery process, if this eval started one."""
    remote = sys.modules.get("inspect_mlflow._delivery.remote")
    process = getattr(remote, "_process", None)
    return process.pid if process is not None and not process.gone else None


def import_cost(out_path: str) -> int:
    """Peak memory and CPU that importing the hook's MLflow side adds to an Inspect process."""
    import inspect_ai  # noqa: F401
    from inspect_ai import eval as _  # noqa: F401

    import inspect_mlflow._inspect.hook  # noqa: F401

    before = resource.getrusage(resource.RUSAGE_SELF)
    import inspect_mlflow._writer.mlflow_sink  # noqa: F401
    import inspect_mlflow._writer.mlflow_sink.trace_send  # noqa: F401

    after = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "mb": (after.ru_maxrss - before.ru_maxrss) / 1024,
        "cpu": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
    }
    with open(out_path, "w", encoding="utf-8") as out:
        json.dump(result, out)
    return 0


def delivery_startup(out_path: str) -> int:
    """CPU and memory of a delivery process before its first point, measured in a fresh one.

    What ``process.main`` does before its message loop (interpreter start, our modules,
    MLflow's import), plus loading the default mapping and the session's modules as its
    first ``open`` does: the once-per-process cost that per-sample figures leave out.
    """
    import inspect_mlflow._delivery.process as process

    process.prepare_http()
    process._import_mlflow()
    import inspect_mlflow._delivery.session  # noqa: F401
    from inspect_mlflow._mapping import load_mapping

    load_mapping(None)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {"cpu": usage.ru_utime + usage.ru_stime, "mb": usage.ru_maxrss / 1024}
    with open(out_path, "w", encoding="utf-8") as out:
        json.dump(result, out)
    return 0


def _sample_times(logs: Any, ended: float) -> tuple[float | None, float | None]:
    """(first sample's start, wait after the last sample's completion), in seconds.

    The start is measured from ``ended`` backwards like the wait, both on the wall clock
    of Inspect's ``started_at``/``completed_at`` stamps.
    """
    starts, ends = [], []
    for log in logs or []:
        for sample in log.samples or []:
            if sample.started_at:
                starts.append(datetime.fromisoformat(sample.started_at).timestamp())
            if sample.completed_at:
                ends.append(datetime.fromisoformat(sample.completed_at).timestamp())
    if not ends:
        return None, None
    return (min(starts) if starts else None), ended - max(ends)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, required=True)
    parser.add_argument("--max-samples", type=int, default=20)
    parser.add_argument("--out", required=True)
    parser.add_argument("--model-latency", type=float, default=0.0)
    parser.add_argument("--import-only", action="store_true")
    parser.add_argument("--delivery-startup", action="store_true")
    parser.add_argument("--foreign", action="store_true", help="inspect_mlflow is not ours")
    args = parser.parse_args(argv)
    if args.import_only:
        return import_cost(args.out)
    if args.delivery_startup:
        return delivery_startup(args.out)

    from inspect_ai import eval as inspect_eval

    holds = _Holds()
    if not args.foreign:
        instrument(holds)
    task = _demo().demo_task(args.samples, name="overhead")
    gc.collect()
    with tempfile.TemporaryDirectory(prefix="inspect-overhead-") as log_dir:
        began = time.perf_counter()
        began_wall = time.time()
        model = _model(args.model_latency)  # Inspect loads the hooks here and asks them
        logs = inspect_eval(
            task, model=model, log_dir=log_dir, display="none", max_samples=args.max_samples
        )
        wall = time.perf_counter() - began
        ended_wall = time.time()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        delivery = _delivery_process()
        delivery_cpu = process_cpu(delivery) if delivery else None
        delivery_maxrss_kb = peak_rss_kb(delivery) if delivery else None
        first_start, after_last = _sample_times(logs, ended_wall)  # reads the log file
    status = logs[0].status if logs else "none"
    result = {
        "delivery_cpu": delivery_cpu,
        "delivery_maxrss_kb": delivery_maxrss_kb,
        "wall": wall,
        "status": status,
        "maxrss_kb": usage.ru_maxrss,
        "cpu": usage.ru_utime + usage.ru_stime,
        "holds": holds.summary(),
        "gc_pause_max": GC.longest,
        "first_sample_start": None if first_start is None else first_start - began_wall,
        "after_last_sample": after_last,
        "ended_at": ended_wall,
        "mlflow_imported": "mlflow" in sys.modules,
    }
    with open(args.out, "w", encoding="utf-8") as out:
        json.dump(result, out)
    return 0 if status == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
