"""`inspect-mlflow check`: exit codes, located problems, the effective mapping."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from inspect_mlflow._commands import cli as _cli
from inspect_mlflow._commands.cli import main
from inspect_mlflow._mapping import load_mapping, load_mapping_text
from inspect_mlflow._paths import default_mapping_path

REPO = Path(__file__).resolve().parents[2]

BROKEN = """\
version: 1
runs:
  task:
    open: task_starts
    close: task_end
    key: eval_id
    status: "'FINISHED'"
rules:
  task_end:
    - run: task
      metrics:
        total: lenght(x)
"""


@pytest.fixture(autouse=True)
def _no_user_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INSPECT_MLFLOW_MAPPING", raising=False)


def test_check_default_is_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{default_mapping_path()}: OK, ")
    assert " rules (" in out and "sample_end " in out and out.rstrip().endswith("eval, task")
    assert out.count("\n") == 1


def test_check_broken_file_prints_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    assert main(["check", str(path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        f'{path}:4:11: $.runs.task.open: "task_starts" is not a lifecycle point '
        "(hint: did you mean 'task_start'?)"
    )
    assert lines[-1] == f"{path}: INVALID, 1 problem"


def test_check_reports_compile_problems_with_hints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN.replace("task_starts", "task_start"))
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert (
        f"{path}:12:16: $.rules.task_end[0].metrics.total: unknown function lenght() "
        "(hint: did you mean length()?)"
    ) in out


def test_check_several_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    good = REPO / "mappings" / "examples" / "scores-only.yaml"
    assert main(["check", str(good), str(broken)]) == 1
    out = capsys.readouterr().out
    assert f"{good}: OK, 2 rules (task_end 1, sample_end 1); run kinds: eval, task" in out
    assert f"{broken}: INVALID" in out


def test_check_examples_are_ok(capsys: pytest.CaptureFixture[str]) -> None:
    examples = sorted((REPO / "mappings" / "examples").glob("*.yaml"))
    assert len(examples) >= 2
    assert main(["check", *map(str, examples)]) == 0
    assert capsys.readouterr().out.count(": OK, ") == len(examples)


def test_check_uses_the_env_mapping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    monkeypatch.setenv("INSPECT_MLFLOW_MAPPING", str(path))
    assert main(["check"]) == 1
    assert str(path) in capsys.readouterr().out


def test_print_effective_is_yaml_that_round_trips(capsys: pytest.CaptureFixture[str]) -> None:
    example = REPO / "mappings" / "examples" / "custom-metric.yaml"
    assert main(["check", "--print-effective", str(example)]) == 0
    captured = capsys.readouterr()
    assert ": OK, " in captured.err and ": OK, " not in captured.out
    again = load_mapping_text(captured.out, "effective.yaml")
    original = load_mapping(example)
    assert again.effective == original.effective
    ids = [rule["id"] for rule in again.effective["rules"]["sample_end"]]
    assert ids[-1] == "output-length" and "sample-metrics" in ids


def test_unexpected_failure_is_one_line_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def explode(args: object) -> int:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(_cli, "_run_check", explode)
    assert main(["check"]) == 2
    err = capsys.readouterr().err
    assert err == "inspect-mlflow check: error: RuntimeError: disk on fire\n"


def test_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "check" in capsys.readouterr().out
    assert main(["check", "--help"]) == 0
    assert "--print-effective" in capsys.readouterr().out
    assert main([]) == 2
    assert main(["nonsense"]) == 2


def _console_script() -> list[str]:
    script = Path(sys.executable).parent / "inspect-mlflow"
    return (
        [str(script)] if script.exists() else [sys.executable, "-m", "inspect_mlflow._commands.cli"]
    )


def test_console_script_from_another_directory(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "INSPECT_MLFLOW_MAPPING"}
    done = subprocess.run(
        [*_console_script(), "check"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert ": OK, " in done.stdout
    assert "Traceback" not in done.stderr

    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    done = subprocess.run(
        [*_console_script(), "check", "broken.yaml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stdout.startswith("broken.yaml:4:11: $.runs.task.open: ")
