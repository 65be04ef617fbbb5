"""Settings from the environment: every variable, its spellings, and what a bad one does.

The parsing is checked on plain dicts (``load_settings(env)``); the effect of a bad value
and of the two on/off switches is checked through real offline evals on a sqlite store.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from inspect_mlflow._config import (
    DEFAULT_EXPERIMENT,
    DEFAULT_PROVIDERS,
    KNOWN_PROVIDERS,
    SettingsError,
    load_settings,
)

URI = "sqlite:////somewhere/mlflow.db"

TRUE_SPELLINGS = ("true", "TRUE", "True", "1", "yes", "YES", "on", "On", " true ")
FALSE_SPELLINGS = ("false", "FALSE", "False", "0", "no", "No", "off", "OFF", " off\n")
BOOLEANS = {
    "INSPECT_MLFLOW_LOG_ARTIFACTS": "log_artifacts",
    "MLFLOW_INSPECT_LOG_ARTIFACTS": "log_artifacts",
    "INSPECT_MLFLOW_AUTOLOG_ENABLED": "autolog_enabled",
    "INSPECT_MLFLOW_TRACES": "traces",
    "INSPECT_MLFLOW_TRACING_ENABLED": "traces",
    "MLFLOW_INSPECT_TRACING": "traces",
}


def settings(**env: str) -> Any:
    return load_settings({"MLFLOW_TRACKING_URI": URI, **env})


def error(**env: str) -> str:
    with pytest.raises(SettingsError) as info:
        settings(**env)
    return str(info.value)


# -- defaults and the tracking target --------------------------------------------------


def test_defaults() -> None:
    s = settings()
    assert s.active and s.tracking_uri == URI
    assert s.experiment_name == DEFAULT_EXPERIMENT == "inspect_ai"
    # autolog off: Inspect's own model calls are already LLM spans of the sample traces
    assert (s.log_artifacts, s.autolog_enabled, s.traces) == (True, False, True)
    assert (
        s.autolog_providers == DEFAULT_PROVIDERS == ("openai", "anthropic", "langchain", "litellm")
    )
    assert s.mapping_path is None
    assert (s.trace_max_spans, s.trace_max_text, s.flush_timeout) == (1000, 20_000, 30.0)
    assert s.delivery == "process"


@pytest.mark.parametrize("value", [None, "", "   "])
def test_no_tracking_uri_means_inactive(value: str | None) -> None:
    env = {} if value is None else {"MLFLOW_TRACKING_URI": value}
    s = load_settings(env)
    assert s.tracking_uri is None
    assert not s.active


def test_the_package_tracking_uri_wins_over_mlflows() -> None:
    s = load_settings({"MLFLOW_TRACKING_URI": URI, "INSPECT_MLFLOW_TRACKING_URI": "http://x:5000"})
    assert s.tracking_uri == "http://x:5000"
    s = load_settings({"MLFLOW_TRACKING_URI": URI, "INSPECT_MLFLOW_TRACKING_URI": " "})
    assert s.tracking_uri == URI  # blank is unset


def test_a_relative_sqlite_path_is_pinned_to_the_directory_of_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    uri = load_settings({"MLFLOW_TRACKING_URI": "sqlite:///data/mlflow.db"}).tracking_uri
    assert uri == f"sqlite:///{tmp_path}/data/mlflow.db"
    for kept in (
        f"sqlite:///{tmp_path}/abs.db",
        "sqlite://",
        "sqlite:///:memory:",
        "http://127.0.0.1:5000",
        "databricks",
    ):
        assert load_settings({"MLFLOW_TRACKING_URI": kept}).tracking_uri == kept
    query = load_settings({"MLFLOW_TRACKING_URI": "sqlite:///m.db?timeout=20"}).tracking_uri
    assert query == f"sqlite:///{tmp_path}/m.db?timeout=20"


def test_experiment_name() -> None:
    assert settings(MLFLOW_EXPERIMENT_NAME=" my-evals ").experiment_name == "my-evals"
    assert settings(MLFLOW_EXPERIMENT_NAME="").experiment_name == DEFAULT_EXPERIMENT


# -- booleans -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BOOLEANS))
@pytest.mark.parametrize("raw", TRUE_SPELLINGS + FALSE_SPELLINGS)
def test_booleans_accept_every_spelling(name: str, raw: str) -> None:
    # Both spellings against each default (autolog's is false, the others true): each
    # shows the variable is read at all and that no spelling is mistaken for the other.
    expected = raw in TRUE_SPELLINGS
    assert getattr(settings(**{name: raw}), BOOLEANS[name]) is expected
    default = name != "INSPECT_MLFLOW_AUTOLOG_ENABLED"
    assert getattr(settings(**{name: ""}), BOOLEANS[name]) is default  # blank: the default


@pytest.mark.parametrize("name", sorted(BOOLEANS))
@pytest.mark.parametrize("raw", ["maybe", "2", "enable", "y", "t", "-1"])
def test_a_bad_boolean_names_the_variable_and_the_value(name: str, raw: str) -> None:
    message = error(**{name: raw})
    assert name in message
    assert repr(raw) in message
    assert "true/false" in message


@pytest.mark.parametrize(
    ("new", "old", "expected"),
    [
        (None, None, True),
        (None, "false", False),
        (None, "true", True),
        ("true", "false", True),  # the newer name wins
        ("false", "true", False),
        ("no", "no", False),
        ("", "false", False),  # a blank newer name is unset: the older one counts
    ],
)
def test_artifact_switch_newer_name_has_priority(
    new: str | None, old: str | None, expected: bool
) -> None:
    env = {}
    if new is not None:
        env["INSPECT_MLFLOW_LOG_ARTIFACTS"] = new
    if old is not None:
        env["MLFLOW_INSPECT_LOG_ARTIFACTS"] = old
    assert settings(**env).log_artifacts is expected


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"MLFLOW_INSPECT_TRACING": "false"}, False),
        ({"INSPECT_MLFLOW_TRACING_ENABLED": "no"}, False),
        ({"INSPECT_MLFLOW_TRACING_ENABLED": "true", "MLFLOW_INSPECT_TRACING": "false"}, True),
        ({"INSPECT_MLFLOW_TRACES": "true", "INSPECT_MLFLOW_TRACING_ENABLED": "false"}, True),
        ({"INSPECT_MLFLOW_TRACES": "off", "MLFLOW_INSPECT_TRACING": "true"}, False),
        ({"INSPECT_MLFLOW_TRACES": "", "MLFLOW_INSPECT_TRACING": "false"}, False),
    ],
)
def test_the_pypi_packages_tracing_names_switch_traces(env: dict[str, str], expected: bool) -> None:
    # Names of the PyPI `inspect-mlflow` 0.9 (the same import package): an environment
    # set up for it keeps its meaning; ours wins, then its override, then its switch.
    assert settings(**env).traces is expected


def test_the_pypi_packages_experiment_override_wins_over_mlflows_name() -> None:
    assert settings(INSPECT_MLFLOW_EXPERIMENT_NAME="mine").experiment_name == "mine"
    both = settings(INSPECT_MLFLOW_EXPERIMENT_NAME="mine", MLFLOW_EXPERIMENT_NAME="other")
    assert both.experiment_name == "mine"
    blank = settings(INSPECT_MLFLOW_EXPERIMENT_NAME=" ", MLFLOW_EXPERIMENT_NAME="other")
    assert blank.experiment_name == "other"


def test_a_bad_older_tracing_switch_names_itself() -> None:
    assert "MLFLOW_INSPECT_TRACING" in error(MLFLOW_INSPECT_TRACING="x")
    assert settings(INSPECT_MLFLOW_TRACES="true", MLFLOW_INSPECT_TRACING="x").traces


def test_a_bad_older_artifact_switch_is_ignored_only_when_the_newer_one_is_set() -> None:
    assert settings(INSPECT_MLFLOW_LOG_ARTIFACTS="true", MLFLOW_INSPECT_LOG_ARTIFACTS="x")
    assert "MLFLOW_INSPECT_LOG_ARTIFACTS" in error(MLFLOW_INSPECT_LOG_ARTIFACTS="x")


# -- providers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("openai", ("openai",)),
        ("bedrock, Anthropic ,openai", ("bedrock", "anthropic", "openai")),
        ("openai,openai,,", ("openai",)),
        ('["gemini", "MISTRAL"]', ("gemini", "mistral")),
        ("[]", ()),
        (",".join(KNOWN_PROVIDERS), KNOWN_PROVIDERS),
        ("", DEFAULT_PROVIDERS),
    ],
)
def test_providers_as_csv_or_json(raw: str, expected: tuple[str, ...]) -> None:
    assert settings(INSPECT_MLFLOW_AUTOLOG_MODELS=raw).autolog_providers == expected


@pytest.mark.parametrize("raw", ["openai,vertex", '["openai", "claude"]'])
def test_an_unknown_provider_is_an_error_listing_the_known_ones(raw: str) -> None:
    message = error(INSPECT_MLFLOW_AUTOLOG_MODELS=raw)
    assert "INSPECT_MLFLOW_AUTOLOG_MODELS" in message
    assert re.search(r"unknown provider\(s\): (vertex|claude)\.", message)
    assert "Known providers: " + ", ".join(KNOWN_PROVIDERS) in message


@pytest.mark.parametrize("raw", ['["openai"', '{"openai": true}', "[1, 2]", '["openai", null]'])
def test_a_bad_json_provider_list_is_an_error(raw: str) -> None:
    message = error(INSPECT_MLFLOW_AUTOLOG_MODELS=raw)
    assert "INSPECT_MLFLOW_AUTOLOG_MODELS" in message


# -- mapping file ---------------------------------------------------------------------


def test_the_mapping_path_must_exist(tmp_path: Path) -> None:
    message = error(INSPECT_MLFLOW_MAPPING=str(tmp_path / "nope.yaml"))
    assert "INSPECT_MLFLOW_MAPPING" in message and "no such file" in message
    message = error(INSPECT_MLFLOW_MAPPING=str(tmp_path))  # a directory is no file either
    assert "no such file" in message
    mapping = tmp_path / "mine.yaml"
    mapping.write_text("version: 1\n")
    assert settings(INSPECT_MLFLOW_MAPPING=str(mapping)).mapping_path == mapping


def test_the_mapping_path_expands_the_home_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "m.yaml").write_text("version: 1\n")
    assert settings(INSPECT_MLFLOW_MAPPING="~/m.yaml").mapping_path == tmp_path / "m.yaml"


# -- numbers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "field", "raw", "expected"),
    [
        ("INSPECT_MLFLOW_TRACE_MAX_SPANS", "trace_max_spans", "50", 50),
        ("INSPECT_MLFLOW_TRACE_MAX_TEXT", "trace_max_text", " 300 ", 300),
        ("INSPECT_MLFLOW_FLUSH_TIMEOUT", "flush_timeout", "2.5", 2.5),
        ("INSPECT_MLFLOW_FLUSH_TIMEOUT", "flush_timeout", "10", 10.0),
    ],
)
def test_numbers(name: str, field: str, raw: str, expected: float) -> None:
    assert getattr(settings(**{name: raw}), field) == expected


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("INSPECT_MLFLOW_TRACE_MAX_SPANS", "many"),
        ("INSPECT_MLFLOW_TRACE_MAX_SPANS", "0"),
        ("INSPECT_MLFLOW_TRACE_MAX_SPANS", "-5"),
        ("INSPECT_MLFLOW_TRACE_MAX_SPANS", "1.5"),
        ("INSPECT_MLFLOW_TRACE_MAX_TEXT", "20k"),
        ("INSPECT_MLFLOW_FLUSH_TIMEOUT", "soon"),
        ("INSPECT_MLFLOW_FLUSH_TIMEOUT", "0"),
        ("INSPECT_MLFLOW_FLUSH_TIMEOUT", "-1"),
        # nan compares false with everything (it became a zero-second flush), and an
        # infinite timeout overflows thread joins: neither is a number of seconds.
        ("INSPECT_MLFLOW_FLUSH_TIMEOUT", "nan"),
        ("INSPECT_MLFLOW_FLUSH_TIMEOUT", "inf"),
    ],
)
def test_a_bad_number_names_the_variable(name: str, raw: str) -> None:
    message = error(**{name: raw})
    assert name in message and repr(raw) in message and "positive" in message


@pytest.mark.parametrize("raw", ["thread", "THREAD", " process "])
def test_delivery_modes(raw: str) -> None:
    assert settings(INSPECT_MLFLOW_DELIVERY=raw).delivery == raw.strip().lower()


def test_a_bad_delivery_mode_names_the_variable_and_the_choices() -> None:
    message = error(INSPECT_MLFLOW_DELIVERY="subprocess")
    assert "INSPECT_MLFLOW_DELIVERY='subprocess'" in message
    assert "'process'" in message and "'thread'" in message


def test_queue_size() -> None:
    assert settings().max_queue_size == 100_000
    assert settings(INSPECT_MLFLOW_MAX_QUEUE_SIZE="500").max_queue_size == 500
    for raw in ("0", "lots", "2.5"):
        assert "INSPECT_MLFLOW_MAX_QUEUE_SIZE" in error(INSPECT_MLFLOW_MAX_QUEUE_SIZE=raw)


# -- spool directory and MLflow credentials -------------------------------------------


def test_spool_dir(tmp_path: Path) -> None:
    assert settings().spool_dir is None  # the per-user default, resolved by the spool
    assert settings(INSPECT_MLFLOW_SPOOL_DIR=str(tmp_path / "new")).spool_dir == tmp_path / "new"
    afile = tmp_path / "afile"
    afile.write_text("")
    message = error(INSPECT_MLFLOW_SPOOL_DIR=str(afile))
    assert "INSPECT_MLFLOW_SPOOL_DIR" in message and "not a directory" in message


def test_mlflow_credentials_are_kept_as_secrets_and_never_shown() -> None:
    s = load_settings(
        {
            "MLFLOW_TRACKING_URI": "https://user:pa55word-xyz@mlflow.example.com",
            "MLFLOW_TRACKING_TOKEN": "token-abcdef",
            "DATABRICKS_TOKEN": "dapi-123456",
            "MLFLOW_TRACKING_PASSWORD": "abc",  # too short to scrub safely
        }
    )
    assert set(s.secrets) == {"pa55word-xyz", "token-abcdef", "dapi-123456"}
    assert list(s.secrets) == sorted(s.secrets, key=len, reverse=True)
    assert "token-abcdef" not in repr(s)
    assert settings().secrets == ()


def test_the_fingerprint_covers_every_variable_and_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import inspect_mlflow._config as config

    source = Path(config.__file__).read_text()
    named = set(re.findall(r'"((?:INSPECT_)?MLFLOW_[A-Z_]+|DATABRICKS_[A-Z_]+)"', source))
    assert named == set(config.VARIABLES)
    env = {"MLFLOW_TRACKING_URI": URI}
    first = config.fingerprint(env)
    assert config.fingerprint(dict(env)) == first
    for name in config.VARIABLES:
        assert config.fingerprint({**env, name: "changed"}) != first, name
    monkeypatch.chdir(tmp_path)  # a relative sqlite path depends on it
    assert config.fingerprint(env) != first


def test_settings_are_read_from_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", URI)
    monkeypatch.setenv("INSPECT_MLFLOW_TRACES", "off")
    assert load_settings().traces is False


# -- through a real eval --------------------------------------------------------------


def _run(tmp_path: Path, **extra_env: str) -> tuple[Any, list[Any] | None, BaseException | None]:
    """Run a small demo eval logging to a sqlite file in ``tmp_path``."""
    from e2e_support import new_experiment_name, run_logged

    from inspect_mlflow._commands.demo import demo_task

    experiment = new_experiment_name("settings")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    logs = err = None
    try:
        logs = run_logged(
            demo_task(3, name="settings_demo"),
            f"sqlite:///{tmp_path}/mlflow.db",
            experiment,
            log_dir=str(tmp_path / "logs"),
            extra_env=dict(extra_env),
        )
    except Exception as caught:
        err = caught
    finally:
        os.chdir(cwd)
    return experiment, logs, err


def _assert_nothing_ran_or_logged(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    assert not logs.exists() or not list(logs.iterdir()), "a sample ran (an .eval log exists)"
    assert not (tmp_path / "mlflow.db").exists(), "something was logged"
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.e2e
def test_a_bad_boolean_stops_the_eval_before_the_first_sample(tmp_path: Path) -> None:
    _, logs, err = _run(tmp_path, INSPECT_MLFLOW_TRACES="maybe")
    assert logs is None and err is not None
    message = str(err)
    assert "INSPECT_MLFLOW_TRACES='maybe' is not a boolean" in message
    assert "Traceback" not in message
    _assert_nothing_ran_or_logged(tmp_path)


@pytest.mark.e2e
def test_settings_read_before_a_run_do_not_stick_to_it(tmp_path: Path) -> None:
    """Inspect asks hooks whether they are enabled outside runs too (when a model is
    created, at an eval set's end): what the environment said then must not replace
    what it says when the next eval starts."""
    from e2e_support import env
    from inspect_ai.hooks._hooks import get_all_hooks

    from inspect_mlflow._inspect.hook import MlflowTrackingHook

    [hook] = [h for h in get_all_hooks() if isinstance(h, MlflowTrackingHook)]
    with env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/before.db", INSPECT_MLFLOW_TRACES=None):
        assert hook.enabled() is True
    _, logs, err = _run(tmp_path, INSPECT_MLFLOW_TRACES="maybe")
    assert logs is None and "INSPECT_MLFLOW_TRACES='maybe'" in str(err)
    _assert_nothing_ran_or_logged(tmp_path)
    assert not (tmp_path / "before.db").exists()


@pytest.mark.e2e
def test_an_invalid_mapping_stops_the_eval_with_file_line_col(tmp_path: Path) -> None:
    mapping = tmp_path / "mine.yaml"
    mapping.write_text(
        "version: 1\n"
        "extends: default\n"
        "rules:\n"
        "  task_start:\n"
        "    - run: task\n"
        "      params:\n"
        "        shout: upper(spec.task)\n"
    )
    _, logs, err = _run(tmp_path, INSPECT_MLFLOW_MAPPING=str(mapping))
    assert logs is None and err is not None
    message = str(err)
    assert "INSPECT_MLFLOW_MAPPING" in message
    assert re.search(rf"{re.escape(str(mapping))}:7:\d+: ", message), message
    assert "upper" in message
    _assert_nothing_ran_or_logged(tmp_path)


@pytest.mark.e2e
def test_a_missing_mapping_file_stops_the_eval(tmp_path: Path) -> None:
    _, logs, err = _run(tmp_path, INSPECT_MLFLOW_MAPPING=str(tmp_path / "gone.yaml"))
    assert logs is None and "INSPECT_MLFLOW_MAPPING" in str(err) and "no such file" in str(err)
    _assert_nothing_ran_or_logged(tmp_path)


def _readback(tmp_path: Path, experiment: str) -> tuple[Any, Any, list[Any]]:
    from mlflow import MlflowClient
    from mlflow.tracing.client import TracingClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    [run] = client.search_runs([exp.experiment_id], "attributes.run_name = 'settings_demo'")
    traces = TracingClient(uri).search_traces(locations=[exp.experiment_id], run_id=run.info.run_id)
    return client, run, traces


@pytest.mark.e2e
def test_with_artifacts_off_metrics_and_traces_still_land(tmp_path: Path) -> None:
    experiment, logs, err = _run(tmp_path, INSPECT_MLFLOW_LOG_ARTIFACTS="false")
    assert err is None and logs[0].status == "success"
    client, run, traces = _readback(tmp_path, experiment)
    assert client.list_artifacts(run.info.run_id) == []
    assert "mlflow.loggedArtifacts" not in run.data.tags
    assert run.data.metrics["total_samples"] == 3
    assert len(client.get_metric_history(run.info.run_id, "per_sample/match")) == 3
    assert run.data.params["task"] == "settings_demo"
    assert len(traces) == 3


@pytest.mark.e2e
def test_with_traces_off_no_trace_is_logged_but_the_rest_is(tmp_path: Path) -> None:
    experiment, logs, err = _run(tmp_path, INSPECT_MLFLOW_TRACES="Off")
    assert err is None and logs[0].status == "success"
    client, run, traces = _readback(tmp_path, experiment)
    assert traces == []
    paths = {a.path for a in client.list_artifacts(run.info.run_id, "inspect")}
    assert "inspect/samples.json" in paths
    assert run.data.metrics["total_samples"] == 3
