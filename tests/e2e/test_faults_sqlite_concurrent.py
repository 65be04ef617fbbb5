"""Several evals started at once on one new sqlite file all land, counts exact (issue 15,
case 3).

Each process that first opened a new ``sqlite:///`` file ran MLflow's schema migrations
on it; at the same time, one of them had its writes refused (spooled), and once the file
was left broken. The store is now set up under a lock file beside the database. Three
real eval processes (the default delivery process each) start together on a file that
does not exist yet, into one experiment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from contract_support import assert_matches_log
from e2e_support import new_experiment_name
from inspect_ai.log import read_eval_log

from inspect_mlflow._writer.spool import list_spool_files

pytestmark = [pytest.mark.e2e]

PROCESSES = 3
SAMPLES = 8

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from contract_support import slow_task
    from inspect_ai import eval as inspect_eval
    from inspect_mlflow._commands.demo import demo_model

    [log] = inspect_eval(
        slow_task({samples}, 0.2, name=sys.argv[1]),
        model=demo_model(),
        log_dir=sys.argv[2],
        display="none",
        max_samples=4,
    )
    print(log.location)
    """
)


SUPPORT = Path(__file__).resolve().parents[1] / "support"


def test_evals_started_at_once_on_a_new_sqlite_file_all_land(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    uri = f"sqlite:///{db}"
    experiment = new_experiment_name("sqlite-race")
    script = tmp_path / "child.py"
    script.write_text(SCRIPT.format(tests=str(SUPPORT), samples=SAMPLES), encoding="utf-8")
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_EXPERIMENT_NAME": experiment,
        "INSPECT_MLFLOW_AUTOLOG_ENABLED": "false",
        "INSPECT_MLFLOW_SPOOL_DIR": str(tmp_path / "spool"),
        "INSPECT_MLFLOW_FLUSH_TIMEOUT": "60",
    }
    assert not db.exists()
    children = [
        subprocess.Popen(
            [sys.executable, str(script), f"race{i}", str(tmp_path / f"logs{i}")],
            cwd=tmp_path,  # a sqlite store's artifacts go under ./mlruns
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(PROCESSES)
    ]
    outputs = [child.communicate(timeout=300) for child in children]
    for child, (_out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err[-3000:]
        assert "could not be delivered" not in err, err[-3000:]
    assert list_spool_files(tmp_path / "spool") == [], "a writer was refused and spooled"
    for out, _ in outputs:
        log = read_eval_log(out.strip().splitlines()[-1], header_only=True)
        assert log.status == "success"
        assert_matches_log(uri, experiment, log)
