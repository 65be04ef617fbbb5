"""The hot-path shortcuts taken for the overhead targets give the same results as before.

Each shortcut (see ``benchmarks/overhead.py`` for what it bought) must be invisible:
plain-path expressions evaluated without JMESPath's interpreter read exactly what the
interpreter reads.
"""

from __future__ import annotations

from typing import Any

import jmespath
import pytest
from inspect_ai.model import ModelOutput, ModelUsage

from inspect_mlflow._mapping import load_mapping
from inspect_mlflow._mapping.functions import OPTIONS
from inspect_mlflow._mapping.model import Expr, Where
from inspect_mlflow._runtime.engine import Engine, _field_path
from inspect_mlflow._runtime.views import _MISSING, convert


def expr(text: str) -> Expr:
    return Expr(text, jmespath.compile(text), Where("test.yaml", "$"), OPTIONS)


def test_only_chains_of_fields_are_plain_paths() -> None:
    assert _field_path(jmespath.compile('a.b."c/d"').parsed) == ("a", "b", "c/d")
    assert _field_path(jmespath.compile("a").parsed) == ("a",)
    for text in ("a[0]", "a.b || c", "a[].b", "length(a)", "a.*", "@", "`1`", "a.b[?c]"):
        assert _field_path(jmespath.compile(text).parsed) == (), text


def _output() -> Any:
    out = ModelOutput.from_content(model="mockllm/model", content="42")
    out.usage = ModelUsage(input_tokens=3, output_tokens=2, total_tokens=5)
    return out


DOCS: list[dict[str, Any]] = [
    {"event": convert(_output()), "n": None, "s": "text", "l": [1, 2], "x": {"y": {"z": 0}}},
    {"event": {"usage": None}, "s": {"t": False}},
    {},
]

PATHS = [
    "event.usage.input_tokens",
    "event.choices",
    "event.usage.missing",
    "event.completion",
    "n.a",
    "s.t",
    "s.t.u",
    "l.a",
    "x.y.z",
    "missing.a.b",
]


@pytest.mark.parametrize("doc", DOCS)
def test_plain_paths_read_what_jmespath_reads(doc: dict[str, Any]) -> None:
    engine = Engine(load_mapping())
    for text in PATHS:
        compiled = expr(text)
        fast = engine._search(compiled, doc)
        assert fast is not _MISSING
        assert engine._paths[id(compiled)], text  # the shortcut was taken
        assert fast == compiled.search(doc), text
