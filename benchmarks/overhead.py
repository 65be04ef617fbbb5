"""What logging to MLflow costs an eval: wall time, the end wait, CPU, requests, memory.

Starts a real ``mlflow server`` on 127.0.0.1 that serves artifacts itself
(``--serve-artifacts --artifacts-destination``, as a shared team server does), then runs
the same offline eval (the demo task: mock model, one tool call and one answer per
sample, two scorers, ``max_samples=20``) with the hook off and on, alternating
(off/on, on/off, ...), each eval in a fresh process. With no options it runs the rows
the targets of issue 20 are about, 3 pairs each:

- realistic evals: each model call waits 1 s first (asynchronously, as a real
  provider's does), 200 samples, against the server directly and through a proxy on
  loopback that delays every request by 50 ms;
- the CPU-bound mock eval (no wait) at 200 and 2000 samples, against the server.

For each row it prints the median over pairs of the wall-time ratio on/off, the wait
after the last sample (from its ``completed_at`` to the end of ``eval()``), the CPU per
sample of the eval's process (on less off) and of the hook's delivery process (its
start-up once left out, and stated), the server's CPU per sample (what MLflow's storing
costs), HTTP requests per sample (from the server's access log), peak memory of the
eval's process (on over off) and of the delivery process, and how long hook callbacks
held the event loop. ``--compare-pypi`` adds a third arm to every pair: the other MLflow
integration for Inspect (``inspect-mlflow==0.9.0`` from the package registry, in a
virtual environment of its own, with traces on), printed beside ours.

Usage (from the repository root)::

    python benchmarks/overhead.py                      # the rows above, 3 pairs each
    python benchmarks/overhead.py --compare-pypi       # the same, the other integration beside
    python benchmarks/overhead.py --pairs 1 --realistic-samples 60 --cpu-samples 100
    python benchmarks/overhead.py --quick              # N = 50, one pair (CI smoke test)
    python benchmarks/overhead.py --samples 500 --latency 0 50 --model-latency 1  # a grid
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

HERE = Path(__file__).resolve().parent
CHILD = HERE / "_child.py"
sys.path.insert(0, str(HERE.parent / "tests" / "support"))  # the test suite's server helper
sys.path.insert(0, str(HERE))

from _cases import Case, classify  # noqa: E402
from _cpu import group_cpu  # noqa: E402
from _proxy import DelayProxy  # noqa: E402
from _pypi import PYPI_ENV, PYPI_PACKAGE, pypi_python  # noqa: E402
from _report import pair_line, report  # noqa: E402
from mlflow_server import MlflowServer, remove, start_mlflow_server  # noqa: E402

MAX_SAMPLES = 20

SETTINGS: dict[str, str] = {}
"""``--set`` values for the hook-on evals (none: every setting at its default)."""


def child_env(
    tracking_uri: str | None, experiment: str, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of one eval: defaults for every inspect-mlflow setting but ``--set``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("INSPECT_MLFLOW_")
        and k not in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_INSPECT_TRACING")
    }
    if tracking_uri is not None:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
        env["MLFLOW_EXPERIMENT_NAME"] = experiment
        env.update(SETTINGS if extra is None else extra)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def server_cpu(server: MlflowServer) -> float | None:
    """CPU seconds the server's processes have used so far (None: not ours to read)."""
    return group_cpu(server.process.pid) if server.process is not None else None


class Runner:
    """Runs evals in fresh processes against one server, counting what each sent."""

    def __init__(self, server: MlflowServer, work: Path, pypi: Path | None) -> None:
        self.server = server
        self.work = work
        self.pypi = pypi

    def child(
        self, case: Case, arm: str, url: str | None, experiment: str, timeout: float
    ) -> dict[str, Any]:
        """One eval; returns what ``_child.py`` measured."""
        out = self.work / f"result-{time.monotonic_ns()}.json"
        python = str(self.pypi) if arm == "pypi" and self.pypi else sys.executable
        command = [python, str(CHILD), "--samples", str(case.samples), "--out", str(out)]
        command += ["--max-samples", str(MAX_SAMPLES), "--model-latency", str(case.model_latency)]
        if arm == "pypi":
            command.append("--foreign")
        extra = PYPI_ENV if arm == "pypi" else None
        done = subprocess.run(
            command,
            env=child_env(url, experiment, extra),
            cwd=self.work,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(
                f"eval with {case.samples} samples ({arm}) failed ({done.returncode}):\n"
                f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
            )
        result: dict[str, Any] = json.loads(out.read_text())
        result["stderr"] = done.stderr
        return result

    def count_requests(self, offset: int) -> Counter[tuple[str, str]]:
        """Requests the server logged after ``offset``, once its log has stopped growing."""
        size = -1
        for _ in range(20):
            if self.server.log_size() == size:
                break
            size = self.server.log_size()
            time.sleep(0.25)
        return self.server.requests_since(offset)

    def arm(self, case: Case, arm: str, url: str, index: int, timeout: float) -> None:
        """One eval of ``arm`` (off, on, pypi), appended to the case with its readings."""
        offset = self.server.log_size()
        cpu_before = server_cpu(self.server)
        experiment = f"overhead-{arm}-{case.samples}-{int(case.latency_ms)}ms-{index}-{os.getpid()}"
        result = self.child(case, arm, None if arm == "off" else url, experiment, timeout)
        result["server_cpu"] = _spent(cpu_before, server_cpu(self.server))
        if arm != "off":
            requests = self.count_requests(offset)
            by_kind: Counter[str] = Counter()
            for (method, path), n in requests.items():
                by_kind[classify(path, method)] += n
            result["requests"] = {f"{m} {p}": n for (m, p), n in sorted(requests.items())}
            result["requests_by_kind"] = dict(by_kind)
            if (
                arm == "on"
                and "WARNING" in result["stderr"]
                and "inspect-mlflow" in result["stderr"]
            ):
                print(f"  warning from the hook:\n{result['stderr'][-1500:]}", file=sys.stderr)
        getattr(case, arm).append(result)

    def case(self, case: Case, pairs: int, url: str) -> Case:
        timeout = (
            180
            + case.samples * (2.0 if self.pypi else 0.5)
            + 3 * case.model_latency * (case.samples / MAX_SAMPLES)
        )
        arms = ["off", "on"] + (["pypi"] if self.pypi else [])
        for index in range(pairs):
            # Rotate the order inside each pair (off/on, on/off, ...) so that a drift in
            # the machine's load weighs on every arm alike.
            order = arms[index % len(arms) :] + arms[: index % len(arms)]
            for arm in order:
                self.arm(case, arm, url, index, timeout)
            print(pair_line(case, index, pairs), file=sys.stderr, flush=True)
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


def measured_once(work: Path, mode: str) -> dict[str, float]:
    """A once-per-process cost, read in a fresh process (``--import-only`` and the like)."""
    out = work / f"{mode}.json"
    command = [sys.executable, str(CHILD), "--samples", "0", f"--{mode}", "--out", str(out)]
    subprocess.run(command, env=child_env(None, ""), cwd=work, check=True, timeout=300)
    result: dict[str, float] = json.loads(out.read_text())
    return result


def plan(args: argparse.Namespace) -> list[Case]:
    """The rows to run: the issue's (default), a smoke test, or the grid asked for."""
    if args.quick:
        return [Case(50, 0.0)]
    if args.samples or args.latency or args.model_latency is not None:
        return [
            Case(samples, latency, args.model_latency or 0.0)
            for latency in args.latency or [0.0]
            for samples in args.samples or [200]
        ]
    calls = [Case(args.realistic_samples, latency, 1.0) for latency in (0.0, 50.0)]
    return calls + [Case(samples, 0.0) for samples in args.cpu_samples]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure what inspect-mlflow costs an eval against a real mlflow server.",
    )
    parser.add_argument("--pairs", type=int, default=3, help="off/on pairs per row (3)")
    parser.add_argument(
        "--realistic-samples",
        type=int,
        default=200,
        metavar="N",
        help="samples of the evals with 1 s model calls (200)",
    )
    parser.add_argument(
        "--cpu-samples",
        type=int,
        nargs="+",
        default=[200, 2000],
        metavar="N",
        help="sample counts of the CPU-bound mock eval (200 2000)",
    )
    parser.add_argument("--samples", type=int, nargs="+", help="a grid instead: sample counts")
    parser.add_argument(
        "--latency", type=float, nargs="+", help="a grid instead: added ms per request"
    )
    parser.add_argument(
        "--model-latency",
        type=float,
        metavar="SECONDS",
        help="a grid instead: each mock model call first waits this long",
    )
    parser.add_argument(
        "--quick", action="store_true", help="N = 50, one pair, no warm-up (a smoke test)"
    )
    parser.add_argument(
        "--compare-pypi",
        action="store_true",
        help=f"also run every pair with {PYPI_PACKAGE} (its own virtual environment)",
    )
    parser.add_argument(
        "--pypi-venv",
        metavar="DIR",
        help="keep that virtual environment here and reuse it (default: a temporary one)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the hook-on evals, e.g. INSPECT_MLFLOW_TRACES=false (repeatable)",
    )
    parser.add_argument(
        "--server-workers",
        type=int,
        default=4,
        metavar="N",
        help="worker processes of the mlflow server started here (4: mlflow server's default)",
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
    counts = [args.pairs, args.realistic_samples, *args.cpu_samples, *(args.samples or [])]
    if any(n < 1 for n in counts):
        parser.error("--pairs and sample counts must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cases = plan(args)
    pairs = 1 if args.quick else args.pairs
    with tempfile.TemporaryDirectory(prefix="inspect-mlflow-overhead-") as tmp:
        work = Path(tmp)
        pypi = None
        if args.compare_pypi:
            pypi = pypi_python(Path(args.pypi_venv) if args.pypi_venv else work / "pypi-venv")
        if args.server:
            server = _running_server(args.server, args.server_log)
        else:
            print("starting mlflow server ...", file=sys.stderr, flush=True)
            server = start_mlflow_server(work / "server", workers=args.server_workers)
        try:
            port = urlparse(server.url).port
            assert port is not None
            runner = Runner(server, work, pypi)
            settle(server)
            if not args.quick:
                # Warm the server (experiment tables, first requests) and the disk caches.
                runner.child(Case(20, 0.0), "on", server.url, "overhead-warmup", 300)
                settle(server)
            for case in cases:
                if case.latency_ms > 0:
                    with DelayProxy("127.0.0.1", port, case.latency_ms / 1000) as proxy:
                        runner.case(case, pairs, proxy.url)
                else:
                    runner.case(case, pairs, server.url)
            imported = measured_once(work, "import-only")
            startup = measured_once(work, "delivery-startup")
            workers = None if args.server else args.server_workers
            report(cases, pairs, imported, startup, SETTINGS, PYPI_PACKAGE, workers)
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
