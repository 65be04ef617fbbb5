"""Value conversion and redaction: what the engine writes for each kind of output."""

from __future__ import annotations

import math

import pytest

from inspect_mlflow._engine.values import (
    REDACTED,
    Rejected,
    is_credential_key,
    json_value,
    metric_value,
    redact,
    step_value,
    text_value,
)
from inspect_mlflow._engine.views import convert


@pytest.mark.parametrize(
    "key",
    [
        "api_key",
        "API_KEY",
        "apikey",
        "apiKey",
        "openai_api_key",
        "task_arg.api_key",
        "token",
        "Token",
        "access_token",
        "auth_token",
        "hf-token",
        "secret",
        "client_secret",
        "password",
        "db_passwd",
        "credential",
        "credentials",
        "authorization",
        "model_args/token",
    ],
)
def test_credential_keys(key: str) -> None:
    assert is_credential_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "max_tokens",
        "total_tokens",
        "input_tokens_cache_read",
        "tokens",
        "token_limit",
        "api_key.hint",
        "model",
        "keys",
        "",
        "secretary_name",
    ],
)
def test_not_credential_keys(key: str) -> None:
    assert not is_credential_key(key)


def test_non_text_keys_are_never_credentials() -> None:
    assert not is_credential_key(3)  # type: ignore[arg-type]


def test_redact_hides_credentials_at_any_depth_and_copies_only_what_changed() -> None:
    clean = {"a": [1, {"b": 2}], "max_tokens": 5}
    assert redact(clean) is clean
    value = {
        "model_args": {"token": "t", "nested": [{"password": "p", "ok": 1}]},
        "api_key": None,
        "keep": {"x": 1},
    }
    out = redact(value)
    assert out == {
        "model_args": {"token": REDACTED, "nested": [{"password": REDACTED, "ok": 1}]},
        "api_key": None,
        "keep": {"x": 1},
    }
    assert out["keep"] is value["keep"]
    assert value["model_args"]["token"] == "t", "the input is not mutated"


def test_json_value_materializes_redacts_and_nulls_non_finite_numbers() -> None:
    value = {"v": convert({"secret": "s", "n": float("nan"), "i": float("inf"), "ok": 1.5})}
    assert json_value(value) == {"v": {"secret": REDACTED, "n": None, "i": None, "ok": 1.5}}


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("x", "x"),
        (0.2, "0.2"),
        (5, "5"),
        (1.0, "1.0"),
        (True, "true"),
        (False, "false"),
        (0, "0"),
        ([1, "a"], '[1,"a"]'),
        ({"token": "t", "n": 1}, '{"token":"***","n":1}'),
        (None, None),
        ("", None),
        ([], None),
        ({}, None),
    ],
)
def test_text_value(value: object, text: str | None) -> None:
    assert text_value(value, 6000) == text


def test_text_value_is_cut_with_a_marker() -> None:
    text = text_value("y" * 7000, 6000)
    assert text is not None and len(text) == 6000 and text.endswith("...[truncated]")


@pytest.mark.parametrize(
    ("value", "number"),
    [(1, 1.0), (0.5, 0.5), (True, 1.0), (False, 0.0), (None, None), (-3, -3.0)],
)
def test_metric_value_accepts_numbers_and_booleans(value: object, number: float | None) -> None:
    assert metric_value(value) == number


@pytest.mark.parametrize("value", ["1", "C", [1], {"a": 1}, math.nan, math.inf, -math.inf, 10**400])
def test_metric_value_rejects_everything_else(value: object) -> None:
    result = metric_value(value)
    assert isinstance(result, Rejected) and result.reason


def test_step_value() -> None:
    assert step_value(None) == 0
    assert step_value(3) == 3
    assert step_value(3.0) == 3
    for bad in (1.5, True, "2", [1]):
        assert isinstance(step_value(bad), Rejected)
