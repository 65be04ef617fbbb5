"""The runs of one benchmark row (one eval at one latency) and the figures drawn from them.

A :class:`Case` holds the hook-off runs, the hook-on runs and, with ``--compare-pypi``,
the runs with the other MLflow integration, in the order they ran: run ``i`` of each arm
belongs to pair ``i`` (the same minute of the machine's load), so every difference
(ratio, wait, CPU) is taken within a pair and the median is over pairs.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any


def classify(path: str, method: str) -> str:
    """Which kind of MLflow request an access-log path is."""
    if path.startswith("/v1/traces"):
        return "spans"
    if "/assessments" in path:
        return "assessments"
    if path.rstrip("/").endswith("/mlflow/traces") and method == "POST":
        return "start_trace"
    if "/traces" in path:
        return "trace_other"
    if "/mlflow-artifacts/" in path:
        return "artifacts"
    return "tracking"


TRACE_KINDS = ("spans", "start_trace", "assessments", "trace_other")


@dataclass
class Case:
    """All runs of one sample count at one latency (and one model-call latency)."""

    samples: int
    latency_ms: float
    model_latency: float = 0.0
    off: list[dict[str, Any]] = field(default_factory=list)
    on: list[dict[str, Any]] = field(default_factory=list)
    pypi: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        """What kind of eval: CPU-bound mock or model calls that take time."""
        if self.model_latency > 0:
            return f"{self.model_latency:g} s calls"
        return "mock (CPU)"

    def median(self, arm: str, key: str) -> float:
        return statistics.median(run[key] for run in getattr(self, arm))

    def known_median(self, arm: str, key: str) -> float | None:
        """Median of a reading that may be missing (None when no run has it)."""
        values = [run[key] for run in getattr(self, arm) if run.get(key) is not None]
        return statistics.median(values) if values else None

    def paired(self, arm: str, key: str) -> list[float]:
        """Per pair, ``arm``'s reading less the hook-off run's (pairs where both have it)."""
        return [
            run[key] - off[key]
            for run, off in zip(getattr(self, arm), self.off, strict=False)
            if run.get(key) is not None and off.get(key) is not None
        ]

    def ratios(self, arm: str = "on") -> list[float]:
        """Per pair, wall time of ``arm`` over hook off."""
        return [
            run["wall"] / off["wall"]
            for run, off in zip(getattr(self, arm), self.off, strict=False)
        ]

    def ratio(self, arm: str = "on") -> float:
        return statistics.median(self.ratios(arm))

    def requests(self, kinds: tuple[str, ...] | None = None, arm: str = "on") -> float:
        """Median over ``arm``'s runs of the requests of the given kinds (None: not traces)."""
        counts = []
        for run in getattr(self, arm):
            by_kind = run["requests_by_kind"]
            if kinds is None:
                counts.append(sum(n for k, n in by_kind.items() if k not in TRACE_KINDS))
            else:
                counts.append(sum(by_kind.get(k, 0) for k in kinds))
        return statistics.median(counts)

    def all_requests(self, arm: str = "on") -> float:
        """Median over ``arm``'s runs of every request it sent, traces included."""
        return statistics.median(
            sum(run["requests_by_kind"].values()) for run in getattr(self, arm)
        )

    def holds(self, key: str) -> float:
        """Worst (over the on runs) of a loop-holding statistic, in milliseconds."""
        return max(run["holds"][key] for run in self.on) * 1000

    def wait_added(self, arm: str = "on") -> float | None:
        """Median over pairs of the wait after the last sample, ``arm`` less hook off (s)."""
        values = self.paired(arm, "after_last_sample")
        return statistics.median(values) if values else None

    def eval_cpu_ms(self, arm: str = "on") -> float:
        """Median over pairs of the eval process's CPU that ``arm`` adds, ms per sample."""
        return statistics.median(self.paired(arm, "cpu")) / self.samples * 1000

    def delivery_cpu_ms(self, startup: float) -> float | None:
        """Median delivery-process CPU per sample (ms), its start-up (once) left out."""
        values = [run["delivery_cpu"] for run in self.on if run.get("delivery_cpu") is not None]
        if not values:
            return None
        return max(0.0, statistics.median(values) - startup) / self.samples * 1000

    def server_ms(self, arm: str = "on") -> float | None:
        """Median over pairs of the server's CPU that ``arm`` adds, ms per sample."""
        values = self.paired(arm, "server_cpu")
        return statistics.median(values) / self.samples * 1000 if values else None

    def memory(self, arm: str = "on") -> float:
        """Peak memory of the eval's process, ``arm`` over hook off (medians)."""
        return self.median(arm, "maxrss_kb") / self.median("off", "maxrss_kb")
