"""Secrets stay secret: planted credentials never reach MLflow, a spool file or a message.

Planted: model arguments ``api_key`` and ``openai_api_key``, a task argument
``password``, and the values of ``MLFLOW_TRACKING_TOKEN`` and ``MLFLOW_TRACKING_PASSWORD``,
which the eval's own data also echoes (a sample's input holds both, so they flow into
traces and tables). The writes are forced through the spool (a one-operation queue) and
replayed, so every place the package writes is covered: the store (database and artifact
files), the spool files, and everything logged or printed.

Then a real server with basic auth (``mlflow server --app-name basic-auth``): MLflow's
standard variables (``MLFLOW_TRACKING_USERNAME``/``PASSWORD``) are all an eval needs; with
a wrong password nothing is lost (it is spooled and replayed once the password is right)
and the wrong password is printed nowhere.
"""

from __future__ import annotations

import contextlib
import logging
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import env, new_experiment_name, run_logged
from faults_support import captured_logs, recorded_emits
from mlflow_server import start_mlflow_server

from inspect_mlflow._commands.cli import main
from inspect_mlflow._commands.demo import answer
from inspect_mlflow._delivery.pipeline import Pipeline
from inspect_mlflow._writer.spool import list_spool_files, read_spool

pytestmark = [pytest.mark.e2e]

API_KEY = "sk-planted-api-key-4f1c9e"
TASK_PASSWORD = "planted-task-password-77ab"
TOKEN = "planted-tracking-token-9d2e"
MLFLOW_PASSWORD = "planted-tracking-password-3c5a"
PLANTED = (API_KEY, TASK_PASSWORD, TOKEN, MLFLOW_PASSWORD)


def secret_task(password: str = "") -> Any:
    from inspect_ai import Task, task
    from inspect_ai.dataset import Sample
    from inspect_ai.scorer import match
    from inspect_ai.solver import generate, use_tools

    from inspect_mlflow._commands.demo import add_tool

    @task
    def login_check(password: str = "") -> Task:
        samples = [
            Sample(id=1, input="What is 1 + 2?", target="3"),
            Sample(
                id=2,
                input=f"What is 2 + 3? (token {TOKEN}, password {MLFLOW_PASSWORD})",
                target="5",
                metadata={"note": f"echo {TOKEN}"},
            ),
            Sample(id=3, input="What is 3 + 4?", target="7"),
        ]
        return Task(dataset=samples, solver=[use_tools(add_tool()), generate()], scorer=match())

    return login_check(password=password)


def files_containing(root: Path, needles: tuple[str, ...]) -> dict[str, list[str]]:
    """Files under ``root`` whose bytes contain any needle (which ones)."""
    found: dict[str, list[str]] = {}
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits = [n for n in needles if n.encode() in data]
            if hits:
                found[str(path)] = hits
    return found


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory, _sqlite_template: Path) -> dict[str, Any]:
    import shutil

    root = tmp_path_factory.mktemp("secrets")
    store = root / "store"
    store.mkdir()
    shutil.copyfile(_sqlite_template, store / "mlflow.db")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    spool_dir = root / "spool"
    experiment = new_experiment_name("secrets")
    with captured_logs() as logs, recorded_emits() as emitted:
        [log] = run_logged(
            secret_task(password=TASK_PASSWORD),
            uri,
            experiment,
            log_dir=str(root / "logs"),
            model="mockllm/model",
            # Inspect itself drops a model argument named exactly ``api_key`` from the log;
            # any other credential-like name reaches the hook.
            model_args={"custom_outputs": answer, "api_key": API_KEY, "openai_api_key": API_KEY},
            extra_env={
                "MLFLOW_TRACKING_TOKEN": TOKEN,
                "MLFLOW_TRACKING_PASSWORD": MLFLOW_PASSWORD,
                "INSPECT_MLFLOW_SPOOL_DIR": str(spool_dir),
                "INSPECT_MLFLOW_MAX_QUEUE_SIZE": "1",
                "INSPECT_MLFLOW_FLUSH_TIMEOUT": "5",
            },
        )
        spooled = {p.name: p.read_bytes() for p in list_spool_files(spool_dir)}
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in list_spool_files(spool_dir)}
        with env(MLFLOW_TRACKING_TOKEN=TOKEN, MLFLOW_TRACKING_PASSWORD=MLFLOW_PASSWORD):
            code = main(["replay", "--spool-dir", str(spool_dir)])
    return {
        "root": root,
        "store": store,
        "uri": uri,
        "experiment": experiment,
        "log": log,
        "logs": logs,
        "emitted": list(emitted),
        "spooled": spooled,
        "modes": modes,
        "replay_code": code,
    }


def test_the_secrets_were_really_in_the_eval(planted):
    spec = planted["log"].eval
    assert planted["log"].status == "success"
    assert spec.task_args.get("password") == TASK_PASSWORD
    assert spec.model_args.get("openai_api_key") == API_KEY
    assert planted["spooled"], "the one-operation queue sent the writes to the spool"
    assert planted["replay_code"] == 0


def test_no_secret_in_the_store(planted):
    assert files_containing(planted["store"], PLANTED) == {}


def test_no_secret_in_spool_files_and_they_are_private(planted):
    for name, data in planted["spooled"].items():
        assert [s for s in PLANTED if s.encode() in data] == [], name
        assert planted["modes"][name] == 0o600


def test_no_secret_in_any_message(planted, capsys):
    messages = [r.getMessage() for r in planted["logs"].records]
    assert not [m for m in messages if any(s in m for s in PLANTED)]
    out = capsys.readouterr()
    assert not any(s in out.out + out.err for s in PLANTED)


def test_the_data_around_the_secrets_still_landed_masked(planted):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=planted["uri"])
    exp = client.get_experiment_by_name(planted["experiment"])
    runs = client.search_runs([exp.experiment_id])
    eval_id = planted["log"].eval.eval_id  # the eval run's name starts with the task's too
    [task] = [r for r in runs if r.data.tags.get("inspect.eval_id") == eval_id]
    assert task.data.params.get("task_arg.password", "***") == "***"
    texts = [
        str(getattr(op, "inputs", "")) + str(getattr(op, "rows", "")) for op in planted["emitted"]
    ]
    assert any("token ***, password ***" in t for t in texts), "masked, not dropped"
    history = client.get_metric_history(task.info.run_id, "per_sample/match")
    assert len(history) == 3, "every sample's data landed"


# -- basic auth ---------------------------------------------------------------------------

ADMIN_PASSWORD = "Admin-pw-for-tests-8h2k"
WRONG_PASSWORD = "wrong-password-never-printed"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("flask_wtf", reason="the basic-auth app needs mlflow[auth]")
    root = tmp_path_factory.mktemp("auth")
    ini = root / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{root / 'auth.db'}\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # Without the cache every request pays a PBKDF2 hash check (about a second here).
        "auth_cache_ttl_seconds = 300\n"
    )
    server = start_mlflow_server(
        root / "server",
        app_name="basic-auth",
        extra_env={
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret-key",
        },
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.server
def test_basic_auth_with_mlflow_standard_variables(auth_server, tmp_path):
    from mlflow import MlflowClient

    experiment = new_experiment_name("auth")
    creds = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD}
    with recorded_emits() as emitted, captured_logs() as logs:
        [log] = run_logged(
            secret_task(),
            auth_server.url,
            experiment,
            log_dir=str(tmp_path / "logs"),
            extra_env={
                **creds,
                "INSPECT_MLFLOW_SPOOL_DIR": str(tmp_path / "spool"),
                "INSPECT_MLFLOW_FLUSH_TIMEOUT": "120",
            },
        )
    assert log.status == "success"
    spooled = [read_spool(p) for p in list_spool_files(tmp_path / "spool")]
    assert spooled == [], [s.header for s in spooled] + [logs.messages()]
    with env(**creds):
        client = MlflowClient(tracking_uri=auth_server.url)
        exp = client.get_experiment_by_name(experiment)
        runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2
    assert len([op for op in emitted if type(op).__name__ == "LogTrace"]) == 3


@pytest.mark.server
def test_a_wrong_password_loses_nothing_and_is_printed_nowhere(auth_server, tmp_path, capsys):
    from faults_support import assert_landed_exactly

    experiment = new_experiment_name("auth-wrong")
    spool_dir = tmp_path / "spool"
    wrong = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": WRONG_PASSWORD}
    with captured_logs() as logs, recorded_emits() as emitted:
        [log] = run_logged(
            secret_task(),
            auth_server.url,
            experiment,
            log_dir=str(tmp_path / "logs"),
            extra_env={**wrong, "INSPECT_MLFLOW_SPOOL_DIR": str(spool_dir)},
        )
    assert log.status == "success", "a tracking failure never fails the eval"
    [path] = list_spool_files(spool_dir)
    assert len(read_spool(path).ops) == len(emitted)
    warnings = logs.messages(logging.WARNING)
    assert any("UNAUTHENTICATED" in m or "401" in m for m in warnings), warnings
    assert any("inspect-mlflow replay" in m for m in warnings)
    assert not [r for r in logs.records if WRONG_PASSWORD in r.getMessage()]
    assert WRONG_PASSWORD.encode() not in path.read_bytes()
    out = capsys.readouterr()
    assert WRONG_PASSWORD not in out.out + out.err

    right = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD}
    with env(**right):
        assert main(["replay", "--spool-dir", str(spool_dir)]) == 0
        assert_landed_exactly(auth_server.url, experiment, emitted)


@pytest.mark.parametrize(
    "tag",
    [
        "!!python/object/apply:os.system ['touch {marker}']",
        "!!python/name:os.system",
        "!!python/object/new:subprocess.Popen [['touch', '{marker}']]",
    ],
)
def test_mappings_are_loaded_as_plain_data_never_objects(tmp_path, tag):
    from inspect_mlflow._mapping import MappingInvalid, load_mapping_text

    marker = tmp_path / "constructed"
    text = f"version: 1\nruns:\n  eval: {tag.format(marker=marker)}\n"
    with pytest.raises(MappingInvalid) as invalid:
        load_mapping_text(text, "evil.yaml")
    assert not marker.exists(), "nothing was constructed or run"
    assert any("is not allowed" in e.message and e.line == 3 for e in invalid.value.errors)


def test_the_scrubber_masks_values_anywhere_and_reuses_what_is_clean():
    from inspect_mlflow._delivery.secrets import Scrubber
    from inspect_mlflow._operations import LogParams, LogTrace, SpanData

    scrub = Scrubber([TOKEN, MLFLOW_PASSWORD])
    clean = LogParams("task:a", {"model": "m"})
    dirty = LogTrace(
        run="task:a",
        trace_key="k",
        name="n",
        start_time_ns=0,
        end_time_ns=1,
        inputs={"messages": [{"content": f"say {TOKEN}"}], TOKEN: 1},
        spans=(SpanData("s", None, "gen", "LLM", 0, 1, outputs=[MLFLOW_PASSWORD]),),
    )
    out_clean, out_dirty = scrub.ops([clean, dirty])
    assert out_clean is clean, "nothing to mask: the same object"
    assert out_dirty.inputs == {"messages": [{"content": "say ***"}], "***": 1}
    assert out_dirty.spans[0].outputs == ["***"]
    assert not Scrubber([]), "no secrets: falsy, skipped by the session"


def test_the_log_filter_masks_messages_arguments_and_tracebacks(caplog):
    from inspect_mlflow._delivery.secrets import Scrubber, ScrubFilter

    log = logging.getLogger("inspect_mlflow.test_scrub")
    scrub_filter = ScrubFilter(Scrubber([TOKEN]))
    attached = scrub_filter.attach()
    try:
        with caplog.at_level(logging.WARNING, logger="inspect_mlflow"):
            log.warning("token is %s", TOKEN)
            try:
                raise RuntimeError(f"failed with {TOKEN}")
            except RuntimeError:
                log.exception("boom")
    finally:
        scrub_filter.detach(attached)
    text = caplog.text
    assert TOKEN not in text
    assert "token is ***" in text and "failed with ***" in text


# -- the same scrubber on every path (issue 15) ------------------------------------------
#
# A mock model echoes ``os.environ["MLFLOW_TRACKING_TOKEN"]`` in its output and the input
# holds the token: the log on disk has it (Inspect does not mask it), and every path that
# turns that log, or a spool file, into writes or printed text must mask it.


def echo_token(input: list[Any], tools: Any, tool_choice: Any, config: Any) -> Any:
    """Mock model: answers with the tracking token of its environment (or the planted one)."""
    import os

    from inspect_ai.model import ModelOutput, ModelUsage

    token = os.environ.get("MLFLOW_TRACKING_TOKEN") or TOKEN
    output = ModelOutput.from_content(model="mockllm/model", content=f"5, and my token is {token}")
    output.usage = ModelUsage(input_tokens=10, output_tokens=5, total_tokens=15)
    return output


def echo_task() -> Any:
    from inspect_ai import Task
    from inspect_ai.dataset import Sample
    from inspect_ai.scorer import includes
    from inspect_ai.solver import generate

    samples = [
        Sample(id=1, input=f"What is 2 + 3? (my token is {TOKEN})", target="5"),
        Sample(id=2, input="What is 1 + 4?", target="5", metadata={"note": TOKEN}),
    ]
    return Task(name="echo_token", dataset=samples, solver=[generate()], scorer=includes())


@pytest.fixture(scope="module")
def token_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An eval log whose input, output and metadata hold the token (the hook was off)."""
    from inspect_ai import eval as inspect_eval

    log_dir = tmp_path_factory.mktemp("token-logs")
    off = {"MLFLOW_TRACKING_URI": None, "INSPECT_MLFLOW_TRACKING_URI": None}
    with env(**off, MLFLOW_TRACKING_TOKEN=TOKEN):
        [log] = inspect_eval(
            echo_task(),
            model="mockllm/model",
            model_args={"custom_outputs": echo_token},
            log_dir=str(log_dir),
            display="none",
        )
    assert log.status == "success"
    assert log.samples and TOKEN in log.samples[0].output.completion, "the model echoed it"
    return Path(log.location)


@contextlib.contextmanager
def through_the_pipeline() -> Iterator[list[tuple[bool, bool]]]:
    """Each batch the one shared :class:`Pipeline` scrubbed in this process while the
    block ran: (the token was in it, the token is in what it passed on).

    Calls through to the real scrub step: it only shows that a path's writes went
    through the chain of ``_delivery/pipeline.py`` and that the chain masked them.
    """
    seen: list[tuple[bool, bool]] = []
    original = Pipeline.scrub

    def scrub(self: Pipeline, ops: list[Any]) -> list[Any]:
        out = original(self, ops)
        seen.append((TOKEN in repr(ops), TOKEN in repr(out)))
        return out

    Pipeline.scrub = scrub  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        Pipeline.scrub = original  # type: ignore[method-assign]


def assert_the_pipeline_masked_the_token(seen: list[tuple[bool, bool]]) -> None:
    assert any(had for had, _ in seen), "the token reached the pipeline's scrub step"
    assert not any(kept for _, kept in seen), "the scrub step passed the token on"


def fresh_store(root: Path, template: Path) -> tuple[Path, str]:
    import shutil

    root.mkdir(parents=True)
    shutil.copyfile(template, root / "mlflow.db")
    return root, f"sqlite:///{root / 'mlflow.db'}"


def run_in(directory: Path, argv: list[str]) -> tuple[int, str]:
    """``main(argv)`` with the working directory (where sqlite puts artifacts) set."""
    import contextlib
    import io
    import os

    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = main(argv)
    finally:
        os.chdir(cwd)
    return code, out.getvalue()


def test_import_stores_no_token(token_log, tmp_path, _sqlite_template, capsys):
    from mlflow import MlflowClient

    store, uri = fresh_store(tmp_path / "store", _sqlite_template)
    experiment = new_experiment_name("secrets-import")
    with captured_logs() as logs, env(MLFLOW_TRACKING_TOKEN=TOKEN), through_the_pipeline() as seen:
        code, printed = run_in(
            store, ["import", str(token_log), "--tracking-uri", uri, "--experiment", experiment]
        )
    assert code == 0, printed
    assert_the_pipeline_masked_the_token(seen)
    assert "1 imported" in printed
    assert list((store / "mlruns").rglob("samples.json")), "the tables are in the store"
    assert files_containing(store, (TOKEN,)) == {}
    assert TOKEN not in printed + "".join(capsys.readouterr())
    assert not [r for r in logs.records if TOKEN in r.getMessage()]
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    [task] = [r for r in client.search_runs([exp.experiment_id]) if r.info.run_name == "echo_token"]
    assert len(client.get_metric_history(task.info.run_id, "per_sample/includes")) == 2, "landed"
    assert files_containing(store, ("my token is ***",)), "masked, not dropped"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_dry_run_prints_no_token(token_log, fmt, capsys):
    with env(MLFLOW_TRACKING_TOKEN=TOKEN), through_the_pipeline() as seen:
        main(["check", "--format", fmt, "--log", str(token_log)])
    assert_the_pipeline_masked_the_token(seen)
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err
    if fmt == "json":
        assert "***" in out.out, "the masked values are still shown"


def test_replay_of_a_spool_file_with_the_token_stores_none(tmp_path, _sqlite_template, capsys):
    """The eval ran without the token in its environment (nothing to mask then), with the
    server down: its spool file holds the token. A replay where the token is set masks it."""
    from mlflow import MlflowClient

    spool_dir = tmp_path / "spool"
    experiment = new_experiment_name("secrets-replay")
    [log] = run_logged(
        echo_task(),
        "http://127.0.0.1:9",  # nothing listens: every write goes to the spool
        experiment,
        log_dir=str(tmp_path / "logs"),
        model="mockllm/model",
        model_args={"custom_outputs": echo_token},
        extra_env={
            "MLFLOW_TRACKING_TOKEN": None,
            "INSPECT_MLFLOW_SPOOL_DIR": str(spool_dir),
            "INSPECT_MLFLOW_FLUSH_TIMEOUT": "3",
            "INSPECT_MLFLOW_DELIVERY": "thread",
        },
    )
    assert log.status == "success"
    files = list_spool_files(spool_dir)
    assert files and any(TOKEN.encode() in p.read_bytes() for p in files), "spooled as is"

    store, uri = fresh_store(tmp_path / "store", _sqlite_template)
    with env(MLFLOW_TRACKING_TOKEN=TOKEN), through_the_pipeline() as seen:
        code, printed = run_in(
            store, ["replay", "--spool-dir", str(spool_dir), "--tracking-uri", uri]
        )
    assert code == 0, printed
    assert_the_pipeline_masked_the_token(seen)
    assert list_spool_files(spool_dir) == []
    assert list((store / "mlruns").rglob("samples.json")), "the tables are in the store"
    assert files_containing(store, (TOKEN,)) == {}
    assert TOKEN not in printed + "".join(capsys.readouterr())
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert len(client.search_runs([exp.experiment_id])) == 2, "everything else landed"


@pytest.mark.parametrize("delivery", ["process", "thread"])
def test_live_logging_stores_no_echoed_token(delivery, tmp_path, _sqlite_template, capsys):
    """The same echo, logged live in both delivery modes (the chain the others now share)."""
    from mlflow import MlflowClient

    store, uri = fresh_store(tmp_path / "store", _sqlite_template)
    experiment = new_experiment_name(f"secrets-live-{delivery}")
    # Its artifacts in the store, whatever the working directory of a delivery process
    # an earlier test started.
    artifacts = store / "mlruns"
    MlflowClient(tracking_uri=uri).create_experiment(experiment, artifacts.as_uri())
    with captured_logs() as logs, recorded_emits() as emitted, through_the_pipeline() as seen:
        [log] = run_logged(
            echo_task(),
            uri,
            experiment,
            log_dir=str(tmp_path / "logs"),
            model="mockllm/model",
            model_args={"custom_outputs": echo_token},
            extra_env={
                "MLFLOW_TRACKING_TOKEN": TOKEN,
                "INSPECT_MLFLOW_DELIVERY": delivery,
                "INSPECT_MLFLOW_SPOOL_DIR": str(tmp_path / "spool"),
            },
        )
    assert log.status == "success"
    assert TOKEN in (log.samples or [])[0].output.completion
    if delivery == "thread":
        assert emitted, "the writes went through this process"
        assert_the_pipeline_masked_the_token(seen)
    else:  # the delivery process builds the same Session, hence the same Pipeline
        assert not seen, "the eval's process scrubbed nothing: the delivery process did"
    assert files_containing(store, (TOKEN,)) == {}
    assert files_containing(store, ("my token is ***",)), "masked, not dropped"
    assert list((store / "mlruns").rglob("samples.json")), "the tables are in the store"
    assert not [r for r in logs.records if TOKEN in r.getMessage()]
    assert TOKEN not in "".join(capsys.readouterr())
