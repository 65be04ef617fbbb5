"""The delivery process stops MLflow's per-request environment probes from searching sys.path."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import collections, importlib.util, json, sys
    from mlflow.tracking.request_header.registry import resolve_request_headers
    from inspect_mlflow._delivery.process import ENVIRONMENT_PROBES, mark_absent_probes

    searched = collections.Counter()

    class Spy:
        def find_spec(self, name, path=None, target=None):
            searched[name.partition(".")[0]] += 1
            return None

    absent = [n for n in ENVIRONMENT_PROBES if importlib.util.find_spec(n) is None]
    sys.meta_path.append(Spy())
    before = resolve_request_headers()
    searched_before = {n: searched[n] for n in ENVIRONMENT_PROBES}
    marked = mark_absent_probes()
    installed = mark_absent_probes(("json", "jmespath"))
    searched.clear()
    after = resolve_request_headers()
    try:
        import dbruntime  # noqa: F401
        failed = None
    except ModuleNotFoundError as error:
        failed = type(error).__name__
    print(json.dumps({
        "marked": marked, "absent": absent, "installed_marked": installed,
        "before": before, "after": after,
        "searched_before": searched_before,
        "searched_after": {n: searched[n] for n in ENVIRONMENT_PROBES},
        "import_error": failed, "find_spec_after": importlib.util.find_spec("dbruntime"),
        "pyspark_listed": "pyspark" in sys.modules,
    }))
    """
)


def test_absent_probe_modules_fail_at_once_and_the_headers_stay_the_same() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
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
