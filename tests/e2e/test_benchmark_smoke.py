"""The overhead benchmark still runs and reports every figure (a smoke test, no timing).

Runs ``benchmarks/overhead.py --quick`` (one 50-sample eval with the hook off and one
with it on, each in its own process) against the session's real ``mlflow server`` (the
benchmark starts its own when run by hand) and checks that the report has a row whose
numbers parse and that the hook's requests reached the server. How fast it is depends
on the machine, so nothing here asserts a time or a ratio.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow_server import MlflowServer

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "overhead.py"

COLUMNS = (
    "samples",
    "latency ms",
    "eval s off",
    "eval s on",
    "ratio on/off",
    "requests",
    "trace requests",
    "trace req/sample",
    "peak MB off",
    "peak MB on",
    "memory on/off",
    "hold p50 ms",
    "hold p99 ms",
    "hold max ms",
)


@pytest.mark.server
@pytest.mark.e2e
def test_quick_benchmark_reports_every_figure(mlflow_server: MlflowServer) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(BENCHMARK),
            "--quick",
            "--server",
            mlflow_server.url,
            "--server-log",
            str(mlflow_server.log_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=BENCHMARK.parents[1],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith("| samples")]
    assert len(headers) == 2, "the overhead table and the CPU table"
    header, row = lines[headers[0]], lines[headers[0] + 2]
    assert tuple(cell.strip() for cell in header.strip("|").split("|")) == COLUMNS
    assert re.match(r"\| 50 \|", row)
    figures = dict(zip(COLUMNS, (float(c) for c in row.strip("|").split("|")), strict=True))
    assert figures["latency ms"] == 0
    assert figures["eval s off"] > 0 and figures["eval s on"] > 0
    assert figures["ratio on/off"] > 0
    assert figures["requests"] > 0  # runs, params, metrics, tags, tables, artifacts
    assert figures["trace requests"] >= 50  # MLflow's start_trace: one per sample
    assert figures["peak MB off"] > 0 and figures["peak MB on"] > 0
    assert 0 <= figures["hold p50 ms"] <= figures["hold p99 ms"] <= figures["hold max ms"]
    # Where the CPU went: the eval's process and the delivery process (a server started
    # elsewhere has no CPU reading here: those cells stay empty).
    cpu_header, cpu_row = lines[headers[1]], lines[headers[1] + 2]
    names = [cell.strip() for cell in cpu_header.strip("|").split("|")]
    cpu = dict(zip(names, (c.strip() for c in cpu_row.strip("|").split("|")), strict=True))
    assert float(cpu["eval process CPU s on"]) > 0
    assert float(cpu["delivery process CPU s"]) > 0
    assert float(cpu["delivery peak MB"]) > 0
    assert cpu["server CPU s on"] == ""
    # The per-endpoint breakdown names the requests it counted.
    assert any("/api/2.0/mlflow/runs/log-batch" in line for line in lines)
    assert any("/v1/traces" in line for line in lines)
    assert any(line.strip().startswith("N=50 latency 0 ms: ratio") for line in lines)
    # Garbage-collection pauses are measured (and left out of the holds).
    [pause] = [line for line in lines if "longest garbage-collection pause" in line]
    assert float(re.search(r": ([0-9.]+)ms", pause).group(1)) > 0  # type: ignore[union-attr]
