"""Layering: extend (add, override by id, remove) and replace, seen in `effective` and rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from inspect_mlflow._mapping import MappingError, MappingInvalid, load_mapping
from inspect_mlflow._paths import default_mapping_path

BASE = """\
version: 1
counters: [sample]
series: [t]
runs:
  eval:
    open: run_start
    close: run_end
    key: run_id
    status: "'FINISHED'"
  task:
    open: task_start
    close: task_end
    key: eval_id
    parent: eval
    name: spec.task
    tags:
      a: x
      b: y
    status: "'FINISHED'"
rules:
  sample_end:
    - id: first
      run: task
      count: sample
      metrics:
        m1: sample.x
    - id: second
      run: task
      metrics:
        m2: sample.y
  task_end:
    - id: summary
      run: task
      metrics:
        total: counter.sample.count
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def errors(path: Path) -> list[MappingError]:
    with pytest.raises(MappingInvalid) as info:
        load_mapping(path)
    return list(info.value.errors)


def rule_ids(compiled, point: str) -> list[str | None]:
    return [rule.id for rule in compiled.rules.get(point, ())]


def test_extend_adds_overrides_and_removes(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", BASE)
    user = write(
        tmp_path,
        "user.yaml",
        """\
version: 1
extends: base.yaml
counters: [sample, extra]
remove: [second]
rules:
  sample_end:
    - id: first
      run: task
      metrics:
        replaced: sample.z
    - id: added
      run: task
      count: extra
      metrics:
        m3: counter.extra.count
  task_start:
    - run: task
      params: {p: spec.task}
""",
    )
    compiled = load_mapping(user)
    effective = compiled.effective
    assert "extends" not in effective and "remove" not in effective
    assert effective["counters"] == ["sample", "extra"]
    assert [r.get("id") for r in effective["rules"]["sample_end"]] == ["first", "added"]
    # Override by id replaces the whole rule (its `count` is gone too), in place.
    assert effective["rules"]["sample_end"][0] == {
        "id": "first",
        "run": "task",
        "metrics": {"replaced": "sample.z"},
    }
    assert rule_ids(compiled, "sample_end") == ["first", "added"]
    assert rule_ids(compiled, "task_end") == ["summary"]
    assert rule_ids(compiled, "task_start") == [None]
    first = compiled.rules["sample_end"][0]
    assert first.count == () and [k.text for k, _ in first.metrics] == ["replaced"]
    # Rules keep the place they were written: the override is in user.yaml ...
    assert (first.where.file, first.where.line, first.where.col) == (str(user), 7, 7)
    assert first.where.json_path == "$.rules.sample_end[0]"
    # ... and the untouched base rule still points into base.yaml.
    summary = compiled.rules["task_end"][0]
    assert summary.where.file == str(tmp_path / "base.yaml") and summary.where.line == 32
    assert compiled.files == (str(tmp_path / "base.yaml"), str(user))


def test_runs_merge_key_by_key_with_tags_merged(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", BASE)
    user = write(
        tmp_path,
        "user.yaml",
        """\
version: 1
extends: ./base.yaml
runs:
  task:
    name: "'fixed'"
    tags:
      b: z
      c: w
  extra:
    open: sample_start
    close: sample_end
    key: sample.uuid
    parent: task
    status: "'FINISHED'"
""",
    )
    compiled = load_mapping(user)
    task = compiled.effective["runs"]["task"]
    assert task["name"] == "'fixed'"
    assert task["key"] == "eval_id" and task["parent"] == "eval"
    assert task["tags"] == {"a": "x", "b": "z", "c": "w"}
    assert list(compiled.effective["runs"]) == ["eval", "task", "extra"]
    spec = compiled.runs["task"]
    assert [key.text for key, _ in spec.tags] == ["a", "b", "c"]
    tags = {key.text: value for key, value in spec.tags}
    assert tags["a"].where.file.endswith("base.yaml")
    assert tags["b"].where.file.endswith("user.yaml") and tags["b"].where.line == 7
    assert spec.name is not None and spec.name.where.file.endswith("user.yaml")
    assert compiled.runs["extra"].parent == "task"


def test_replace_without_extends(tmp_path: Path) -> None:
    user = write(
        tmp_path,
        "alone.yaml",
        """\
version: 1
runs:
  only:
    open: run_start
    close: run_end
    key: run_id
    status: "'FINISHED'"
rules:
  run_end:
    - run: only
      tags: {done: "'yes'"}
""",
    )
    compiled = load_mapping(user)
    assert list(compiled.runs) == ["only"]
    assert list(compiled.rules) == ["run_end"]
    assert compiled.counters == frozenset()
    assert compiled.files == (str(user),)
    assert set(compiled.effective) == {"version", "runs", "rules"}


def test_extend_the_builtin_default(tmp_path: Path) -> None:
    user = write(
        tmp_path,
        "user.yaml",
        """\
version: 1
extends: default
remove: [events-table, messages-table]
rules:
  sample_end:
    - id: sample-metrics
      run: task
      count: sample
      step: counter.sample.index
      metrics:
        sample/total_time: sample.total_time
        sample/output_length: length(sample.output.completion || '')
""",
    )
    default = load_mapping(default_mapping_path())
    compiled = load_mapping(user)
    default_ids = rule_ids(default, "sample_end")
    ids = rule_ids(compiled, "sample_end")
    assert ids == [i for i in default_ids if i not in ("events-table", "messages-table")]
    override = compiled.rules["sample_end"][ids.index("sample-metrics")]
    assert override.collect == ()
    assert [k.text for k, _ in override.metrics] == ["sample/total_time", "sample/output_length"]
    assert override.where.file == str(user)
    assert compiled.effective["runs"] == default.effective["runs"]


def test_override_moves_a_rule_to_another_point(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", BASE)
    user = write(
        tmp_path,
        "user.yaml",
        "version: 1\nextends: base.yaml\nrules:\n  task_end:\n"
        "    - id: second\n      run: task\n      metrics: {m2: log.y}\n",
    )
    compiled = load_mapping(user)
    assert rule_ids(compiled, "sample_end") == ["first"]
    assert rule_ids(compiled, "task_end") == ["summary", "second"]


def test_remove_unknown_id_is_located_in_the_overlay(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", BASE)
    user = write(tmp_path, "user.yaml", "version: 1\nextends: base.yaml\nremove: [first, secnd]\n")
    (error,) = errors(user)
    assert (error.file, error.line, error.col) == (str(user), 3, 17)
    assert error.json_path == "$.remove[1]"
    assert error.hint == "did you mean 'second'?"


def test_remove_needs_extends(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", BASE + "remove: [first]\n")
    (error,) = errors(path)
    assert error.message == "`remove` needs `extends`"
    assert (error.line, error.col) == (36, 1)


def test_errors_keep_their_own_file_and_line(tmp_path: Path) -> None:
    base = write(
        tmp_path, "base.yaml", BASE.replace("total: counter.sample.count", "total: lenght(x)")
    )
    user = write(
        tmp_path,
        "user.yaml",
        "version: 1\nextends: base.yaml\nrules:\n  sample_end:\n"
        "    - run: task\n      count: nope\n",
    )
    found = errors(user)
    assert [(e.file, e.line, e.col) for e in found] == [
        (str(base), 35, 16),
        (str(user), 6, 14),
    ]
    assert found[0].message == "unknown function lenght()"
    assert found[1].message == "counter 'nope' is not declared"


def test_schema_errors_of_both_files_are_reported(tmp_path: Path) -> None:
    write(
        tmp_path,
        "base.yaml",
        BASE.replace("      metrics:\n        m1", "      metrcs:\n        m1"),
    )
    user = write(tmp_path, "user.yaml", "version: 1\nextends: base.yaml\nrulez: {}\n")
    found = errors(user)
    assert [(Path(e.file).name, e.line, e.message) for e in found] == [
        ("base.yaml", 25, "unknown key 'metrcs'"),
        ("user.yaml", 3, "unknown key 'rulez'"),
    ]


def test_new_run_kind_in_overlay_needs_required_keys(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", BASE)
    user = write(
        tmp_path,
        "user.yaml",
        "version: 1\nextends: base.yaml\nruns:\n  extra:\n    open: run_start\n",
    )
    found = errors(user)
    assert {e.message for e in found} == {
        "run kind 'extra' has no 'close'",
        "run kind 'extra' has no 'key'",
        "run kind 'extra' has no 'status'",
    }
    assert {(e.file, e.line, e.col) for e in found} == {(str(user), 4, 3)}


def test_standalone_file_needs_runs_and_complete_kinds(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", "version: 1\nruns:\n  a:\n    open: run_start\n")
    messages = {e.message for e in errors(path)}
    assert "missing required key 'close'" in messages
    path = write(tmp_path, "n.yaml", "version: 1\n")
    assert [e.message for e in errors(path)] == ["missing required key 'runs'"]


def test_chained_extends_and_cycles(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", BASE)
    write(tmp_path, "sub/middle.yaml", "version: 1\nextends: ../base.yaml\ncounters: [mid]\n")
    top = write(tmp_path, "top.yaml", "version: 1\nextends: sub/middle.yaml\nseries: [more]\n")
    compiled = load_mapping(top)
    assert compiled.counters == frozenset({"sample", "mid"})
    assert compiled.series == frozenset({"t", "more"})
    assert len(compiled.files) == 3

    a = write(tmp_path, "a.yaml", "version: 1\nextends: b.yaml\n")
    write(tmp_path, "b.yaml", "version: 1\nextends: a.yaml\n")
    found = errors(a)
    assert any("extends cycle" in e.message for e in found)


def test_missing_base_is_located_at_extends(tmp_path: Path) -> None:
    user = write(tmp_path, "user.yaml", "version: 1\nextends: nowhere.yaml\n")
    (error,) = errors(user)
    assert (error.line, error.col) == (2, 10)
    assert "base mapping not found" in error.message
