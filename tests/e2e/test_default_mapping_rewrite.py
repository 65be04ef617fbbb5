"""The built-in mapping in version 2's forms writes exactly what its version 1 text wrote.

`mappings/default.yaml` was rewritten with `if`, `let`, constants and per-point defaults
(issue 16). `default_mapping_v1.yaml` beside this file is the mapping as it was just
before, kept to pin that rewrite: both are run over real Inspect evals (the recorded
hook payloads of the `ok` and `failing` scenarios, through the engine) and over a real
`.eval` log (through the dry run), and every operation must be the same.

A later change that means to change what the default writes changes this comparison
too: port it to `default_mapping_v1.yaml` as well, or drop this file once the rewrite
is old news.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from inspect_ai import eval as inspect_eval
from payloads import record_scenario
from replays import replay

from inspect_mlflow._commands.demo import demo_model, demo_task
from inspect_mlflow._commands.dryrun import dry_run
from inspect_mlflow._mapping import load_mapping
from inspect_mlflow._paths import default_mapping_path

V1 = Path(__file__).resolve().parents[1] / "support" / "default_mapping_v1.yaml"


def test_the_rewrite_is_version_2_and_shorter() -> None:
    new, old = default_mapping_path().read_text(), V1.read_text()
    assert load_mapping().version == 2 and load_mapping(V1).version == 1
    assert len(new.splitlines()) < len(old.splitlines())
    assert "\"'" not in new  # no doubly quoted constants left


@pytest.mark.parametrize("scenario", ["ok", "failing"])
def test_the_engine_writes_the_same_operations_on_real_evals(scenario: str) -> None:
    rec = record_scenario(scenario)
    new = replay(rec, load_mapping())
    old = replay(rec, load_mapping(V1))
    assert len(old.ops) > 20  # runs, params, metrics, tables, traces
    assert new.ops == old.ops
    assert new.engine.problems.summary() == old.engine.problems.summary()


@pytest.fixture(scope="module")
def eval_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real `.eval` log of the demo task (samples, scores, model and tool calls)."""
    log_dir = tmp_path_factory.mktemp("rewrite-logs")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("MLFLOW_TRACKING_URI", "INSPECT_MLFLOW_TRACKING_URI"):
            patch.delenv(name, raising=False)
        [log] = inspect_eval(demo_task(3), model=demo_model(), log_dir=str(log_dir), display="none")
    assert log.status == "success"
    return Path(log.location)


def _runs(report: Any) -> list[dict[str, Any]]:
    return [run.to_dict() for run in report.runs]


def test_the_dry_run_of_a_real_log_plans_the_same_writes(eval_log: Path) -> None:
    new = dry_run(load_mapping(), eval_log, secrets=[])
    old = dry_run(load_mapping(V1), eval_log, secrets=[])
    assert _runs(old) and _runs(new) == _runs(old)
    assert [p.to_dict() for p in new.problems] == [p.to_dict() for p in old.problems]
