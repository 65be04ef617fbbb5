"""The delivery process answers MLflow's per-request questions once: pyspark, proxies.

In a fresh interpreter (the changes are process-wide, as in the delivery process): after
``prepare_http`` a request's headers are resolved without searching ``sys.path`` for
``pyspark``, which stays out of ``sys.modules``; the environment's proxies are read once
per host and again after a session opened with another environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import collections, json, os, sys
    import requests.sessions
    from mlflow.tracking.request_header.registry import resolve_request_headers
    from inspect_mlflow._delivery.http_costs import fail_absent_imports, forget_proxies
    from inspect_mlflow._delivery.process import prepare_http

    searched = collections.Counter()

    class Spy:
        def find_spec(self, name, path=None, target=None):
            searched[name.partition(".")[0]] += 1
            return None

    sys.meta_path.append(Spy())
    before = resolve_request_headers()
    searched_before = searched["pyspark"]
    os.environ["HTTPS_PROXY"] = "http://proxy-one:3128"
    prepare_http()
    again = fail_absent_imports()
    searched.clear()
    after = resolve_request_headers()
    try:
        import pyspark.sql  # noqa: F401
        failed = None
    except ModuleNotFoundError as error:
        failed = type(error).__name__
    lookup = requests.sessions.get_environ_proxies
    url = "https://mlflow.example.com/api/2.0/mlflow/runs/log-batch"
    first = lookup(url)
    os.environ["HTTPS_PROXY"] = "http://proxy-two:3128"
    cached = lookup(url)
    forget_proxies()
    fresh = lookup(url)
    os.environ["NO_PROXY"] = "mlflow.example.com"
    forget_proxies()
    bypassed = lookup(url)
    print(json.dumps({
        "before": before, "after": after, "again": again,
        "searched_before": searched_before, "searched_after": searched["pyspark"],
        "import_error": failed, "pyspark_listed": "pyspark" in sys.modules,
        "first": first, "cached": cached, "fresh": fresh, "bypassed": bypassed,
    }))
    """
)


def test_pyspark_imports_fail_at_once_and_proxies_are_read_once_per_environment() -> None:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=env,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["searched_before"] > 0  # MLflow asks for pyspark on every request
    assert result["searched_after"] == 0
    assert result["import_error"] == "ModuleNotFoundError"
    assert result["pyspark_listed"] is False  # MLflow reads `"pyspark" in sys.modules`
    assert result["again"] == []  # one finder, however often prepared
    assert result["after"] == result["before"]
    assert result["first"]["https"] == "http://proxy-one:3128"
    assert result["cached"] == result["first"]  # same environment: not read again
    assert result["fresh"]["https"] == "http://proxy-two:3128"  # a session's new environment
    assert result["bypassed"] == {}  # NO_PROXY still honoured
