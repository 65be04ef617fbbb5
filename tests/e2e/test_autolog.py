"""Provider autolog through real evals: on during the run, off after it, the user's own left alone.

boto3 is installed here, so MLflow's ``bedrock`` flavor is available; anthropic (and most
other providers) are not, which exercises the "skip what is not installed" path. The
state is read from inside a solver, while the eval runs, with MLflow's own
``autologging_is_disabled``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import new_experiment_name, run_logged
from inspect_ai import Task
from inspect_ai.solver import Generate, TaskState, generate, solver, use_tools

from inspect_mlflow._commands.demo import add_tool, demo_task
from inspect_mlflow._delivery import autolog as _autolog

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        importlib.util.find_spec("boto3") is None, reason="needs boto3 for the bedrock flavor"
    ),
]

_seen: list[bool] = []
"""``autologging_is_disabled('bedrock')`` as each sample saw it."""


def _bedrock_disabled() -> bool:
    from mlflow.utils.autologging_utils import autologging_is_disabled

    return bool(autologging_is_disabled("bedrock"))


@solver
def probe() -> Any:
    async def solve(state: TaskState, generate: Generate) -> TaskState:
        _seen.append(_bedrock_disabled())
        return state

    return solve


def _probed_task() -> Task:
    base = demo_task(2, name="autolog_probe")
    return Task(
        name="autolog_probe",
        dataset=base.dataset,
        solver=[probe(), use_tools(add_tool()), generate()],
        scorer=base.scorer,
    )


@pytest.fixture
def bedrock_off() -> Iterator[None]:
    """Start and end each test with bedrock autolog off (it is process-wide state)."""
    import mlflow.bedrock

    mlflow.bedrock.autolog(disable=True, silent=True)
    _seen.clear()
    try:
        yield
    finally:
        mlflow.bedrock.autolog(disable=True, silent=True)
        _seen.clear()


def _run(tmp_path: Path, caplog: pytest.LogCaptureFixture, **extra_env: str) -> None:
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with caplog.at_level(logging.WARNING, logger="inspect_mlflow"):
            logs = run_logged(
                _probed_task(),
                f"sqlite:///{tmp_path}/mlflow.db",
                new_experiment_name("autolog"),
                log_dir=str(tmp_path / "logs"),
                extra_env=dict(extra_env),
            )
    finally:
        os.chdir(cwd)
    assert logs[0].status == "success"
    assert len(_seen) == 2
    assert [r for r in caplog.records if r.name.startswith("inspect_mlflow")] == []


@pytest.mark.usefixtures("bedrock_off")
def test_bedrock_is_on_during_the_run_and_off_after(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert _bedrock_disabled()
    _run(
        tmp_path,
        caplog,
        INSPECT_MLFLOW_AUTOLOG_ENABLED="true",
        # anthropic is not installed here: skipped without an error or a warning
        INSPECT_MLFLOW_AUTOLOG_MODELS="anthropic,bedrock",
    )
    assert _seen == [False, False]
    assert _bedrock_disabled()


@pytest.mark.usefixtures("bedrock_off")
def test_autolog_the_user_switched_on_stays_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import mlflow.bedrock

    mlflow.bedrock.autolog(silent=True)
    assert not _bedrock_disabled()
    _run(
        tmp_path,
        caplog,
        INSPECT_MLFLOW_AUTOLOG_ENABLED="true",
        INSPECT_MLFLOW_AUTOLOG_MODELS="bedrock",
    )
    assert _seen == [False, False]
    assert not _bedrock_disabled()


@pytest.mark.usefixtures("bedrock_off")
def test_nothing_is_switched_on_when_autolog_is_disabled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _run(
        tmp_path,
        caplog,
        INSPECT_MLFLOW_AUTOLOG_ENABLED="false",
        INSPECT_MLFLOW_AUTOLOG_MODELS="bedrock",
    )
    assert _seen == [True, True]
    assert _bedrock_disabled()


def test_unavailable_providers_are_skipped() -> None:
    missing = [
        name
        for name, (_, sdk) in _autolog.PROVIDERS.items()
        if importlib.util.find_spec(sdk.split(".")[0]) is None
    ]
    assert "anthropic" in missing
    assert _autolog.enable(missing) == []
