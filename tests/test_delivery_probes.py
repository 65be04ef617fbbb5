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
    from inspect_mlflow._delivery import mark_absent_probes

    searched = collections.Counter()

    class Spy:
        def find_spec(self, name, path=None, target=None):
            searched[name.partition(".")[0]] += 1
            return None

    absent = [n for n in ("dbruntime", "IPython", "pyspark") if importlib.util.find_spec(n) is None]
    sys.meta_path.append(Spy())
    before = resolve_request_headers()
    searched_before = sum(searched.values())
    marked = mark_absent_probes(("dbruntime", "IPython", "pyspark", "json", "jmespath"))
    searched.clear()
    after = resolve_request_headers()
    try:
        import dbruntime  # noqa: F401
        failed = None
    except ModuleNotFoundError as error:
        failed = type(error).__name__
    print(json.dumps({
        "marked": marked, "absent": absent, "before": before, "after": after,
        "searched_before": searched_before, "searched_after": sum(searched.values()),
        "import_error": failed, "json_ok": sys.modules["json"] is not None,
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
    assert result["json_ok"] is True
    # Before, resolving the headers searched the path for the missing modules; after, never.
    assert result["searched_before"] > 0
    assert result["searched_after"] == 0
    assert result["import_error"] == "ModuleNotFoundError"
    assert result["after"] == result["before"]
