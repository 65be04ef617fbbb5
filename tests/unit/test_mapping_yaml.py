"""Strict YAML loading: JSON-like scalars, located errors, positions inside scalars."""

from __future__ import annotations

import pytest

from inspect_mlflow._mapping.errors import MappingError, MappingInvalid, json_path
from inspect_mlflow._mapping.yaml_load import load_yaml_file, load_yaml_text


def errors_of(text: str) -> list[MappingError]:
    with pytest.raises(MappingInvalid) as info:
        load_yaml_text(text, "m.yaml")
    return list(info.value.errors)


def test_scalars_resolve_json_like() -> None:
    loaded = load_yaml_text(
        "on: yes\noff: no\ny: Y\nday: 2024-01-01\nwhen: 2024-01-01T10:00:00Z\n"
        "i: 12\nf: 1.5\ne: 1e3\nt: true\nF: FALSE\nn: null\ntilde: ~\nempty:\n"
        "octal: 0o17\nquoted: 'true'\nversion: '1'\nbig_t: True\n",
        "m.yaml",
    )
    assert loaded.data == {
        "on": "yes",
        "off": "no",
        "y": "Y",
        "day": "2024-01-01",
        "when": "2024-01-01T10:00:00Z",
        "i": 12,
        "f": 1.5,
        "e": 1000.0,
        "t": True,
        "F": False,
        "n": None,
        "tilde": None,
        "empty": None,
        "octal": 15,
        "quoted": "true",
        "version": "1",
        "big_t": True,
    }
    assert "on" in loaded.data and True not in loaded.data


def test_duplicate_key_is_located_at_the_second_key() -> None:
    (error,) = errors_of("runs:\n  eval: {}\n  eval: {}\n")
    assert (error.file, error.line, error.col) == ("m.yaml", 3, 3)
    assert error.json_path == "$.runs.eval"
    assert "duplicate key 'eval'" in error.message
    assert "line 2, column 3" in (error.hint or "")


def test_all_duplicates_reported_sorted() -> None:
    errors = errors_of("b: 1\nb: 2\na:\n  x: 1\n  x: 2\n")
    assert [(e.line, e.col) for e in errors] == [(2, 1), (5, 3)]


def test_syntax_error_is_located() -> None:
    (error,) = errors_of("version: 1\nrules:\n  task_end: [a, b\n  x: 1\n")
    assert error.message.startswith("YAML syntax error")
    assert (error.line, error.col) == (4, 4)


def test_bad_indentation_syntax_error() -> None:
    (error,) = errors_of("a:\n  b: 1\n c: 2\n")
    assert (error.line, error.col) == (3, 2)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file(text: str) -> None:
    (error,) = errors_of(text)
    assert (error.line, error.col) == (1, 1)
    assert "empty" in error.message


def test_top_level_list() -> None:
    (error,) = errors_of("# a list\n- version: 1\n")
    assert (error.line, error.col) == (2, 1)
    assert "got a list" in error.message


def test_top_level_scalar() -> None:
    (error,) = errors_of("\n  hello\n")
    assert (error.line, error.col) == (2, 3)


@pytest.mark.parametrize(
    "text",
    [
        "a: !!python/object:os.system {}\n",
        "a: !!python/object/apply:os.system ['echo hi']\n",
        "a: !!python/name:os.system\n",
        "a: !!binary aGk=\n",
        "a: !!timestamp 2024-01-01\n",
        "a: !custom 1\n",
        "a: !!set {x}\n",
    ],
)
def test_tags_refused(text: str) -> None:
    (error,) = errors_of(text)
    assert (error.line, error.col) == (1, 4)
    assert "tag" in error.message and "not allowed" in error.message


def test_python_object_tag_is_never_constructed(tmp_path) -> None:
    marker = tmp_path / "pwned"
    text = f"a: !!python/object/apply:os.system ['touch {marker}']\n"
    errors = errors_of(text)
    assert "!!python/object/apply:os.system" in errors[0].message
    assert not marker.exists()


def test_standard_tags_allowed() -> None:
    loaded = load_yaml_text("a: !!str 12\nb: !!int '7'\nc: !!float 1\n", "m.yaml")
    assert loaded.data == {"a": "12", "b": 7, "c": 1.0}
    (error,) = errors_of("a: !!int abc\n")
    assert (error.line, error.col) == (1, 4)


def test_non_string_keys_refused_with_hint() -> None:
    errors = errors_of("1: a\nnull: b\n[x]: c\n")
    assert [(e.line, e.col) for e in errors] == [(1, 1), (2, 1), (3, 1)]
    assert errors[0].hint == 'quote it: "1"'


def test_merge_keys_refused() -> None:
    (error,) = errors_of("base: &b {x: 1}\nother:\n  <<: *b\n")
    assert (error.line, error.col) == (3, 3)


def test_aliases_copy_data_and_cycles_fail() -> None:
    loaded = load_yaml_text("a: &x {b: 1}\nc: *x\n", "m.yaml")
    assert loaded.data == {"a": {"b": 1}, "c": {"b": 1}}
    (error,) = errors_of("a: &x [*x]\n")
    assert "alias" in error.message


def test_locate_values_keys_and_missing_paths() -> None:
    loaded = load_yaml_text(
        "version: 1\nrules:\n  sample_end:\n    - run: task\n      metrics:\n        m: x\n",
        "m.yaml",
    )
    assert loaded.locate(("rules", "sample_end", 0, "metrics", "m")) == (6, 12)
    assert loaded.locate(("rules", "sample_end", 0, "metrics", "m"), key=True) == (6, 9)
    assert loaded.locate(("rules", "sample_end", 0)) == (4, 7)
    assert loaded.locate(("rules", "sample_end", 0, "nothing", "deeper")) == (4, 7)
    assert loaded.locate(()) == (1, 1)
    error = loaded.error(("rules", "sample_end", 0, "metrics"), "boom", "fix it", key=True)
    assert str(error) == "m.yaml:5:7: $.rules.sample_end[0].metrics: boom (hint: fix it)"


TEXT = """\
k:
  plain: foo(bar, baz)
  sq: 'it''s foo(bar)'
  dq: "a\\"b\\u00e9 foo(bar)"
  folded: >-
    (exception.cancelled && 'KILLED')
    || (exception && 'FAILED')
  lit: |
    abc
      def
  multi: first
    second(x)
"""


@pytest.mark.parametrize(
    ("key", "needle", "line", "col"),
    [
        ("plain", "bar", 2, 14),
        ("sq", "foo", 3, 14),
        ("dq", "foo", 4, 19),
        ("folded", "exception &&", 7, 9),
        ("lit", "def", 10, 7),
        ("multi", "(x)", 12, 11),
    ],
)
def test_locate_inside_scalars(key: str, needle: str, line: int, col: int) -> None:
    loaded = load_yaml_text(TEXT, "m.yaml")
    value = loaded.data["k"][key]
    assert loaded.locate_in_scalar(("k", key), value.index(needle)) == (line, col)
    source_line = TEXT.splitlines()[line - 1]
    assert source_line[col - 1 :].startswith(needle.split()[0])


def test_locate_inside_scalar_end_of_text() -> None:
    loaded = load_yaml_text("a: 'abc'\nb: abc\n", "m.yaml")
    assert loaded.locate_in_scalar(("a",), 3) == (1, 8)
    assert loaded.locate_in_scalar(("b",), 3) == (2, 7)


def test_load_file_missing_and_bom(tmp_path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("\ufeffversion: 1\n", encoding="utf-8")
    assert load_yaml_file(path).data == {"version": 1}
    with pytest.raises(MappingInvalid) as info:
        load_yaml_file(tmp_path / "missing.yaml")
    assert "cannot read file" in info.value.errors[0].message


def test_json_path_rendering() -> None:
    assert json_path(()) == "$"
    assert (
        json_path(("runs", "eval", "tags", "inspect.run_id"))
        == "$.runs.eval.tags['inspect.run_id']"
    )
    assert json_path(("a", 0, "it's")) == "$.a[0]['it\\'s']"


def test_mapping_invalid_sorts_and_dedupes() -> None:
    b = MappingError("f", 3, 1, "$.b", "two")
    a = MappingError("f", 1, 5, "$.a", "one")
    exc = MappingInvalid([b, a, b])
    assert exc.errors == (a, b)
    assert "2 problems" in str(exc)
