"""Lazy views: the context documents JMESPath reads without dumping whole payloads."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import sys
from typing import Any

import jmespath
import pydantic
import pytest
from payloads import record_scenario

from inspect_mlflow._engine.contexts import context
from inspect_mlflow._engine.views import (
    DictView,
    LazyView,
    ModelView,
    convert,
    exception_doc,
    is_cancellation,
    to_json,
    view,
)
from inspect_mlflow._mapping.functions import OPTIONS

if sys.version_info >= (3, 11):
    from builtins import BaseExceptionGroup
else:  # pragma: no cover - Python 3.10 uses the backport Inspect depends on
    from exceptiongroup import BaseExceptionGroup


def search(expression: str, doc: Any) -> Any:
    return jmespath.search(expression, doc, OPTIONS)


def deep_items(value: Any) -> Any:
    """Walk a view through its mapping methods only (never ``materialize``)."""
    if isinstance(value, LazyView):
        return {key: deep_items(item) for key, item in value.items()}
    if isinstance(value, list):
        return [deep_items(item) for item in value]
    return value


def assert_plain(value: Any) -> None:
    """Exactly dict/list/str/int/float/bool/None all the way down."""
    assert type(value) in (dict, list, str, int, float, bool, type(None)), type(value)
    if type(value) is dict:
        for key, item in value.items():
            assert type(key) is str
            assert_plain(item)
    elif type(value) is list:
        for item in value:
            assert_plain(item)


# -- spies --------------------------------------------------------------------------


class Inner(pydantic.BaseModel):
    x: int = 1
    y: str | None = None


class Spy(pydantic.BaseModel):
    """Records which of its fields were read and counts model_dump calls."""

    a: int = 1
    b: str = "two"
    inner: Inner = pydantic.Field(default_factory=Inner)
    items: list[Inner] = pydantic.Field(default_factory=lambda: [Inner(x=5), Inner(x=6)])
    nothing: str | None = None

    def __getattribute__(self, name: str) -> Any:
        if name in Spy.model_fields:
            SPY_LOG.setdefault(id(self), []).append(name)
        return super().__getattribute__(name)

    def model_dump(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        SPY_LOG.setdefault(id(self), []).append("<model_dump>")
        return super().model_dump(*args, **kwargs)

    @property
    def reads(self) -> list[str]:
        return [n for n in SPY_LOG.get(id(self), []) if n != "<model_dump>"]

    @property
    def dumps(self) -> int:
        return SPY_LOG.get(id(self), []).count("<model_dump>")


SPY_LOG: dict[int, list[str]] = {}


def test_reading_one_field_converts_only_that_field_and_never_dumps() -> None:
    spy = Spy()
    doc = {"p": convert(spy)}
    assert search("p.a", doc) == 1
    assert spy.reads == ["a"]
    assert search("p.a", doc) == 1
    assert spy.reads == ["a"], "a second read is served from the cache"
    assert search("p.inner.x", doc) == 1
    assert spy.reads == ["a", "inner"]
    assert spy.dumps == 0


def test_nested_values_are_views_until_materialized() -> None:
    spy = Spy()
    v = convert(spy)
    assert isinstance(v, ModelView)
    inner = v.get("inner")
    assert isinstance(inner, ModelView)
    items = v.get("items")
    assert type(items) is list and all(isinstance(i, ModelView) for i in items)
    assert search("p.items[].x", {"p": v}) == [5, 6]
    assert spy.dumps == 0
    assert v.materialize() == {
        "a": 1,
        "b": "two",
        "inner": {"x": 1},
        "items": [{"x": 5}, {"x": 6}],
    }


def test_mapping_methods_agree_and_skip_none_fields() -> None:
    spy = Spy()
    v = convert(spy)
    assert list(v.keys()) == ["a", "b", "inner", "items"]
    assert "nothing" not in v and "a" in v
    assert len(v) == 4 and list(v) == ["a", "b", "inner", "items"]
    assert v["b"] == "two"
    with pytest.raises(KeyError):
        v["nothing"]
    assert dict(v.items())["a"] == 1
    assert [to_json(x) for x in v.values()] == [1, "two", {"x": 1}, [{"x": 5}, {"x": 6}]]
    assert dict(v) == v.copy() and {**v}["a"] == 1
    assert search("keys(p)", {"p": v}) == ["a", "b", "inner", "items"]
    assert search("p.*", {"p": convert(Inner(x=3, y="q"))}) == [3, "q"]


def test_views_are_read_only() -> None:
    v = convert(Spy())
    with pytest.raises(TypeError):
        v["a"] = 2
    with pytest.raises(TypeError):
        del v["a"]
    for mutate in (v.update, v.clear, v.popitem, lambda: v.pop("a"), lambda: v.setdefault("z")):
        with pytest.raises(TypeError):
            mutate()
    assert v == {"a": 1, "b": "two", "inner": {"x": 1}, "items": [{"x": 5}, {"x": 6}]}
    assert (v | {"c": 3})["c"] == 3 and ({"a": 0} | v)["a"] == 1
    assert list(reversed(v)) == ["items", "inner", "b", "a"]


def test_jmespath_truthiness_matches_the_json_value() -> None:
    empty = convert(Inner(x=0))
    doc = {"full": convert(Spy()), "empty_model": convert(Inner.model_construct(x=None))}
    assert search("full || 'no'", doc) != "no"
    assert search("empty_model || 'no'", doc) == "no", "a model with only nulls is {}"
    assert search("!(empty_model)", doc) is True
    assert search("full == `{}`", doc) is False
    assert search("empty_model == `{}`", doc) is True
    assert search("p.x == `0`", {"p": empty}) is True
    assert search('p == `{"x": 0}`', {"p": empty}) is True
    assert search("d || 'no'", {"d": convert({})}) == "no"
    assert search("d.k", {"d": convert({"k": None})}) is None
    assert search("length(full)", doc) == 4


def test_dict_views_keep_none_values_and_text_keys() -> None:
    class Color(enum.Enum):
        RED = "red"

    d = convert({"a": None, 2: "two", Color.RED: 1, "m": Inner(x=4)})
    assert isinstance(d, DictView)
    assert list(d.keys()) == ["a", "2", "red", "m"]
    assert "a" in d and d["a"] is None
    assert d.get("2") == "two" and d.get("red") == 1
    assert isinstance(d.get("m"), ModelView)
    assert search("items(@)", d) == [
        {"key": "a", "value": None},
        {"key": "2", "value": "two"},
        {"key": "red", "value": 1},
        {"key": "m", "value": {"x": 4}},
    ]


def test_scalar_conversions_follow_pydantic_json_mode() -> None:
    class Kind(str, enum.Enum):
        A = "a"

    aware = dt.datetime(2024, 1, 2, 3, 4, 5, 600000, tzinfo=dt.timezone.utc)
    assert convert(aware) == pydantic.TypeAdapter(dt.datetime).dump_python(aware, mode="json")
    assert convert(aware) == "2024-01-02T03:04:05.600000Z"
    assert convert(dt.date(2024, 1, 2)) == "2024-01-02"
    assert convert(Kind.A) == "a" and type(convert(Kind.A)) is str
    assert convert((1, {2})) == [1, [2]]
    assert convert(RuntimeError("boom")) == {"type": "RuntimeError", "message": "boom"}
    assert convert(len).startswith("<built-in function len")

    class NoStr:
        def __str__(self) -> str:
            raise ValueError("no")

    assert convert(NoStr()) == "<unprintable NoStr>"


def test_dataclass_payloads_are_views_too() -> None:
    @dataclasses.dataclass(frozen=True)
    class Payload:
        run_id: str
        spec: Inner
        missing: str | None = None

    v = view(Payload("r1", Inner(x=9)))
    assert isinstance(v, ModelView)
    assert v.materialize() == {"run_id": "r1", "spec": {"x": 9}}
    assert search("spec.x", v) == 9


# -- hidden fields and extras -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrapLog:
    """A log-like payload whose per-sample data must never be read."""

    status: str = "success"
    eval: Inner = dataclasses.field(default_factory=Inner)

    @property
    def samples(self) -> Any:
        raise AssertionError("samples was touched")


class TrapModel(pydantic.BaseModel):
    status: str = "success"
    samples: list[int] = pydantic.Field(default_factory=lambda: [1])
    location: str = pydantic.Field(default="/logs/x.eval", exclude=True)

    def __getattribute__(self, name: str) -> Any:
        if name == "samples":
            raise AssertionError("samples was touched")
        return object.__getattribute__(self, name)


def _touch_everything(v: Any) -> None:
    list(v.keys())
    list(v.values())
    list(v.items())
    len(v)
    assert "samples" not in v
    assert v.get("samples") is None
    to_json(v)
    v.materialize()
    search("*", v)
    search("keys(@)", v)
    search("values(@)", v)
    search("@", v)


def test_excluded_field_is_never_touched_on_a_dataclass() -> None:
    v = view(TrapLog(), exclude={"samples"}, extra={"location": "/logs/a.eval"})
    _touch_everything(v)
    assert v.materialize() == {"status": "success", "eval": {"x": 1}, "location": "/logs/a.eval"}


def test_excluded_field_is_never_touched_on_a_pydantic_model() -> None:
    model = TrapModel()
    v = view(model, exclude={"samples"}, extra={"location": model.location})
    _touch_everything(v)
    assert v.materialize() == {"status": "success", "location": "/logs/x.eval"}
    assert "location" not in convert(model), "Field(exclude=True) is hidden unless added back"


# -- exceptions and context ---------------------------------------------------------


def test_cancellation_is_recognised_through_groups() -> None:
    assert is_cancellation(KeyboardInterrupt())
    assert is_cancellation(asyncio.CancelledError())
    assert not is_cancellation(RuntimeError("x"))
    group = BaseExceptionGroup("g", [asyncio.CancelledError(), KeyboardInterrupt()])
    assert is_cancellation(group)
    mixed = BaseExceptionGroup("g", [asyncio.CancelledError(), ValueError("v")])
    assert not is_cancellation(mixed)
    assert exception_doc(KeyboardInterrupt(), cancelled=True) == {
        "type": "KeyboardInterrupt",
        "message": "",
        "cancelled": True,
    }


def test_run_end_context_has_exception_shape_and_log_headers() -> None:
    from inspect_ai.hooks import RunEnd

    rec = record_scenario("ok")
    [real] = rec["run_end"]
    doc = context("run_end", real)
    assert doc["point"] == "run_end"
    assert doc["exception"] is None
    assert search("logs[].status", doc) == ["success"]
    assert search("logs[0].location", doc) == real.logs[0].location != ""
    assert "samples" not in doc["logs"][0]

    interrupted = dataclasses.replace(real, exception=KeyboardInterrupt())
    doc = context("run_end", interrupted)
    assert doc["exception"] == {"type": "KeyboardInterrupt", "message": "", "cancelled": True}
    failed = RunEnd(eval_set_id=None, run_id="r", logs=[], exception=ValueError("bad"))  # type: ignore[arg-type]
    assert context("run_end", failed)["exception"] == {
        "type": "ValueError",
        "message": "bad",
        "cancelled": False,
    }


def test_task_end_context_never_loads_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    from inspect_ai.log._recorders.eval import LazyList

    rec = record_scenario("ok")
    [end] = rec["task_end"]

    def trap(self: Any) -> None:
        raise AssertionError("the log's samples were loaded")

    monkeypatch.setattr(LazyList, "_ensure_loaded", trap)
    assert isinstance(end.log.samples, LazyList), "eval() hands a lazily loaded list"
    doc = context("task_end", end, extra_field=1)
    assert doc["extra_field"] == 1
    header = to_json(doc["log"])
    assert "samples" not in header and "reductions" not in header
    assert header["location"] == end.log.location
    assert header["eval"]["task"] == "arith"
    _touch_everything(doc["log"])


def test_lazy_path_equals_model_dump_on_every_real_payload() -> None:
    compared = 0
    for scenario in ("ok", "failing"):
        for point, data in record_scenario(scenario).sequence:
            for f in dataclasses.fields(data):
                raw = getattr(data, f.name)
                if not isinstance(raw, pydantic.BaseModel):
                    continue
                hidden = {"samples", "reductions"} if f.name == "log" else set()
                lazy = deep_items(view(raw, exclude=hidden))
                dumped = raw.model_dump(
                    mode="json", exclude_none=True, fallback=str, exclude=hidden or None
                )
                assert lazy == dumped, (point, f.name)
                compared += 1
    assert compared > 200


def test_context_of_a_sample_event_reads_like_the_dump() -> None:
    rec = record_scenario("ok")
    data = next(d for d in rec["sample_event"] if d.event.event == "model")
    doc = context("sample_event", data)
    assert set(doc) == {f.name for f in dataclasses.fields(data)} | {"point"}
    assert search("event.output.usage.input_tokens", doc) == 10
    assert search("event.timestamp", doc) == data.event.model_dump(mode="json")["timestamp"]
    assert isinstance(doc["event"], ModelView)


def test_to_json_materializes_views_anywhere() -> None:
    value = {"a": [convert(Spy()), {"b": convert({"c": Inner(x=2)})}], "d": (1, 2)}
    plain = to_json(value)
    assert_plain(plain)
    assert plain["a"][1] == {"b": {"c": {"x": 2}}}
    assert plain["d"] == [1, 2]
    rec = record_scenario("ok")
    assert_plain(to_json(context("sample_end", rec["sample_end"][0])))
