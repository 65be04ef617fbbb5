"""The team setup under load: evals in several processes at once into one shared MLflow.

`mlflow server` with two workers, backed by a real PostgreSQL and a real S3-compatible
store (SeaweedFS), as a team runs it (see docs/team-setup.md). Several
eval processes start at the same moment with the default delivery; afterwards the store
must hold exactly what each eval's own log says (runs, every metric point at its step,
table rows, traces, assessments), with no write refused, spooled or lost.

CI runs one size (4 processes of 60 samples); ``benchmarks/team_load.py`` runs larger ones.
"""

from __future__ import annotations

import pytest
from e2e_support import new_experiment_name
from team_server import (
    check_landed,
    error_responses,
    missing_parts,
    refused_lines,
    run_evals_at_once,
    start_team_server,
)

from inspect_mlflow._writer.spool import list_spool_files

pytestmark = [pytest.mark.e2e, pytest.mark.server]

PROCESSES = 4
SAMPLES = 60


@pytest.fixture(scope="module")
def team_server(tmp_path_factory: pytest.TempPathFactory):
    missing = missing_parts()
    if missing:
        pytest.skip("the team setup needs " + ", ".join(missing))
    server = start_team_server(tmp_path_factory.mktemp("team"), workers=2)
    try:
        yield server
    finally:
        server.stop()


def test_evals_at_once_into_postgres_and_s3_all_land_exactly_once(team_server, tmp_path):
    experiment = new_experiment_name("team")
    evals = run_evals_at_once(
        team_server.url, experiment, tmp_path, processes=PROCESSES, samples=SAMPLES
    )
    totals = check_landed(team_server.url, experiment, evals)
    assert totals["traces"] == PROCESSES * SAMPLES
    assert totals["assessments"] == PROCESSES * SAMPLES * 2, "two scorers per sample"
    assert refused_lines(evals) == []
    assert list_spool_files(tmp_path / "spool") == []
    assert error_responses(team_server.mlflow) == {}
    # The artifacts went through the server into the bucket, none to a local directory.
    stored = team_server.s3.objects()
    assert sum(key.endswith("inspect/samples.json") for key in stored) == PROCESSES
    assert not any((team_server.mlflow.root / "artifacts").iterdir())
