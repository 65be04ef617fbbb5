"""Where the delivery process's CPU goes: a sampling profile of it during the mock eval.

Starts a real ``mlflow server`` on 127.0.0.1, runs the demo eval (``_child.py``, hook on,
default mapping) and attaches ``py-spy --gil`` (not a dependency: ``pip install py-spy`` into
any environment, and pass ``--py-spy PATH`` if it is not on ``PATH``) to the hook's
delivery process for the whole eval. It prints the share of the sampled CPU time by
where the running code lives (our engine, our writer, MLflow's client, HTTP, ...), by
our top-level steps (inclusive), and the functions with the most time of their own;
``--raw FILE`` keeps py-spy's collapsed stacks.

Usage (from the repository root)::

    python benchmarks/profile_delivery.py --samples 1000
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "support"))
sys.path.insert(0, str(HERE))

from mlflow_server import remove, start_mlflow_server  # noqa: E402

AREAS = (
    ("_find_and_load", "start-up: imports (once per process)"),
    ("inspect_mlflow/_engine/", "ours: mapping engine"),
    ("inspect_mlflow/_writer/mlflow_sink/trace", "ours: traces (build, send)"),
    ("inspect_mlflow/_writer/", "ours: writer, sink"),
    ("inspect_mlflow/_delivery/", "ours: delivery loop, unpickling points"),
    ("inspect_mlflow/", "ours: other"),
    ("opentelemetry/", "OpenTelemetry (MLflow's spans)"),
    ("google/protobuf/", "protobuf (MLflow's requests)"),
    ("mlflow/", "MLflow client"),
    ("urllib3/", "HTTP (urllib3, requests, http.client)"),
    ("requests/", "HTTP (urllib3, requests, http.client)"),
    ("http/client.py", "HTTP (urllib3, requests, http.client)"),
    ("socket.py", "HTTP (urllib3, requests, http.client)"),
    ("ssl.py", "HTTP (urllib3, requests, http.client)"),
    ("jmespath/", "jmespath"),
    ("pydantic", "pydantic"),
    ("json/", "json (stdlib)"),
)
"""Where a sample's CPU is counted: the first rule that matches its stack (imports), else
its innermost frame's file."""


STEPS = (
    ("_find_and_load", "once: imports"),
    ("load_mapping", "once: loading the mapping"),
    ("Engine.handle", "ours: mapping engine"),
    ("build_trace", "ours: building traces"),
    ("TraceSender._call", "MLflow's client: start_trace, log_spans (with HTTP)"),
    ("MlflowCalls.__call__", "MLflow's client: log_batch, uploads, runs (with HTTP)"),
    ("table_json", "ours: table files (JSON)"),
    ("Channel.receive", "ours: unpickling points"),
    ("BackgroundWriter", "ours: writer, planning, sink"),
    ("DeliveryProcess", "ours: delivery loop, confirmations"),
    ("Reachability", "health checks"),
)
"""Which step paid for a sample: the first rule whose frame is anywhere in its stack."""


def step_of(stack: str) -> str:
    for needle, name in STEPS:
        if needle in stack:
            return name
    return "other (threads, queues, futures)"


def area(frames: list[str]) -> str:
    """Which part of the code a py-spy stack (``func (file:line)`` frames) is in."""
    if any("_find_and_load" in frame for frame in frames):
        return AREAS[0][1]
    for needle, name in AREAS[1:]:
        if needle in frames[-1]:
            return name
    return "Python stdlib, other"


def delivery_pid(parent: int, timeout: float = 60.0) -> int | None:
    """The delivery process started by ``parent`` (a child whose command names it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if int(stat[1]) == parent and b"_delivery.process" in command:
                return int(entry.name)
        time.sleep(0.05)
    return None


def summarise(collapsed: Path, top: int) -> None:
    by_area: Counter[str] = Counter()
    by_step: Counter[str] = Counter()
    own: Counter[str] = Counter()
    ours_inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        leaf = frames[-1]
        by_area[area(frames)] += count
        by_step[step_of(stack)] += count
        own[leaf] += count
        # The outermost frame of ours below the thread's entry: the step that paid.
        seen = set()
        for frame in frames:
            if "inspect_mlflow/" in frame and frame not in seen:
                seen.add(frame)
                ours_inclusive[frame] += count
    if not total:
        print("no samples")
        return
    print(
        f"{total} samples of the delivery process's threads holding the GIL (its Python "
        "CPU)\n\nby where the code runs (self):"
    )
    for name, n in by_area.most_common():
        print(f"  {100 * n / total:5.1f}%  {name}")
    once = sum(n for name, n in by_step.items() if name.startswith("once:"))
    print("\nby step (inclusive; second column: share of the per-sample work, once-only left out):")
    for name, n in by_step.most_common():
        per_sample = "" if name.startswith("once:") else f"{100 * n / (total - once):5.1f}%"
        print(f"  {100 * n / total:5.1f}%  {per_sample:>6}  {name}")
    print(f"\nfunctions of ours, inclusive (top {top}):")
    for frame, n in ours_inclusive.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {frame}")
    print(f"\nfunctions with the most own time (top {top}):")
    for frame, n in own.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {frame}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--model-latency", type=float, default=0.0)
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    parser.add_argument("--rate", type=int, default=100, help="samples per second (100)")
    parser.add_argument("--raw", type=Path, help="keep the collapsed stacks here")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="inspect-mlflow-profile-") as tmp:
        work = Path(tmp)
        server = start_mlflow_server(work / "server")
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("INSPECT_MLFLOW_")}
            env.update(MLFLOW_TRACKING_URI=server.url, MLFLOW_EXPERIMENT_NAME="profile")
            command = [sys.executable, str(HERE / "_child.py"), "--samples", str(args.samples)]
            command += ["--out", str(work / "result.json")]
            command += ["--model-latency", str(args.model_latency)]
            child = subprocess.Popen(command, env=env, cwd=work)
            pid = delivery_pid(child.pid)
            if pid is None:
                child.kill()
                raise SystemExit("the eval started no delivery process")
            collapsed = args.raw or work / "delivery.txt"
            spy = [args.py_spy, "record", "--pid", str(pid), "--format", "raw"]
            spy += ["--rate", str(args.rate), "--output", str(collapsed), "--gil", "--nonblocking"]
            profiler = subprocess.Popen(spy, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            child.wait()
            time.sleep(1.0)  # the delivery process ends with its eval: py-spy then writes
            profiler.send_signal(signal.SIGINT)  # py-spy writes its file on an interrupt
            profiler.wait(30)
            summarise(collapsed, args.top)
        finally:
            remove(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
