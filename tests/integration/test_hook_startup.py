"""The hook's ``run_start`` does not wait for MLflow's import (seconds) on the event loop.

With delivery in the eval's process, MLflow is imported by the session's worker thread:
``on_run_start`` must return while that import is still going on, and the writer must be
built once it is done.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

_RUN_START_WITHOUT_MLFLOW = r"""
import asyncio, importlib.abc, importlib.machinery, os, sys, threading

gate = threading.Event()


class GatedLoader(importlib.abc.Loader):
    # Waits for the gate before running mlflow/__init__.py. Waiting here holds only the
    # lock of the module `mlflow`; waiting in find_spec would hold Python's global import
    # lock and stop every import of every thread.
    def __init__(self, real):
        self.real = real

    def create_module(self, spec):
        return self.real.create_module(spec)

    def exec_module(self, module):
        gate.wait(60)
        self.real.exec_module(module)


class Gate(importlib.abc.MetaPathFinder):
    # Holds any thread but the main one at `import mlflow` until the gate opens.
    def find_spec(self, name, path=None, target=None):
        if name != "mlflow" or threading.current_thread() is threading.main_thread():
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        spec.loader = GatedLoader(spec.loader)
        return spec


sys.meta_path.insert(0, Gate())
from inspect_ai.hooks import RunStart

from inspect_mlflow._inspect.hook import MlflowTrackingHook

hook = MlflowTrackingHook()
assert hook.enabled()


async def main():
    start = RunStart(eval_set_id=None, run_id="r1", task_names=["t"])
    await asyncio.wait_for(hook.on_run_start(start), 20)


asyncio.run(main())
# A module being imported is in sys.modules already; only a finished import has a version.
print("imported on the loop:", hasattr(sys.modules.get("mlflow"), "__version__"))
gate.set()
session = hook._session
assert session._worker.drain(60)
print("writer built:", session.writer is not None and hasattr(sys.modules["mlflow"], "__version__"))
"""


def test_run_start_returns_while_mlflow_is_still_importing(tmp_path: Any) -> None:
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",  # nothing listens: nothing is sent
        "INSPECT_MLFLOW_AUTOLOG_ENABLED": "false",
        "INSPECT_MLFLOW_SPOOL_DIR": str(tmp_path / "spool"),
        "INSPECT_MLFLOW_DELIVERY": "thread",  # in the eval's process: its worker imports
    }
    env.pop("INSPECT_MLFLOW_TRACKING_URI", None)
    done = subprocess.run(
        [sys.executable, "-c", _RUN_START_WITHOUT_MLFLOW],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "imported on the loop: False" in done.stdout
    assert "writer built: True" in done.stdout
