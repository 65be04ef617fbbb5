"""The delivery process answers MLflow's per-request questions once, without path searches.

Each check runs in a fresh interpreter (the changes are process-wide, as in the delivery
process), with a finder that counts every search of ``sys.path`` for a module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

SPY = textwrap.dedent(
    """
    import collections, importlib
    searched = collections.Counter()

    def import_error(name):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as error:
            return type(error).__name__
        return None

    class Spy:
        def find_spec(self, name, path=None, target=None):
            searched[name.partition(".")[0]] += 1
            return None
    """
)
"""Counts, by top-level name, the imports that reached the end of ``sys.meta_path``."""


def run(script: str) -> dict[str, Any]:
    """Run ``SPY`` + ``script`` (which prints one JSON line last) without proxy variables."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    done = subprocess.run(
        [sys.executable, "-c", SPY + textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=env,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


PROBES = """
    import collections, importlib.util, json, sys
    from mlflow.tracking.request_header.registry import resolve_request_headers
    from inspect_mlflow._delivery.process import ENVIRONMENT_PROBES, mark_absent_probes


    absent = [n for n in ENVIRONMENT_PROBES if importlib.util.find_spec(n) is None]
    sys.meta_path.append(Spy())
    before = resolve_request_headers()
    searched_before = {n: searched[n] for n in ENVIRONMENT_PROBES}
    marked = mark_absent_probes()
    installed = mark_absent_probes(("json", "jmespath"))
    searched.clear()
    after = resolve_request_headers()
    failed = import_error("dbruntime")
    print(json.dumps({
        "marked": marked, "absent": absent, "installed_marked": installed,
        "before": before, "after": after,
        "searched_before": searched_before,
        "searched_after": {n: searched[n] for n in ENVIRONMENT_PROBES},
        "import_error": failed, "find_spec_after": importlib.util.find_spec("dbruntime"),
        "pyspark_listed": "pyspark" in sys.modules,
    }))
    """

HTTP_COSTS = """
    import collections, json, os, sys
    import requests.sessions
    from mlflow.tracking.request_header.registry import resolve_request_headers
    from inspect_mlflow._delivery.http_costs import fail_absent_imports, forget_proxies
    from inspect_mlflow._delivery.process import prepare_http


    sys.meta_path.append(Spy())
    before = resolve_request_headers()
    searched_before = searched["pyspark"]
    os.environ["HTTPS_PROXY"] = "http://proxy-one:3128"
    prepare_http()
    again = fail_absent_imports()
    searched.clear()
    after = resolve_request_headers()
    failed = import_error("pyspark.sql")
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


def test_absent_probe_modules_fail_at_once_and_the_headers_stay_the_same() -> None:
    result = run(PROBES)
    # Exactly the probes that are not installed are marked; installed modules never are.
    assert "dbruntime" in result["absent"]  # Databricks' runtime is never on a CI machine
    assert result["marked"] == result["absent"]
    assert result["installed_marked"] == []
    # Before, resolving the headers searched the path for each missing probe; after, never.
    assert all(result["searched_before"][name] > 0 for name in result["marked"])
    assert all(result["searched_after"][name] == 0 for name in result["marked"])
    assert result["import_error"] == "ModuleNotFoundError"
    assert result["find_spec_after"] is None  # "is it installed?" still answers no
    assert result["pyspark_listed"] is False  # MLflow reads `"pyspark" in sys.modules`
    assert result["after"] == result["before"]


def test_pyspark_imports_fail_at_once_and_proxies_are_read_once_per_environment() -> None:
    result = run(HTTP_COSTS)
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
