"""``inspect-mlflow compare`` on two real evals logged live by the hook to a sqlite store.

A: the demo task, two epochs, the demo model (wrong on samples 5 and 10). B: the same
questions, one epoch, a model that answers without the tool and is wrong on multiples of
3, and sample 3 raises. So samples flip both ways, one sample has no score, and the epoch
counts differ. The expected numbers come from the ``.eval`` logs, not from MLflow.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from e2e_support import download_json, failing_task, run_logged
from inspect_ai.model import ModelOutput, ModelUsage, get_model
from mlflow import MlflowClient

from inspect_mlflow._commands.cli import main
from inspect_mlflow._commands.compare import compare_runs, compare_scores
from inspect_mlflow._commands.demo import DEMO_MODEL, demo_task


def _off_by_one_on_threes(input: list[Any], tools: Any, tool_choice: Any, config: Any) -> Any:
    """Answers directly, wrong (off by one) when the first number is a multiple of 3."""
    x, y = [int(n) for n in re.findall(r"-?\d+", input[-1].text)][:2]
    output = ModelOutput.from_content(model=DEMO_MODEL, content=str(x + y + (x % 3 == 0)))
    output.usage = ModelUsage(input_tokens=3, output_tokens=1, total_tokens=4)
    return output


class Evals:
    """Two (three) logged evals and their store."""

    def __init__(self, root: Path) -> None:
        self.uri = f"sqlite:///{root}/mlflow.db"
        self.experiment = "compare-e2e"
        self.client = MlflowClient(tracking_uri=self.uri)
        self.client.create_experiment(self.experiment, artifact_location=str(root / "art"))
        other = get_model(DEMO_MODEL, custom_outputs=_off_by_one_on_threes)
        [self.log_a] = run_logged(demo_task(10), self.uri, self.experiment, epochs=2)
        b_task = failing_task({3}, samples=10, name="demo_addition")
        [self.log_b] = run_logged(
            b_task, self.uri, self.experiment, model=other, fail_on_error=False
        )
        no_tables = {"INSPECT_MLFLOW_LOG_ARTIFACTS": "false"}
        [self.log_c] = run_logged(
            failing_task({3}, samples=10, name="demo_addition"),
            self.uri,
            self.experiment,
            model=other,
            fail_on_error=False,
            extra_env=no_tables,
        )

    def task_run(self, eval_id: str) -> Any:
        exp = self.client.get_experiment_by_name(self.experiment)
        [run] = self.client.search_runs(
            [exp.experiment_id], f"tags.`inspect.eval_id` = '{eval_id}'"
        )
        return run


@pytest.fixture(scope="module")
def evals(tmp_path_factory: pytest.TempPathFactory) -> Evals:
    return Evals(tmp_path_factory.mktemp("compare"))


def _log_scores(log: Any) -> dict[str, dict[str, list[Any]]]:
    """``{scorer: {sample_id: [epoch values]}}`` straight from an Inspect log."""
    scores: dict[str, dict[str, list[Any]]] = {}
    for sample in log.samples:
        for scorer in ("match", "includes"):
            values = scores.setdefault(scorer, {}).setdefault(str(sample.id), [])
            if sample.scores:
                values.append(sample.scores[scorer].value)
    return scores


def test_cli_json_and_log_match_the_logs(evals: Evals, capsys: pytest.CaptureFixture[str]) -> None:
    run_a = evals.task_run(evals.log_a.eval.eval_id)
    args = ["compare", run_a.info.run_id, evals.log_b.eval.eval_id, "--format", "json", "--log"]
    args += ["--experiment", evals.experiment, "--tracking-uri", evals.uri]
    assert main(args) == 0
    document = json.loads(capsys.readouterr().out)
    expected = compare_scores(_log_scores(evals.log_a), _log_scores(evals.log_b))
    by_scorer = {row["scorer"]: row for row in document["scorers"]}
    assert set(by_scorer) == {"match", "includes"}
    for want in expected.scorers:
        got = by_scorer[want.scorer]
        for stat in ("n", "mean_a", "mean_b", "diff", "ci_low", "ci_high", "p_value", "mde"):
            assert got[stat] == pytest.approx(getattr(want, stat)), stat
    match = by_scorer["match"]
    # A is wrong on 5 and 10, B on 6 and 9; sample 3 raised in B
    assert match["n"] == 9 and match["test"] == "mcnemar_exact"
    assert match["a_right_b_wrong"] == ["6", "9"]
    assert match["a_wrong_b_right"] == ["5", "10"]
    assert match["unscored_b"] == ["3"] and match["only_a"] == match["only_b"] == []
    assert match["epochs_a"] == {"2": 9} and match["epochs_b"] == {"1": 9}
    assert len(match["epoch_mismatch"]) == 9
    assert match["p_value"] == pytest.approx(1.0)  # 2 worse, 2 better
    assert document["a"]["source"] == document["b"]["source"] == "mlflow-table"

    logged = evals.client.get_run(document["logged_run_id"])
    tags = logged.data.tags
    assert tags["inspect.comparison"] == "true"
    assert tags["inspect.compare.a_run_id"] == run_a.info.run_id
    assert tags["inspect.compare.b_run_id"] == evals.task_run(evals.log_b.eval.eval_id).info.run_id
    assert logged.info.status == "FINISHED"
    assert logged.data.metrics["compare/match/diff"] == pytest.approx(match["diff"])
    assert logged.data.metrics["compare/match/p_value"] == pytest.approx(match["p_value"])
    assert logged.data.metrics["compare/includes/n"] == 9
    assert logged.data.params["reducers"] == "mean"
    table = download_json(evals.client, logged.info.run_id, "inspect/comparison.json")
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert [r["scorer"] for r in rows] == ["match", "includes"]
    assert rows[0]["a_right_b_wrong"] == "6, 9"
    assert "inspect/comparison.json" in tags["mlflow.loggedArtifacts"]
    samples = download_json(evals.client, logged.info.run_id, "inspect/comparison_samples.json")
    assert len(samples["data"]) == 18


def test_text_output_names_flips_and_gaps(evals: Evals, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["compare", evals.log_a.eval.eval_id, evals.log_b.eval.eval_id]
    assert main([*args, "--experiment", evals.experiment, "--tracking-uri", evals.uri]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^match\s+9\s+0\.778\s+0\.778\s+\+0\.000\s", text, re.M), text
    assert "match: A right, B wrong (2): 6, 9" in text
    assert "match: A wrong, B right (2): 5, 10" in text
    assert "match: errored in B, no score (1): 3" in text
    assert "match: epochs: A 9 samples x 2; B 9 samples x 1" in text


def test_api_reads_traces_and_log_files_alike(evals: Evals) -> None:
    run_a = evals.task_run(evals.log_a.eval.eval_id).info.run_id
    run_b = evals.task_run(evals.log_b.eval.eval_id).info.run_id
    run_c = evals.task_run(evals.log_c.eval.eval_id).info.run_id
    from_table = compare_runs(run_a, run_b, tracking_uri=evals.uri, resamples=2000)
    from_traces = compare_runs(run_a, run_c, tracking_uri=evals.uri, resamples=2000)
    from_files = compare_runs(evals.log_a.location, evals.log_b.location, resamples=2000)
    assert from_traces.b.source == "mlflow-traces" and from_files.a.source == "eval-log"
    assert any("scores read from" in note for note in from_traces.notes)
    for other in (from_traces, from_files):
        for want in from_table.scorers:
            got = other.get(want.scorer)
            assert (got.n, got.diff, got.p_value) == (want.n, want.diff, want.p_value)
            assert got.a_right_b_wrong == want.a_right_b_wrong
            assert got.unscored_b == want.unscored_b == ["3"]


def test_unknown_reference_exits_1(evals: Evals, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["compare", "nope", evals.log_b.eval.eval_id, "--tracking-uri", evals.uri]
    assert main([*args, "--experiment", evals.experiment]) == 1
    assert "no task run" in capsys.readouterr().err
    # a task name matches all three runs: both sides would be the latest
    args = ["compare", "demo_addition", "demo_addition", "--tracking-uri", evals.uri]
    assert main([*args, "--experiment", evals.experiment]) == 1
    assert "the same run" in capsys.readouterr().err


def _wrong_first_time_on_evens() -> Any:
    """A direct-answer model wrong on a question's first call when its x is even."""
    seen: dict[str, int] = {}

    def answer(input: list[Any], tools: Any, tool_choice: Any, config: Any) -> Any:
        question = input[-1].text
        x, y = [int(n) for n in re.findall(r"-?\d+", question)][:2]
        seen[question] = seen.get(question, 0) + 1
        wrong = x % 2 == 0 and seen[question] == 1
        output = ModelOutput.from_content(model=DEMO_MODEL, content=str(x + y + wrong))
        output.usage = ModelUsage(input_tokens=3, output_tokens=1, total_tokens=4)
        return output

    return get_model(DEMO_MODEL, custom_outputs=answer)


def test_several_epoch_reducers_give_a_row_each(sqlite_store: Any) -> None:
    from inspect_ai import Epochs

    experiment_id = sqlite_store.create_experiment()
    uri, name = sqlite_store.tracking_uri, sqlite_store.experiment_name
    epochs = Epochs(2, ["mean", "max"])
    [log_a] = run_logged(demo_task(6), uri, name, model=_wrong_first_time_on_evens(), epochs=epochs)
    [log_b] = run_logged(demo_task(6), uri, name, epochs=epochs)  # wrong on 5, both epochs
    from_logs = compare_runs(log_a.location, log_b.location, resamples=1000)
    assert [(r.scorer, r.reducer) for r in from_logs.scorers] == [
        ("match", "mean"),
        ("match", "max"),
        ("includes", "mean"),
        ("includes", "max"),
    ]
    mean = from_logs.get("match", "mean")
    # A per sample: 1, .5, 1, .5, 1, .5; B: 1, 1, 1, 1, 0, 1
    assert mean.mean_a == pytest.approx(0.75) and mean.mean_b == pytest.approx(5 / 6)
    assert mean.diff == pytest.approx((0.5 * 3 - 1) / 6)
    assert mean.test == "paired_t" and not mean.binary
    top = from_logs.get("match", "max")
    assert top.binary and top.test == "mcnemar_exact" and top.p_value == pytest.approx(1.0)
    assert top.a_right_b_wrong == ["5"] and top.a_wrong_b_right == []
    assert top.p_holm == pytest.approx(min(1.0, 4 * min(r.p_value for r in from_logs.scorers)))
    from_mlflow = compare_runs(
        log_a.eval.eval_id,
        log_b.eval.eval_id,
        tracking_uri=uri,
        experiment=name,
        reducers=["mean", "max"],
        resamples=1000,
    )
    assert from_mlflow.a.experiment_id == experiment_id
    for want in from_logs.scorers:
        got = from_mlflow.get(want.scorer, want.reducer)
        assert (got.n, got.diff, got.p_value, got.p_holm) == (
            want.n,
            want.diff,
            want.p_value,
            want.p_holm,
        )


def test_summary_keys_name_the_other_reducers() -> None:
    from inspect_mlflow._commands.compare.sources import reducers_from_metrics

    metrics = {"match/accuracy": 1.0, "match/max/accuracy": 1.0, "match/pass_at_2/stderr": 0}
    metrics |= {"usage/mockllm/model/input_tokens": 3, "match/not_a_reducer/x": 1}
    assert reducers_from_metrics(metrics, ["match"]) == ["mean", "max", "pass_at_2"]
    assert reducers_from_metrics({"match/accuracy": 1.0}, ["match"]) == ["mean"]


def test_an_imported_run_compares_like_the_live_one(evals: Evals) -> None:
    run_a = evals.task_run(evals.log_a.eval.eval_id).info.run_id
    b = evals.log_b.eval.eval_id
    live = compare_runs(
        run_a, b, tracking_uri=evals.uri, experiment=evals.experiment, resamples=500
    )
    args = ["import", evals.log_b.location, "--experiment", "compare-imported"]
    assert main([*args, "--tracking-uri", evals.uri]) == 0
    imported = compare_runs(
        run_a,
        b,
        tracking_uri=evals.uri,
        experiment="compare-imported",
        resamples=500,
    )
    assert imported.b.run_id != live.b.run_id and imported.b.source == "mlflow-table"
    for want in live.scorers:
        got = imported.get(want.scorer)
        assert (got.n, got.diff, got.p_value, got.ci_low) == (
            want.n,
            want.diff,
            want.p_value,
            want.ci_low,
        )
        assert got.a_right_b_wrong == want.a_right_b_wrong and got.unscored_b == ["3"]
