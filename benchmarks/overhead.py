"""What logging to MLflow costs an eval: wall time, HTTP requests, memory, event-loop time.

Starts a real ``mlflow server`` on 127.0.0.1 that serves artifacts itself
(``--serve-artifacts --artifacts-destination``, as a shared team server does), then runs
the same offline eval (the demo task: mock model, one tool call and one answer per
sample, two scorers, ``max_samples=20``) with the hook off and on, alternating
(off/on, on/off, ...), each eval in a fresh process. For each sample count it prints:

- the median wall-time ratio on/off of Inspect's ``eval()`` call (per adjacent pair);
- the HTTP requests the hook sent, from the server's access log: runs, params, metrics,
  tags, tables and artifacts apart from trace requests (OTLP spans ``/v1/traces``,
  ``start_trace``, assessments);
- peak memory (``ru_maxrss``) of the off and on processes;
- how long a hook callback held the event loop (p50, p99, max).

``--latency 50`` puts a proxy on loopback between the hook and the server that delays
every request by 50 ms, to show that the eval does not wait on the network.
``--model-latency 1`` makes each mock model call wait a second first (asynchronously, as
a real provider's call does), to show what the hook costs an eval that is not pure CPU.
It also prints what importing MLflow's client adds to a process (memory, CPU).

Usage (from the repository root)::

    python benchmarks/overhead.py                      # N = 200 and 2000, 3 pairs each
    python benchmarks/overhead.py --latency 50         # the same through a 50 ms proxy
    python benchmarks/overhead.py --quick              # N = 50, one pair (CI smoke test)
    python benchmarks/overhead.py --samples 200 --model-latency 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

HERE = Path(__file__).resolve().parent
CHILD = HERE / "_child.py"
sys.path.insert(0, str(HERE.parent / "tests"))  # the test suite's server helper
sys.path.insert(0, str(HERE))

from _cpu import group_cpu  # noqa: E402
from _proxy import DelayProxy  # noqa: E402
from mlflow_server import MlflowServer, remove, start_mlflow_server  # noqa: E402

MAX_SAMPLES = 20
TARGET_RATIO = 1.05
TARGET_REQUESTS_200 = 40
TARGET_P99_MS = 1.0
TARGET_MEMORY = 1.2


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
    """All runs of one sample count at one latency."""

    samples: int
    latency_ms: float
    off: list[dict[str, Any]] = field(default_factory=list)
    on: list[dict[str, Any]] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)

    def median(self, arm: str, key: str) -> float:
        return statistics.median(run[key] for run in getattr(self, arm))

    def known_median(self, arm: str, key: str) -> float | None:
        """Median of a reading that may be missing (None when no run has it)."""
        values = [run[key] for run in getattr(self, arm) if run.get(key) is not None]
        return statistics.median(values) if values else None

    def requests(self, kinds: tuple[str, ...] | None = None) -> float:
        """Median over the on runs of the requests of the given kinds (None: not traces)."""
        counts = []
        for run in self.on:
            by_kind = run["requests_by_kind"]
            if kinds is None:
                counts.append(sum(n for k, n in by_kind.items() if k not in TRACE_KINDS))
            else:
                counts.append(sum(by_kind.get(k, 0) for k in kinds))
        return statistics.median(counts)

    def holds(self, key: str) -> float:
        """Worst (over the on runs) of a loop-holding statistic, in milliseconds."""
        return max(run["holds"][key] for run in self.on) * 1000


MODEL_LATENCY = [0.0]
"""``--model-latency``: seconds each mock model call waits (asynchronously), in both arms."""

SETTINGS: dict[str, str] = {}
"""``--set`` values for the hook-on evals (none: every setting at its default)."""


def child_env(tracking_uri: str | None, experiment: str) -> dict[str, str]:
    """The environment of one eval: defaults for every inspect-mlflow setting but ``--set``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("INSPECT_MLFLOW_")
        and k not in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME")
    }
    if tracking_uri is not None:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
        env["MLFLOW_EXPERIMENT_NAME"] = experiment
        env.update(SETTINGS)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def server_cpu(server: MlflowServer) -> float | None:
    """CPU seconds the server's processes have used so far (None: not ours to read)."""
    return group_cpu(server.process.pid) if server.process is not None else None


def run_child(
    samples: int, tracking_uri: str | None, experiment: str, work: Path, timeout: float
) -> dict[str, Any]:
    """One eval in a fresh process; returns what ``_child.py`` measured."""
    out = work / f"result-{time.monotonic_ns()}.json"
    command = [sys.executable, str(CHILD), "--samples", str(samples), "--out", str(out)]
    command += ["--max-samples", str(MAX_SAMPLES), "--model-latency", str(MODEL_LATENCY[0])]
    done = subprocess.run(
        command,
        env=child_env(tracking_uri, experiment),
        cwd=work,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(
            f"eval with {samples} samples (hook {'on' if tracking_uri else 'off'}) failed "
            f"({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )
    result: dict[str, Any] = json.loads(out.read_text())
    result["stderr"] = done.stderr
    return result


def count_requests(server: MlflowServer, offset: int) -> Counter[tuple[str, str]]:
    """Requests the server logged after ``offset``, once its log has stopped growing."""
    size = -1
    for _ in range(20):
        if server.log_size() == size:
            break
        size = server.log_size()
        time.sleep(0.25)
    return server.requests_since(offset)


def run_on(
    case: Case, server: MlflowServer, url: str, work: Path, index: int, timeout: float
) -> None:
    offset = server.log_size()
    cpu_before = server_cpu(server)
    experiment = f"overhead-{case.samples}-{int(case.latency_ms)}ms-{index}-{os.getpid()}"
    result = run_child(case.samples, url, experiment, work, timeout)
    requests = count_requests(server, offset)
    result["server_cpu"] = _spent(cpu_before, server_cpu(server))
    by_kind: Counter[str] = Counter()
    for (method, path), n in requests.items():
        by_kind[classify(path, method)] += n
    result["requests"] = {f"{m} {p}": n for (m, p), n in sorted(requests.items())}
    result["requests_by_kind"] = dict(by_kind)
    if "WARNING" in result["stderr"] and "inspect-mlflow" in result["stderr"]:
        print(f"  warning from the hook:\n{result['stderr'][-1500:]}", file=sys.stderr)
    case.on.append(result)


def run_case(
    samples: int, latency_ms: float, pairs: int, server: MlflowServer, url: str, work: Path
) -> Case:
    case = Case(samples, latency_ms)
    timeout = 120 + samples * 0.5
    for index in range(pairs):
        # Alternate the order inside each pair (off/on, on/off, ...) so that a drift in
        # the machine's load weighs on both arms alike.
        arms = ("off", "on") if index % 2 == 0 else ("on", "off")
        for arm in arms:
            if arm == "off":
                cpu_before = server_cpu(server)
                case.off.append(run_child(samples, None, "", work, timeout))
                case.off[-1]["server_cpu"] = _spent(cpu_before, server_cpu(server))
            else:
                run_on(case, server, url, work, index, timeout)
        ratio = case.on[-1]["wall"] / case.off[-1]["wall"]
        case.ratios.append(ratio)
        print(
            f"  N={samples} latency={latency_ms:g}ms pair {index + 1}/{pairs}: "
            f"off {case.off[-1]['wall']:.2f}s, on {case.on[-1]['wall']:.2f}s, "
            f"ratio {ratio:.3f}",
            file=sys.stderr,
            flush=True,
        )
    return case


def settle(server: MlflowServer, timeout: float = 60.0) -> None:
    """Wait until the server is idle: for seconds after it answers, it keeps starting up.

    A fresh ``mlflow server`` spends about 14 s of CPU in its first 10 s (workers, job
    consumers); measured beside it, the first evals would pay for that.
    """
    deadline = time.monotonic() + timeout
    quiet = 0
    before = server_cpu(server)
    while before is not None and quiet < 2 and time.monotonic() < deadline:
        time.sleep(1.0)
        now = server_cpu(server)
        if now is None:
            return
        quiet = quiet + 1 if now - before < 0.1 else 0
        before = now


def _spent(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


HEADER = (
    "| samples | latency ms | eval s off | eval s on | ratio on/off | requests | "
    "trace requests | trace req/sample | peak MB off | peak MB on | memory on/off | "
    "hold p50 ms | hold p99 ms | hold max ms |"
)


def row(case: Case) -> str:
    traces = case.requests(TRACE_KINDS)
    off_mb = case.median("off", "maxrss_kb") / 1024
    on_mb = case.median("on", "maxrss_kb") / 1024
    cells = [
        f"{case.samples}",
        f"{case.latency_ms:g}",
        f"{case.median('off', 'wall'):.2f}",
        f"{case.median('on', 'wall'):.2f}",
        f"{statistics.median(case.ratios):.3f}",
        f"{case.requests():g}",
        f"{traces:g}",
        f"{traces / case.samples:.2f}",
        f"{off_mb:.0f}",
        f"{on_mb:.0f}",
        f"{on_mb / off_mb:.2f}",
        f"{case.holds('p50'):.3f}",
        f"{case.holds('p99'):.3f}",
        f"{case.holds('max'):.1f}",
    ]
    return "| " + " | ".join(cells) + " |"


CPU_HEADER = (
    "| samples | latency ms | eval process CPU s off | eval process CPU s on | "
    "delivery process CPU s | server CPU s off | server CPU s on | server ms/sample | "
    "delivery ms/sample | delivery peak MB | memory on/off with delivery |"
)


def _cell(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def cpu_row(case: Case) -> str:
    """Where the CPU of the on runs went: eval process, delivery process, server."""
    delivery = case.known_median("on", "delivery_cpu")
    server_off = case.known_median("off", "server_cpu")
    server_on = case.known_median("on", "server_cpu")
    per_sample = None
    if server_on is not None and server_off is not None:
        per_sample = (server_on - server_off) / case.samples * 1000
    delivery_mb = case.known_median("on", "delivery_maxrss_kb")
    with_delivery = None
    if delivery_mb is not None:
        with_delivery = (case.median("on", "maxrss_kb") + delivery_mb) / case.median(
            "off", "maxrss_kb"
        )
    cells = [
        f"{case.samples}",
        f"{case.latency_ms:g}",
        f"{case.median('off', 'cpu'):.2f}",
        f"{case.median('on', 'cpu'):.2f}",
        _cell(delivery),
        _cell(server_off),
        _cell(server_on),
        _cell(per_sample, 1),
        _cell(None if delivery is None else delivery / case.samples * 1000, 1),
        _cell(None if delivery_mb is None else delivery_mb / 1024, 0),
        _cell(with_delivery),
    ]
    return "| " + " | ".join(cells) + " |"


def import_cost(work: Path) -> dict[str, float]:
    """What importing the hook's MLflow side (MLflow's client) adds to an Inspect process."""
    out = work / "import-cost.json"
    command = [sys.executable, str(CHILD), "--samples", "0", "--import-only", "--out", str(out)]
    subprocess.run(command, env=child_env(None, ""), cwd=work, check=True, timeout=300)
    result: dict[str, float] = json.loads(out.read_text())
    return result


def _print_table(header: str, rows: list[str]) -> None:
    """A Markdown table: the header, its separator line, the rows."""
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for line in rows:
        print(line)


def report(cases: list[Case], pairs: int, imported: dict[str, float]) -> None:
    print(
        f"\ninspect-mlflow overhead: demo eval (mock model, one tool call and one answer "
        f"per sample, two scorers), max_samples={MAX_SAMPLES}, {pairs} off/on pair(s) "
        "per row, default mapping (tables, artifacts, traces on), real mlflow server "
        "with --serve-artifacts on 127.0.0.1"
    )
    if MODEL_LATENCY[0] > 0:
        print(f"each model call waits {MODEL_LATENCY[0]:g} s (as a real provider's would)")
    if SETTINGS:
        shown = ", ".join(f"{k}={v}" for k, v in SETTINGS.items())
        print(f"settings of the hook-on evals: {shown}")
    print()
    _print_table(HEADER, [row(case) for case in cases])
    print(
        "\nratio: median over pairs of eval() wall time on/off; requests: runs, params, "
        "metrics, tags, tables and artifacts (median of the on runs); trace requests: "
        "OTLP spans + start_trace + assessments; hold: time a hook callback held the "
        "event loop (worst on run)."
    )
    print("\nwhere the CPU goes (medians; eval process CPU includes its start-up):\n")
    _print_table(CPU_HEADER, [cpu_row(case) for case in cases])
    print(
        "\nserver ms/sample: the server's CPU during an on run less an off run (its idle "
        "work), per sample; delivery: the hook's delivery process (empty with "
        "INSPECT_MLFLOW_DELIVERY=thread). All share this machine's cores."
    )
    print(
        f"importing MLflow's client (once per process) adds {imported['mb']:.0f} MB of peak "
        f"memory and {imported['cpu']:.2f} s of CPU to a process (the delivery process, "
        "or the eval's with INSPECT_MLFLOW_DELIVERY=thread)."
    )
    for case in cases:
        last = case.on[-1]
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(last["requests_by_kind"].items()))
        worst = ", ".join(f"{k} {v * 1000:.1f}ms" for k, v in last["holds"]["worst"].items())
        print(f"\nN={case.samples}, latency {case.latency_ms:g} ms, last on run:")
        print(f"  requests by kind: {kinds}")
        for endpoint, n in last["requests"].items():
            print(f"    {n:6d}  {endpoint}")
        print(f"  longest callbacks: {worst}")
        gc_pause = last.get("gc_pause_max") or 0.0
        print(
            f"  longest garbage-collection pause of the eval's process: {gc_pause * 1000:.1f}ms "
            "(left out of the holds: it lands wherever an allocation triggers it)"
        )
    print("\ntargets:")
    for case in cases:
        ratio = statistics.median(case.ratios)
        memory = case.median("on", "maxrss_kb") / case.median("off", "maxrss_kb")
        checks = [
            (f"ratio {ratio:.3f} <= {TARGET_RATIO}", ratio <= TARGET_RATIO),
            (
                f"hook callback p99 {case.holds('p99'):.3f} ms < {TARGET_P99_MS} ms",
                case.holds("p99") < TARGET_P99_MS,
            ),
            (
                f"peak memory on/off of the eval's process {memory:.2f} <= {TARGET_MEMORY}",
                memory <= TARGET_MEMORY,
            ),
        ]
        if case.samples == 200:
            requests = case.requests()
            checks.append(
                (
                    f"requests {requests:g} <= {TARGET_REQUESTS_200}",
                    requests <= TARGET_REQUESTS_200,
                )
            )
        for text, met in checks:
            status = "met" if met else "NOT met"
            print(f"  N={case.samples} latency {case.latency_ms:g} ms: {text}: {status}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure what inspect-mlflow costs an eval against a real mlflow server.",
    )
    parser.add_argument(
        "--samples", type=int, nargs="+", default=[200, 2000], help="sample counts (200 2000)"
    )
    parser.add_argument("--pairs", type=int, default=3, help="off/on pairs per count (3)")
    parser.add_argument(
        "--latency",
        type=float,
        nargs="+",
        default=[0.0],
        help="added latency per request in ms, one or more (0 = direct to the server)",
    )
    parser.add_argument(
        "--model-latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="each mock model call first waits this long, as a real provider does (0)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="N = 50, one pair, no warm-up (a smoke test)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the hook-on evals, e.g. INSPECT_MLFLOW_TRACES=false (repeatable)",
    )
    parser.add_argument(
        "--server",
        metavar="URL",
        help="use this running mlflow server instead of starting one (needs --server-log)",
    )
    parser.add_argument(
        "--server-log", metavar="PATH", help="that server's access log, to count requests"
    )
    args = parser.parse_args(argv)
    if bool(args.server) != bool(args.server_log):
        parser.error("--server and --server-log go together")
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--set takes NAME=VALUE, got {item!r}")
        SETTINGS[name] = value
    if args.quick:
        args.samples, args.pairs = [50], 1
    MODEL_LATENCY[0] = args.model_latency
    if args.pairs < 1 or any(n < 1 for n in args.samples):
        parser.error("--pairs and --samples must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="inspect-mlflow-overhead-") as tmp:
        work = Path(tmp)
        if args.server:
            server = _running_server(args.server, args.server_log)
        else:
            print("starting mlflow server ...", file=sys.stderr, flush=True)
            server = start_mlflow_server(work / "server")
        try:
            port = urlparse(server.url).port
            assert port is not None
            settle(server)
            if not args.quick:
                # Warm the server (experiment tables, first requests) and the disk caches.
                run_child(20, server.url, "overhead-warmup", work, 300)
                settle(server)
            cases: list[Case] = []
            for latency in args.latency:
                for samples in args.samples:
                    if latency > 0:
                        with DelayProxy("127.0.0.1", port, latency / 1000) as proxy:
                            cases.append(
                                run_case(samples, latency, args.pairs, server, proxy.url, work)
                            )
                    else:
                        cases.append(run_case(samples, 0, args.pairs, server, server.url, work))
            report(cases, args.pairs, import_cost(work))
        finally:
            if not args.server:
                remove(server)
    return 0


def _running_server(url: str, log: str) -> MlflowServer:
    """A server someone else started (the test suite's); its log counts the requests."""
    log_path = Path(log)
    if not log_path.is_file():
        raise SystemExit(f"--server-log {log} is not a file")
    process: Any = None  # not ours: never stopped here
    return MlflowServer(
        url=url.rstrip("/"), root=log_path.parent, log_path=log_path, process=process
    )


if __name__ == "__main__":
    sys.exit(main())
