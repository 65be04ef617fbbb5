"""A virtual environment with the other MLflow integration for Inspect, from the registry.

``overhead.py --compare-pypi`` runs the same evals with ``inspect-mlflow==0.9.0`` (a
different project that happens to share the distribution name), so its figures stand
beside ours in one run. Both packages are called ``inspect_mlflow``, so it gets a virtual
environment of its own, with the same Inspect and MLflow versions as this one: the eval
and the server are the same, only the integration differs. Its evals run
``_child.py --foreign`` with that environment's interpreter.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from importlib.metadata import version
from pathlib import Path

PYPI_PACKAGE = "inspect-mlflow==0.9.0"

PYPI_ENV = {"MLFLOW_INSPECT_TRACING": "true"}
"""Its evals log traces too (off by default there; ours logs one per sample)."""


def _python(root: Path) -> Path:
    return root / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def pypi_python(root: Path, package: str = PYPI_PACKAGE) -> Path:
    """The interpreter of a virtual environment at ``root`` holding ``package``.

    Made once (a minute or two: pip resolves Inspect's and MLflow's requirements); an
    environment already there with the package is reused. Its MLflow client is
    ``mlflow-skinny`` (what that package requires) at this environment's MLflow version.
    """
    python = _python(root)
    marker = root / ".benchmark-ready"
    if marker.exists() and marker.read_text() == package:
        return python
    print(f"making a virtual environment with {package} in {root} ...", file=sys.stderr)
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    pins = [package, f"inspect-ai=={version('inspect-ai')}", f"mlflow-skinny=={version('mlflow')}"]
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *pins],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise SystemExit(f"could not install {' '.join(pins)} into {root}:\n{done.stderr[-3000:]}")
    marker.write_text(package)
    return python
