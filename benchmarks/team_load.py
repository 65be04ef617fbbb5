"""The team setup under a larger load than CI runs: evals in several processes at once.

Starts PostgreSQL, SeaweedFS (S3) and `mlflow server` with several workers on 127.0.0.1
(see ``tests/support/team_server.py``), runs ``--processes`` evals of ``--samples`` samples at the
same moment with the default delivery, then checks the store against every eval's own log
(runs, metric points and their steps, table rows, traces, assessments) and prints what it
counted and how long it took. Exits non-zero when anything is missing, doubled or refused.

    python benchmarks/team_load.py                      # 6 processes x 300 samples
    python benchmarks/team_load.py --processes 3 --samples 50 --workers 4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "support"))  # the test suite's server helpers

from team_server import (  # noqa: E402
    check_landed,
    error_responses,
    missing_parts,
    refused_lines,
    run_evals_at_once,
    start_team_server,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=6)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--workers", type=int, default=4, help="mlflow server workers")
    args = parser.parse_args()
    missing = missing_parts()
    if missing:
        print("the team setup needs " + ", ".join(missing), file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="team-load-") as tmp:
        root = Path(tmp)
        started = time.monotonic()
        server = start_team_server(root, workers=args.workers)
        print(f"team server up in {time.monotonic() - started:.1f} s at {server.url}")
        try:
            began = time.monotonic()
            evals = run_evals_at_once(
                server.url, "team-load", root, processes=args.processes, samples=args.samples
            )
            took = time.monotonic() - began
            totals = check_landed(server.url, "team-load", evals)
            problems = refused_lines(evals)
            errors = error_responses(server.mlflow)
            spooled = list((root / "spool").glob("*")) if (root / "spool").exists() else []
        finally:
            server.stop()
    print(f"{args.processes} evals x {args.samples} samples at once: {took:.1f} s")
    print(", ".join(f"{key} {value}" for key, value in totals.items()), "- all exact")
    for line in problems:
        print("eval output:", line)
    for key, n in errors.items():
        print("server error:", key, n)
    if spooled:
        print("spool files left:", [p.name for p in spooled])
    return 1 if problems or errors or spooled else 0


if __name__ == "__main__":
    raise SystemExit(main())
