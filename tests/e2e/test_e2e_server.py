"""End-to-end on the HTTP path: what a real eval sends to a real `mlflow server`.

The default-mapping checks and the two-task and credential scenarios already run on the
server (``test_e2e_default.py``, ``test_e2e_scenarios.py``); this module checks the shape
of the traffic, from the server's access log: runs created and closed once, values sent in
batches (never one request per metric, param or tag), each table uploaded once when its
run closes, ``mlflow.loggedArtifacts`` written once, one trace per sample.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from e2e_support import eval_events
from scenario_support import Scenario, run_scenario

from inspect_mlflow._commands.demo import demo_task

pytestmark = [pytest.mark.e2e, pytest.mark.server]

SAMPLES = 8
FILES = 8  # six tables, sample_results/<task>.json, eval_logs/<task>.json
API = "/api/2.0/mlflow"


@pytest.fixture(scope="module")
def traffic(
    mlflow_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Scenario, Counter[tuple[str, str]], float]:
    """One eval against the server, and the requests it caused (read before any check)."""
    before = mlflow_server.log_size()
    started = time.monotonic()
    scenario = run_scenario(
        tmp_path_factory.mktemp("http"),
        demo_task(SAMPLES, name="http_demo"),
        uri=mlflow_server.url,
        store_root=Path(mlflow_server.root),
        max_samples=4,
    )
    elapsed = time.monotonic() - started
    requests = mlflow_server.requests_since(before)
    assert scenario.logs[0].status == "success"
    return scenario, requests, elapsed


def _count(requests: Counter[tuple[str, str]], method: str, path: str) -> int:
    return requests[(method, path)]


def test_each_run_is_created_once_and_closed_once(traffic: Any) -> None:
    scenario, requests, _ = traffic
    assert _count(requests, "POST", f"{API}/runs/create") == 2
    assert _count(requests, "POST", f"{API}/runs/update") == 2
    assert _count(requests, "POST", f"{API}/experiments/create") == 1
    assert _count(requests, "POST", f"{API}/runs/search") == 0
    assert {r.info.status for r in scenario.runs()} == {"FINISHED"}


def test_values_go_in_batches(traffic: Any) -> None:
    scenario, requests, _ = traffic
    for single in ("log-metric", "log-parameter", "set-tag", "log-inputs"):
        # mlflow.loggedArtifacts, once; a task run's dataset and model inputs, which have
        # no batch form (one task run here)
        allowed = 1 if single in ("set-tag", "log-inputs") else 0
        assert _count(requests, "POST", f"{API}/runs/{single}") == allowed, single
    run = scenario.run("http_demo")
    points = sum(len(scenario.history(run, key)) for key in run.data.metrics)
    truth = eval_events(scenario.logs[0].location)
    emits = truth["model"] + truth["tool"] + SAMPLES + 2  # hook calls that produce values
    batches = _count(requests, "POST", f"{API}/runs/log-batch")
    assert 1 <= batches < emits < points


def test_each_artifact_is_uploaded_once(traffic: Any) -> None:
    scenario, requests, _ = traffic
    uploads = {path: n for (method, path), n in requests.items() if method == "PUT"}
    assert len(uploads) == FILES
    assert set(uploads.values()) == {1}
    run = scenario.run("http_demo")
    assert sorted(p.rsplit("/artifacts/", 1)[-1] for p in uploads) == sorted(
        scenario.artifact_paths(run)
    )


def test_one_trace_per_sample(traffic: Any) -> None:
    scenario, requests, _ = traffic
    started = sum(n for (method, path), n in requests.items() if path.endswith("/mlflow/traces"))
    assert started == SAMPLES
    assert len(scenario.traces(scenario.run("http_demo"))) == SAMPLES
