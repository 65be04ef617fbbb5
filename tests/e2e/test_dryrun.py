"""`inspect-mlflow check MAPPING --log LOG`: a dry run of a mapping on a real eval log.

The log is a known one: the offline demo eval (3 samples, one at a time), run once per
module with the hook off. Nothing here touches MLflow.
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

import pytest
from e2e_support import env
from inspect_ai import eval as inspect_eval
from inspect_ai.log import read_eval_log, write_eval_log

from inspect_mlflow._commands.cli import main
from inspect_mlflow._commands.demo import demo_model, demo_task
from inspect_mlflow._commands.dryrun import dry_run
from inspect_mlflow._inspect.payload_fields import field_typos
from inspect_mlflow._mapping import load_mapping
from inspect_mlflow._paths import default_mapping_path

SAMPLES = 3


@pytest.fixture(scope="module")
def known_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo eval's .eval log (3 samples, completed in dataset order)."""
    log_dir = tmp_path_factory.mktemp("dryrun-logs")
    off = {"MLFLOW_TRACKING_URI": None, "INSPECT_MLFLOW_TRACKING_URI": None}
    with env(**off):
        [log] = inspect_eval(
            demo_task(SAMPLES),
            model=demo_model(),
            log_dir=str(log_dir),
            display="none",
            max_samples=1,
        )
    assert log.status == "success"
    return Path(log.location)


@pytest.fixture(autouse=True)
def _default_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("INSPECT_MLFLOW_MAPPING", "INSPECT_MLFLOW_LOG_ARTIFACTS", "INSPECT_MLFLOW_TRACES"):
        monkeypatch.delenv(name, raising=False)


def normalise(text: str, log_path: Path) -> str:
    """Replace the ids and times of this particular eval by placeholders."""
    log = read_eval_log(str(log_path), header_only=True)
    text = text.replace(str(log_path), "<LOG>").replace(str(default_mapping_path()), "<MAP>")
    text = text.replace(log.eval.run_id, "<RUN_ID>").replace(log.eval.eval_id, "<EVAL_ID>")
    return re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", "<TIME>", text)


def test_text_report_of_the_default_mapping(
    known_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--log", str(known_log)]) == 0
    out = normalise(capsys.readouterr().out, known_log)
    lines = out.splitlines()
    assert lines[0].startswith("<MAP>: OK, ")
    assert "Dry run of <MAP> on <LOG> (nothing is written)" in lines
    # The stable parts of the report, as documented in docs/dry-run.md.
    expected = [
        f"run eval:<RUN_ID>  name 'inspect-{read_run_id(known_log)[:8]}'  kind eval  -> FINISHED",
        "  time: <TIME> -> <TIME>",
        "    inspect.tasks = demo_addition",
        "run task:<EVAL_ID>  name 'demo_addition'  kind task  parent eval:<RUN_ID>  -> FINISHED",
        "    task = demo_addition",
        "    model = mockllm/model",
        f"    dataset.samples = {SAMPLES}",
        f"    total_samples  step 0: {SAMPLES}",
        f"    per_sample/match  steps 0..{SAMPLES - 1} ({SAMPLES} points): first 1, last 1",
        f"    per_call/model_call  steps 0..{2 * SAMPLES - 1} ({2 * SAMPLES} points): "
        f"first 1, last {2 * SAMPLES}",
        f"    per_call/tool_call  steps 0..{SAMPLES - 1} ({SAMPLES} points): "
        f"first 1, last {SAMPLES}",
        f"    inspect/samples.json: {SAMPLES} rows, ",
        f"    sample_results/demo_addition.json: {SAMPLES} records",
        "problems (0)",
    ]
    squeezed = [re.sub(" +", " ", got) for got in lines]
    for line in expected:
        want = re.sub(" +", " ", line)
        assert any(got.startswith(want) for got in squeezed), f"missing: {line!r}\n{out}"
    row = next(got for got in lines if got.startswith('      row 1: {"sample_id": 1'))
    assert '"input": "What is 1 + 0?"' in row
    traces = next(got for got in lines if got.startswith(f"  traces ({SAMPLES}): "))
    assert traces.endswith(f"feedback: includes {SAMPLES}, match {SAMPLES}")
    assert "    first: 'sample 1 (epoch 1)' OK, " in out
    # Optional fields this eval does not have are listed, grouped by the absent field, at
    # places named by the mapping's file name (not the path of the installed package).
    empty = lines[lines.index(next(x for x in lines if x.startswith("empty on this log"))) :]
    assert "  spec.dataset.name: 1 at default.yaml:" in "\n".join(empty)
    assert any(x.startswith("  eval_set_id: ") for x in empty)
    assert "<MAP>" not in "\n".join(empty) and "site-packages" not in out
    assert not any(x.startswith("likely typos") for x in lines)
    assert lines[-1].startswith("0 likely typos, 0 problems; ")


def read_run_id(path: Path) -> str:
    return read_eval_log(str(path), header_only=True).eval.run_id


def test_json_report_has_keys_values_and_steps(
    known_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--log", str(known_log), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    [entry] = doc["mappings"]
    assert entry["valid"] is True
    report = entry["dry_run"]
    log = read_eval_log(str(known_log))
    parent, task = report["runs"]
    assert parent["key"] == f"eval:{log.eval.run_id}" and parent["status"] == "FINISHED"
    assert task["parent"] == parent["key"] and task["name"] == "demo_addition"
    assert task["params"]["task"] == "demo_addition"
    scores = [1.0 if s.scores["match"].value == "C" else 0.0 for s in log.samples]
    assert task["metrics"]["per_sample/match"] == [[i, v] for i, v in enumerate(scores)]
    assert [p[0] for p in task["metrics"]["per_call/model_call"]] == list(range(2 * SAMPLES))
    assert task["tables"]["inspect/samples.json"]["rows"] == SAMPLES
    assert task["tables"]["inspect/sample_scores.json"]["rows"] == 2 * SAMPLES
    assert task["traces"]["count"] == SAMPLES
    assert task["traces"]["feedback"] == {"match": SAMPLES, "includes": SAMPLES}
    # Times come from the log (its stats have second precision).
    assert task["start_time"][:19] == log.stats.started_at[:19]
    assert task["end_time"][:19] == log.stats.completed_at[:19]
    assert report["problems"] == [] and report["typos"] == []
    nothing = {e["expression"]: e["absent"] for e in report["gave_nothing"]}
    assert nothing["spec.dataset.name"] == "spec.dataset.name"
    assert nothing["sample.error.message"] == "sample.error"


def test_json_and_eval_logs_give_the_same_dry_run(known_log: Path, tmp_path: Path) -> None:
    as_json = tmp_path / known_log.with_suffix(".json").name
    write_eval_log(read_eval_log(str(known_log)), str(as_json), format="json")
    mapping = load_mapping(None)
    a, b = dry_run(mapping, known_log).to_dict(), dry_run(mapping, as_json).to_dict()
    a.pop("log"), b.pop("log")
    for run in a["runs"] + b["runs"]:
        for table in run["tables"].values():
            for row in table["first_rows"]:
                row.pop("location", None)
        run["artifacts"].pop("eval_logs/demo_addition.json", None)  # holds the location
    for run, log in [(r, known_log) for r in a["runs"]] + [(r, as_json) for r in b["runs"]]:
        note = run["tags"].get("mlflow.note.content")
        if note:  # the description names the log's file
            note = note.replace(str(log), "<log>").replace(str(log.parent), "<dir>")
            run["tags"]["mlflow.note.content"] = note
        if "inspect.log" in run["tags"]:  # so does the task run's tag
            assert run["tags"]["inspect.log"] == str(log)
            run["tags"]["inspect.log"] = "<log>"
    assert a == b


BAD = """\
version: 1
counters: [sample]
runs:
  task:
    open: task_start
    close: task_end
    key: eval_id
    name: spec.task
    status: "'FINISHED'"
rules:
  sample_end:
    - id: bad-metrics
      run: task
      count: sample
      step: counter.sample.index
      metrics:
        sample/answer: sample.output.completion
        s/a_b: "`2`"
        "s/{'a@b'}": "`1`"
        sample/typo: sample.scroes.match.value
      params:
        events: json(sample.events)
  sample_event:
    - id: never
      run: task
      when: event.event == 'no-such-event'
      tags:
        seen: "'yes'"
"""


def test_flags_wrong_types_collisions_limits_and_empty_expressions(
    known_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mapping = tmp_path / "bad.yaml"
    mapping.write_text(BAD)
    assert main(["check", str(mapping), "--log", str(known_log), "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)["mappings"][0]["dry_run"]
    # A text metric is a value of the wrong type, at the line of its expression.
    wrong = next(p for p in report["problems"] if p["kind"] == "rejected_value")
    assert wrong["where"].startswith(f"{mapping}:17:")
    assert "must be a number" in wrong["message"] and wrong["count"] == SAMPLES
    by_kind = {p["kind"]: p for p in report["problems"]}
    # Two keys that become one MLflow-safe key: the later one is renamed, and said so.
    assert by_kind["key_collision"]["where"].startswith(f"{mapping}:19:")
    assert "'s/a@b' and 's/a_b' both become 's/a_b'" in by_kind["key_collision"]["message"]
    assert "param value cut to MLflow's limit of 6000" in by_kind["over_limit"]["message"]
    assert "MLflow refuses to change a param" in by_kind["param_changed"]["message"]
    assert by_kind["param_changed"]["count"] == SAMPLES - 1
    # A field EvalSample does not have is a likely typo, not merely empty on this log.
    assert report["typos"] == [
        {
            "where": f"{mapping}:20:22: $.rules.sample_end[0].metrics['sample/typo']",
            "expression": "sample.scroes.match.value",
            "path": "sample.scroes",
            "message": "`sample.scroes` is not a field of EvalSample "
            "(did you mean `scores` or `choices`?)",
        }
    ]
    assert "sample.scroes.match.value" not in {e["expression"] for e in report["gave_nothing"]}
    [never] = report["never_applied"]
    assert never["rule"] == "never" and "when never held" in never["reason"]


def test_a_sample_that_cannot_be_read_ends_the_task_as_failed(
    known_log: Path, tmp_path: Path
) -> None:
    broken = tmp_path / known_log.name
    shutil.copyfile(known_log, broken)
    with zipfile.ZipFile(known_log) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.startswith("samples/2_"):
                data = b"{not json"
            dst.writestr(item, data)
    report = dry_run(load_mapping(None), broken)
    task = report.runs[1]
    assert task.status == "FAILED"
    assert [p.kind for p in report.problems] == ["unreadable"]
    assert "cannot read sample 2 (epoch 1)" in report.problems[0].message
    # The samples before the bad one are there; the task's error says where it stopped.
    assert [p[0] for p in task.metrics["per_sample/match"]] == [0]
    [row] = task.tables["inspect/tasks.json"]["first_rows"]
    assert row["status"] == "error" and "stopped after 1 sample(s)" in row["error"]


def test_unreadable_log_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "2024-01-01T00-00-00+00-00_x_y.eval"
    bad.write_bytes(b"not a zip")
    assert main(["check", "--log", str(bad)]) == 2
    assert f"{bad}: cannot read the log" in capsys.readouterr().err


TYPOS = """\
version: 1
extends: default
rules:
  sample_end:
    - id: planted
      run: task
      metrics:
        sample/typo: sample.scroes.match.value
        sample/length: length(sample.outptu.completion)
"""


def test_a_planted_typo_is_the_first_finding_with_a_hint(
    known_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mapping = tmp_path / "typos.yaml"
    mapping.write_text(TYPOS)
    assert main(["check", str(mapping), "--log", str(known_log)]) == 1
    lines = capsys.readouterr().out.splitlines()
    start = lines.index(next(x for x in lines if x.startswith("Dry run of ")))
    findings = [x for x in lines[start + 1 :] if x][:5]
    assert findings[0].startswith("likely typos (2): ")
    assert findings[1] == (
        "  typos.yaml:8:22: $.rules.sample_end[0].metrics['sample/typo']: `sample.scroes` is "
        "not a field of EvalSample (did you mean `scores` or `choices`?)"
    )
    assert findings[2] == "      in: sample.scroes.match.value"
    assert "`sample.outptu` is not a field of EvalSample (did you mean `output`?)" in findings[3]
    # The type error it causes at run time says what went in and why, not jmespath's text.
    [error] = [x for x in lines if x.startswith("  expression_error: typos.yaml:9:")]
    assert (
        "length(sample.outptu.completion): length() got null (it takes a string, an array or "
        "an object): `sample.outptu` is not a field of EvalSample (did you mean `output`?) "
        f"(x{SAMPLES})"
    ) in error
    assert "invalid type for value" not in "\n".join(lines)
    assert lines[-1].startswith("2 likely typos, 1 problem; ")
    assert lines[-1].endswith("(see the top)")


def test_the_default_mapping_reads_only_fields_inspect_has(known_log: Path) -> None:
    mapping = load_mapping(None)
    assert field_typos(mapping) == []
    report = dry_run(mapping, known_log)
    assert report.typos == [] and report.problems == []
    # What is empty on the demo log is named by the field the log does not have.
    absent = {e["absent"] for e in report.gave_nothing}
    assert {"eval_set_id", "sample.error", "spec.dataset.name", "log.error"} <= absent
    assert {"model.value.total_cost", "event.output.usage.total_cost"} <= absent
    # Only a condition may give nothing with every field there: dict-valued score members.
    unnamed = [e["expression"] for e in report.gave_nothing if not e["absent"]]
    assert len(unnamed) <= 1 and all("score.value.value" in e for e in unnamed), unnamed


@pytest.mark.parametrize(
    ("point", "expression", "message"),
    [
        ("sample_end", "sample.scroes", "`sample.scroes` is not a field of EvalSample"),
        ("sample_end", "sample.output.completoin", "not a field of ModelOutput"),
        (
            "sample_end",
            "sample.events[?event == 'model'].output.usage.input_tokns",
            "`sample.events[].output.usage.input_tokns` is not a field of ModelUsage "
            "(did you mean `input_tokens`",
        ),
        ("sample_end", "sample.events[?evnt == 'model']", "(did you mean `event`"),
        ("sample_end", "max_by(sample.events, &timestmp)", "(did you mean `timestamp`?)"),
        ("sample_end", "sample.id.x", "`sample.id.x`: a number or a string has no fields"),
        ("task_end", "log.samples", "`log.samples` is not a field of EvalLog (header"),
        ("task_end", "log.results.scores[0].metrics.a.vale", "(did you mean `value`?)"),
        ("task_start", "spec.taks", "(did you mean `task`"),
        ("run_start", "task_name", "the run_start context (did you mean `task_names`"),
        ("run_end", "exception.mesage", "(did you mean `message`?)"),
        ("run_end", "logs[0].eval.task", None),
        ("sample_event", "event.output.usage.input_tokens", None),
        ("sample_end", "sample.scores.match.value", None),
        ("sample_end", "sample.metadata.anything.at.all", None),
        ("sample_end", "items(sample.scores)[0].value.explanation", None),
        ("sample_end", "items(sample.scores)[0].value.explantion", "not a field of Score"),
        ("sample_end", "task_id && eval_id && counter.sample.index && null", None),
        ("sample_end", "{v: sample.id}.v", None),
        ("model_usage", "usage.input_tokens", None),
        # `run` is the engine's, which adds to it over time: only what it declares is checked.
        ("sample_end", "run.models[0] && run.name && run.newer_field", None),
    ],
)
def test_fields_are_checked_against_inspects_types(
    tmp_path: Path, point: str, expression: str, message: str | None
) -> None:
    text = (
        "version: 1\ncounters: [sample]\nruns:\n  task:\n    open: task_start\n"
        "    close: task_end\n    key: eval_id\n    status: \"'FINISHED'\"\n"
        f'rules:\n  {point}:\n    - run: task\n      tags:\n        t: "{expression}"\n'
    )
    path = tmp_path / "m.yaml"
    path.write_text(text)
    typos = field_typos(load_mapping(path))
    if message is None:
        assert typos == []
    else:
        [typo] = typos
        assert message in typo.message and typo.where.line == 13
