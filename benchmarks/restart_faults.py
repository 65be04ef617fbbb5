"""The larger version of the restart fault tests (issue 15): one eval, one server restart.

Starts a real `mlflow server` (sqlite backend, one worker), runs the demo eval (one tool
call per sample, two scorers, ``max_samples=4``) with the default delivery process, and
SIGKILLs the server ``--kill-at`` seconds into the eval, starting it again on the same
port and store ``--down`` seconds later. When ``eval()`` returns it prints how long the
eval took, how many of the per-sample metric points and traces are in MLflow, whether a
spool file was left, and the server's requests per second around the outage::

    python benchmarks/restart_faults.py --kill-at 6 --down 8 --samples 300
    python benchmarks/restart_faults.py --kill-at 14 --down 8 --samples 300 --delay 0.4

Exit status 0 when everything landed live (no spool file), 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "support"))  # the test suite's helpers

from contract_support import slow_task  # noqa: E402
from mlflow_server import start_mlflow_server  # noqa: E402

_LINE = re.compile(r"^\S+ (\d\d:\d\d:\d\d) .*\"(GET|POST|PUT) (/[^ ?\"]*)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds of pause per sample")
    parser.add_argument("--kill-at", type=float, default=6.0, help="seconds into the eval")
    parser.add_argument("--down", type=float, default=8.0, help="seconds before the restart")
    parser.add_argument("--flush-timeout", type=float, default=30.0)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="restart-faults-"))
    server = start_mlflow_server(root / "server", extra_env={"PYTHONUNBUFFERED": "1"})
    spool = root / "spool"
    os.environ.update(
        MLFLOW_TRACKING_URI=server.url,
        MLFLOW_EXPERIMENT_NAME="restart-faults",
        INSPECT_MLFLOW_AUTOLOG_ENABLED="false",
        INSPECT_MLFLOW_SPOOL_DIR=str(spool),
        INSPECT_MLFLOW_FLUSH_TIMEOUT=str(args.flush_timeout),
    )
    events: dict[str, float] = {}
    began = time.monotonic()

    def chaos() -> None:
        time.sleep(args.kill_at)
        server.kill()
        events["killed"] = time.monotonic() - began
        time.sleep(args.down)
        server.restart()
        events["healthy"] = time.monotonic() - began

    try:
        threading.Thread(target=chaos, daemon=True).start()
        from inspect_ai import eval as inspect_eval

        from inspect_mlflow._commands.demo import demo_model

        [log] = inspect_eval(
            slow_task(args.samples, args.delay),
            model=demo_model(),
            log_dir=str(root / "logs"),
            display="none",
            max_samples=4,
        )
        elapsed = time.monotonic() - began
        while "healthy" not in events:
            time.sleep(0.1)
        landed, traces = _landed(server.url)
        left = sorted(spool.glob("*.jsonl")) if spool.exists() else []
        print(
            f"eval: {log.status}, {elapsed:.1f}s; server killed at {events['killed']:.1f}s, "
            f"healthy again at {events['healthy']:.1f}s"
        )
        print(f"per-sample metric points in MLflow: {landed} of {3 * args.samples}")
        print(f"traces in MLflow: {traces} of {args.samples}")
        print(f"spool files left: {len(left)} {[str(p) for p in left]}")
        print("server requests per second (time: count):")
        for second, count in _per_second(server.log_path).items():
            print(f"  {second}: {count}")
        return 0 if not left and landed == 3 * args.samples else 1
    finally:
        server.stop()


def _landed(uri: str) -> tuple[int, int]:
    from mlflow import MlflowClient
    from mlflow.tracing.client import TracingClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("restart-faults")
    if experiment is None:
        return 0, 0
    points = traces = 0
    for run in client.search_runs([experiment.experiment_id]):
        for key in ("sample/match", "sample/includes", "sample/total_time"):
            points += len(client.get_metric_history(run.info.run_id, key))
        found = TracingClient(uri).search_traces(
            locations=[experiment.experiment_id], run_id=run.info.run_id, max_results=500
        )
        traces += len(found)
    return points, traces


def _per_second(log_path: Path) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _LINE.match(line)
        if match:
            counts[match.group(1)] += 1
    return dict(sorted(counts.items()))


if __name__ == "__main__":
    sys.exit(main())
